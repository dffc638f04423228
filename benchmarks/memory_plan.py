"""GPU memory of the paper's pipeline under the registry's budget, on the meta device.

    python benchmarks/memory_plan.py [--budget-gb 22] [--policy offload]

Builds the real-size architectures on the meta device from their configs, written here or
in benchmarks/gpu_repaint.py (no download, no memory): SAM vit_h (fp32, as the backend keeps
it), the SDXL inpainting UNet, the SDXL refiner UNet, both text encoders and the VAE, LLaVA-
1.5-7B, OWL-ViT B/32 and CLIP ViT-B/32, in fp16. Their weights are counted the way the
registry counts them (models/lifecycle.py: weight_bytes, a shared module once).

Activation estimate: each stage's forward passes are run on meta tensors at the paper's
settings while a TorchDispatchMode keeps the bytes of every live tensor the ops create (a
storage counts until its last tensor is gone, views count once) and records the peak. Meta
kernels give exact shapes, so this is the peak of live tensors a stage's ops create; it
leaves out the allocator's fragmentation and cuBLAS/cuDNN workspaces, which the margin to
24 GB covers. Attention takes the meta kernel of scaled_dot_product_attention (no T x T
matrix, as flash / memory-efficient attention on a GPU); segment-anything writes its
attention out, so SAM's T x T matrices are counted.
- segment: SAM's image encoder + prompt encoder + mask decoder, batch 4, 1024 px;
- repaint: text encoders, the base UNet at batch 2 x 4 (classifier-free guidance) on
  128 x 128 latents, the refiner UNet likewise, and the VAE decode in fp32 (SDXL's VAE is
  upcast: its fp32 weights are counted with the activations) of 1 image (vae slicing) or
  of the batch of 4 (no slicing, the row marked so);
- caption: LLaVA's vision tower on 8 images (336 px) and the language model's prefill of the
  whole final length (576 image tokens + 64 prompt + 60 new tokens) with its KV cache: an
  upper bound on every decoding step;
- filter: OWL-ViT on 8 images (768 px) with 5 queries each, CLIP on 32 crops (224 px).

The plan: the models go through the registry's own Lifecycle (models/lifecycle.py) with the
budget, each stage holding its model(s) with the measured activation peak as its working
reserve, for two compositions in a row (the second shows the steady state). Per stage: the
models on the device, the weights resident, the activation peak, weights + activations,
against the 22 GiB goal and a 24 GB card (22.35 GiB).
"""

from __future__ import annotations

import argparse
import os
import sys
import weakref
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# benchmarks/smoke.py (make benchmark-smoke): the smallest mode, and the line with the figure
SMOKE = []
HEADLINE = r"^Worst stage: "

GiB = 1024**3
CARD = 24e9 / GiB  # a "24 GB" card in GiB

LLAVA = dict(  # llava-hf/llava-1.5-7b-hf config.json
    vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu"),
    text=dict(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
              num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5),
    image_token_index=32000,
)


class LivePeak:
    """Peak bytes of live tensors created by the ops run inside (meta or any device)."""

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        outer = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                outer._track(out)
                return out

        self.mode = Mode()
        self.refs: dict[int, int] = {}  # storage -> live tensors using it
        self.sizes: dict[int, int] = {}
        self.now = self.peak = 0

    def _track(self, out):
        import torch
        from torch.utils._pytree import tree_flatten

        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            key = t.untyped_storage()._cdata
            if key not in self.refs:
                self.refs[key] = 0
                self.sizes[key] = t.untyped_storage().nbytes()
                self.now += self.sizes[key]
                self.peak = max(self.peak, self.now)
            self.refs[key] += 1
            weakref.finalize(t, self._gone, key)

    def _gone(self, key):
        self.refs[key] -= 1
        if self.refs[key] == 0:
            del self.refs[key]
            self.now -= self.sizes.pop(key)

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)


def measure(fn) -> int:
    import torch

    with torch.inference_mode(), torch.device("meta"), LivePeak() as live:
        fn()
    return live.peak


# --------------------------------------------------------------------------- models


def build(fp16):
    """Every model of the paper's settings on the meta device: name -> list of modules."""
    import open_clip
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, OwlViTConfig
    from transformers import OwlViTForObjectDetection

    from benchmarks.gpu_repaint import REAL, build_parts
    from gen4gen.models.segment.sam import build_sam

    sdxl = build_parts(REAL, "meta", fp16)
    with torch.device("meta"):
        sam = build_sam("vit_h").eval()  # fp32: the backend keeps SAM's weights fp32
        llava = LlavaForConditionalGeneration(LlavaConfig(
            vision_config=CLIPVisionConfig(**LLAVA["vision"]), text_config=LlamaConfig(**LLAVA["text"]),
            image_token_id=LLAVA["image_token_index"], vision_feature_layer=-2,
            vision_feature_select_strategy="default", projector_hidden_act="gelu")).to(fp16).eval()
        owl = OwlViTForObjectDetection(OwlViTConfig()).to(fp16).eval()  # defaults: owlvit-base-patch32
        clip = open_clip.create_model("ViT-B-32", pretrained=None, device="meta", precision="fp16").eval()
    return {"sam": sam, "sdxl": sdxl, "llava": llava, "owl": owl, "clip": clip}


def activations(m, fp16, slicing: bool = True) -> dict[str, int]:
    """Measured activation peak of each stage (bytes)."""
    import torch

    sam, p = m["sam"], m["sdxl"]
    b = 4

    def segment():
        # fp32 throughout (the GPU backend runs it under fp16 autocast: half this, so conservative)
        emb = sam.image_encoder(torch.randn(b, 3, 1024, 1024))
        sparse, dense = sam.prompt_encoder(points=None, boxes=torch.randn(1, 4), masks=None)
        for i in range(b):
            sam.mask_decoder(image_embeddings=emb[i : i + 1], image_pe=sam.prompt_encoder.get_dense_pe(),
                             sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                             multimask_output=True)

    def repaint(vae_batch: int):
        def run():
            ids = torch.zeros(2 * b, 77, dtype=torch.long)
            te1 = p["text_encoder"](ids, output_hidden_states=True).hidden_states[-2]
            te2_out = p["text_encoder_2"](ids, output_hidden_states=True)
            ctx = torch.cat([te1, te2_out.hidden_states[-2]], dim=-1)
            pooled = te2_out.text_embeds
            del te1, te2_out
            lat = torch.randn(2 * b, 9, 128, 128, dtype=fp16)
            t = torch.tensor([500] * (2 * b))
            out = p["unet"](lat, t, encoder_hidden_states=ctx,
                            added_cond_kwargs={"text_embeds": pooled, "time_ids": torch.randn(2 * b, 6, dtype=fp16)})
            del out, lat
            ctx2 = ctx[..., -1280:].contiguous()
            out = p["refiner_unet"](torch.randn(2 * b, 4, 128, 128, dtype=fp16), t, encoder_hidden_states=ctx2,
                                    added_cond_kwargs={"text_embeds": pooled,
                                                       "time_ids": torch.randn(2 * b, 5, dtype=fp16)})
            del out, ctx, ctx2
            vae32 = _fp32_copy(p["vae"])  # upcast: fp32 weights live during the decode
            latents = torch.randn(b, 4, 128, 128)
            for i in range(0, b, vae_batch):
                vae32.decode(latents[i : i + vae_batch])
        return run

    def caption():
        lm = m["llava"]
        n, length = 8, 576 + 64 + 60
        pixels = torch.randn(n, 3, 336, 336, dtype=fp16)
        feats = lm.model.vision_tower(pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        image = lm.model.multi_modal_projector(feats)
        del feats
        embeds = torch.cat([image, torch.randn(n, length - 576, 4096, dtype=fp16)], dim=1)
        del image
        from transformers import DynamicCache

        out = lm.model.language_model(inputs_embeds=embeds, past_key_values=DynamicCache(), use_cache=True)
        lm.lm_head(out.last_hidden_state[:, -1:]).float()

    def filter_():
        owl, clip = m["owl"], m["clip"]
        ids = torch.zeros(8 * 5, 16, dtype=torch.long)
        # no attention mask: an all-ones mask would be checked with .item(), which meta cannot do
        owl(input_ids=ids, pixel_values=torch.randn(8, 3, 768, 768, dtype=fp16))
        clip.encode_image(torch.randn(32, 3, 224, 224, dtype=fp16))

    return {"segment": measure(segment), "repaint": measure(repaint(1)),
            "repaint (no vae slicing)": measure(repaint(b)), "caption": measure(caption),
            "filter": measure(filter_)}


def _fp32_copy(vae):
    import copy

    import torch

    with torch.device("meta"):
        return copy.deepcopy(vae).float()


# --------------------------------------------------------------------------- plan


class Meta:
    """A loaded model as the registry sees it: its parts (meta modules) and working reserve."""

    device = "meta"

    def __init__(self, parts, working):
        self.parts, self.working = parts, working

    def memory_parts(self):
        return self.parts

    def working_bytes(self):
        return self.working


def plan(models, acts, budget_gb: float, policy: str):
    from gen4gen.models import lifecycle

    class Plan(lifecycle.Lifecycle):
        def _move(self, e, device):  # meta tensors cannot move; the accounting is the point
            pass

    life = Plan()
    life.log = lambda msg, level: events.append(msg)
    life.configure(gpu_memory_gb=budget_gb, device="meta", policy=policy, wait_seconds=0)
    events: list[str] = []
    p = models["sdxl"]
    stages = {
        "segment": [("segment", "sam", [models["sam"]], acts["segment"])],
        "repaint": [("repaint", "sdxl", [p["unet"], p["refiner_unet"], p["text_encoder"], p["text_encoder_2"],
                                         p["vae"]], acts["repaint"])],
        "caption": [("caption", "llava", [models["llava"]], acts["caption"])],
        "filter": [("vision", "owlvit", [models["owl"]], acts["filter"]), ("vision", "clip", [models["clip"]], 0)],
    }
    rows = []
    for composition in (1, 2):
        for stage, uses in stages.items():
            held = []
            for family, backend, parts, working in uses:
                key = (family, backend, "{}")
                life.acquire(key, lambda parts=parts, working=working: Meta(parts, working), hold=True)
                held.append(key)
            on = [f"{r.backend}" for r in life.resident() if life.entries[(r.family, r.backend, r.options)].on_device]
            weights = sum(life.entries[k].resident_bytes() for k in life.entries)
            act = sum(life.entries[k].working() for k in held)
            rows.append((composition, stage, ", ".join(on), weights, act, weights + act, list(events)))
            events.clear()
            for key in held:
                life.release_hold(key)
    return rows


def main(argv=None) -> int:
    import torch

    from gen4gen.models.lifecycle import weight_bytes

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget-gb", type=float, default=22.0, help="run.gpu_memory_gb (GiB)")
    ap.add_argument("--policy", default="offload", choices=["offload", "release"])
    args = ap.parse_args(argv)
    fp16 = torch.float16
    models = build(fp16)
    p = models["sdxl"]
    sizes = {
        "SAM vit_h (fp32)": [models["sam"]], "SDXL-inpaint UNet": [p["unet"]], "refiner UNet": [p["refiner_unet"]],
        "text encoders": [p["text_encoder"], p["text_encoder_2"]], "VAE": [p["vae"]],
        "LLaVA-1.5-7B": [models["llava"]], "OWL-ViT B/32": [models["owl"]], "CLIP B/32": [models["clip"]],
    }
    print("Weights (meta device, real configs, fp16 unless noted):")
    total = 0
    for name, mods in sizes.items():
        n = weight_bytes(mods)
        total += n
        print(f"  {name:<20} {n / 1e9:6.2f} GB  {n / GiB:6.2f} GiB")
    print(f"  {'all at once':<20} {total / 1e9:6.2f} GB  {total / GiB:6.2f} GiB  (no lifecycle: over a 24 GB card)")

    acts = activations(models, fp16)
    print("\nActivation peak per stage (live tensors of the stage's forward passes on meta):")
    for name, n in acts.items():
        print(f"  {name:<26} {n / GiB:6.2f} GiB")

    rows = plan(models, acts, args.budget_gb, args.policy)
    print(f"\nPlan: budget {args.budget_gb:g} GiB, policy {args.policy}; two compositions in a row "
          f"(goal: every stage under 22 GiB; a 24 GB card has {CARD:.2f} GiB)")
    print(f"  {'#':<2} {'stage':<8} {'weights':>8} {'activ.':>7} {'peak':>7}  {'ok':<3} on the device")
    worst = 0.0
    for comp, stage, on, w, a, peak, events in rows:
        worst = max(worst, peak / GiB)
        ok = "yes" if peak / GiB < 22 else "NO"
        print(f"  {comp:<2} {stage:<8} {w / GiB:7.2f}G {a / GiB:6.2f}G {peak / GiB:6.2f}G  {ok:<3} {on}")
        for e in events:
            print(f"       - {e}")
    print(f"\nWorst stage: {worst:.2f} GiB (goal 22 GiB, card {CARD:.2f} GiB): "
          + ("every stage fits" if worst < 22 else "OVER"))
    return 0 if worst < 22 else 1


if __name__ == "__main__":
    raise SystemExit(main())
