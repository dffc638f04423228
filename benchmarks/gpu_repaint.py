"""Repaint throughput: SDXL inpainting + refiner, batched, against a per-image loop.

    python benchmarks/gpu_repaint.py                 # real sizes, needs a CUDA GPU
    python benchmarks/gpu_repaint.py --tiny          # tiny models on the CPU, seconds

On a GPU the full run (4 batch sizes, eager and compiled) takes several minutes, most of it
compiling; `--no-compile` or `--batches 1,8` for a shorter one.

Real mode builds the real-size SDXL inpainting UNet (9 channels), the SDXL refiner UNet,
the SDXL VAE and both text encoders from configs written below (no download; random
weights, so the same FLOPs as the released models), in fp16 at 1024x1024 with the paper's
steps (60), strength (0.9), guidance (6.0) and refiner split (0.75). Text goes through a
real CLIP tokenizer built offline (tests/tiny/tokenizer.py).

Rows, each measured warm (one untimed run first):
- loop: one image at a time through base then refiner, as the reference script does;
- batch B: `DiffusionRepainter.generate` (the factory's repaint path) on B images per
  pipeline call, for B in --batches;
- compiled batch B (CUDA, unless --no-compile): the same with both UNets under
  torch.compile (its compile time is printed apart, not counted in the rate).
Each row: images/s, seconds per image, speed-up over the loop, peak GPU memory (goal: the
paper's settings, batch 1, within 24 GB) and the share of the FLOP floor reached.

FLOP floor: FLOPs per image counted with torch's FlopCounterMode on the meta device (no
memory, no GPU): text encoders, the base UNet per call (x2 for classifier-free guidance)
times its calls, the refiner likewise, VAE encodes (image and masked image) and the final
decode. The UNet calls per image are the pipelines' own schedule, checked against a count
of the calls made during the run. Divided by --peak-tflops (989: H100/H200 dense fp16) it
is the fastest any implementation could go.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# benchmarks/smoke.py (make benchmark-smoke): the smallest mode, and the line with the figure
SMOKE = ["--tiny", "--batches", "1,2", "--loop-images", "1", "--steps", "2", "--no-compile", "--threads", "1"]
HEADLINE = r"GFLOP/s achieved|peak .* GiB, (fits|does NOT fit)"

# --------------------------------------------------------------------------- configs

REAL = {
    # diffusers/stable-diffusion-xl-1.0-inpainting-0.1 unet/config.json (2.57 B parameters)
    "unet": dict(sample_size=128, in_channels=9, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280),
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                 attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10),
                 cross_attention_dim=2048, use_linear_projection=True, addition_embed_type="text_time",
                 addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816),
    # stabilityai/stable-diffusion-xl-refiner-1.0 unet/config.json (2.3 B parameters)
    "refiner_unet": dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
                         block_out_channels=(384, 768, 1536, 1536),
                         down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                         attention_head_dim=(6, 12, 24, 24), transformer_layers_per_block=4,
                         cross_attention_dim=1280, use_linear_projection=True, addition_embed_type="text_time",
                         addition_time_embed_dim=256, projection_class_embeddings_input_dim=2560),
    # the SDXL VAE
    "vae": dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32, sample_size=1024,
                scaling_factor=0.13025, force_upcast=True),
    # CLIP ViT-L/14 text tower and OpenCLIP ViT-bigG/14 text tower
    "text_encoder": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                         hidden_act="quick_gelu", projection_dim=768),
    "text_encoder_2": dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                           hidden_act="gelu", projection_dim=1280),
}

TINY = {
    "unet": dict(sample_size=8, in_channels=9, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                 transformer_layers_per_block=(1, 2), cross_attention_dim=64, use_linear_projection=True,
                 addition_embed_type="text_time", addition_time_embed_dim=8,
                 projection_class_embeddings_input_dim=6 * 8 + 32, norm_num_groups=16),
    "refiner_unet": dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
                         down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                         up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                         transformer_layers_per_block=(1, 2), cross_attention_dim=32, use_linear_projection=True,
                         addition_embed_type="text_time", addition_time_embed_dim=8,
                         projection_class_embeddings_input_dim=5 * 8 + 32, norm_num_groups=16),
    "vae": dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
                block_out_channels=(16, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=8, sample_size=64,
                scaling_factor=0.13025, force_upcast=True),
    "text_encoder": dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                         projection_dim=32),
    "text_encoder_2": dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                           projection_dim=32),
}

TEXT_COMMON = dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                   pad_token_id=49407)


def build_parts(cfg: dict, device, dtype):
    """UNets, VAE, text encoders from configs, initialised directly on `device` (fast on a
    GPU: no 20 GB of fp32 weights through host memory), then cast to `dtype`."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    parts = {}
    torch.manual_seed(0)
    builders = dict(
        unet=lambda: UNet2DConditionModel(**cfg["unet"]),
        refiner_unet=lambda: UNet2DConditionModel(**cfg["refiner_unet"]),
        vae=lambda: AutoencoderKL(**cfg["vae"]),
        text_encoder=lambda: CLIPTextModel(CLIPTextConfig(**TEXT_COMMON, **cfg["text_encoder"])),
        text_encoder_2=lambda: CLIPTextModelWithProjection(CLIPTextConfig(**TEXT_COMMON, **cfg["text_encoder_2"])),
    )
    for name, build in builders.items():
        with torch.device(device):
            module = build()
        # One at a time: only one model is ever in fp32 on the device.
        parts[name] = module.to(dtype).eval().requires_grad_(False)
    return parts


def pipelines(parts: dict, tokenizer):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLInpaintPipeline

    # The released SDXL scheduler settings.
    sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                   steps_offset=1, timestep_spacing="leading")
    base = StableDiffusionXLInpaintPipeline(
        vae=parts["vae"], text_encoder=parts["text_encoder"], text_encoder_2=parts["text_encoder_2"],
        tokenizer=tokenizer, tokenizer_2=tokenizer, unet=parts["unet"], scheduler=sched, add_watermarker=False)
    refiner = StableDiffusionXLInpaintPipeline(
        vae=parts["vae"], text_encoder=None, text_encoder_2=parts["text_encoder_2"], tokenizer=None,
        tokenizer_2=tokenizer, unet=parts["refiner_unet"], scheduler=copy.deepcopy(sched),
        requires_aesthetics_score=True, force_zeros_for_empty_prompt=False, add_watermarker=False)
    return base, refiner


# --------------------------------------------------------------------------- FLOPs


def unet_calls(base, refiner, steps: int, strength: float, split: float) -> tuple[int, int]:
    """UNet calls per image in the base and the refiner, from the pipelines' own schedule."""
    base.scheduler.set_timesteps(steps)
    ts, _ = base.get_timesteps(steps, strength, "cpu", denoising_start=None)
    cutoff = int(round(base.scheduler.config.num_train_timesteps * (1 - split)))
    n_base = int((ts >= cutoff).sum())
    refiner.scheduler.set_timesteps(steps)
    rts, _ = refiner.get_timesteps(steps, strength, "cpu", denoising_start=split)
    return n_base, len(rts)


def flops_per_image(cfg: dict, size: int, calls: tuple[int, int]) -> dict[str, float]:
    """FLOPs of one image's repaint, counted on the meta device (no memory used)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    parts = build_parts(cfg, "meta", torch.float32)
    lat = size // 8
    te1, te2 = cfg["text_encoder"]["hidden_size"], cfg["text_encoder_2"]["hidden_size"]

    def count(fn) -> float:
        with FlopCounterMode(display=False) as fc:
            fn()
        return float(fc.get_total_flops())

    with torch.device("meta"):
        ids = torch.zeros(2, 77, dtype=torch.long)  # prompt and negative prompt
        unet_in = dict(encoder_hidden_states=torch.randn(2, 77, te1 + te2),
                       added_cond_kwargs={"text_embeds": torch.randn(2, te2), "time_ids": torch.randn(2, 6)})
        ref_in = dict(encoder_hidden_states=torch.randn(2, 77, te2),
                      added_cond_kwargs={"text_embeds": torch.randn(2, te2), "time_ids": torch.randn(2, 5)})
        t = torch.tensor([500, 500])
        out = {
            "text": count(lambda: (parts["text_encoder"](ids), parts["text_encoder_2"](ids))) * 2,  # base + refiner
            "base unet": count(lambda: parts["unet"](torch.randn(2, 9, lat, lat), t, **unet_in)) * calls[0],
            "refiner unet": count(lambda: parts["refiner_unet"](torch.randn(2, 4, lat, lat), t, **ref_in)) * calls[1],
            "vae encode": count(lambda: parts["vae"].encode(torch.randn(1, 3, size, size))) * 2,  # image, masked image
            "vae decode": count(lambda: parts["vae"].decode(torch.randn(1, 4, lat, lat))),
        }
    out["total"] = sum(out.values())
    return out


# --------------------------------------------------------------------------- runs


def inputs(n: int, canvas: int, repainter):
    """n composites (objects on black) with masks, scenes, seeds, boxes; their start images."""
    import numpy as np

    rng = np.random.default_rng(0)
    scenes = ["in a garden", "in a living room", "on a city street", "on the beach"]
    items = []
    for i in range(n):
        comp = np.zeros((canvas, canvas, 3), np.uint8)
        mask = np.zeros((canvas, canvas), np.float32)
        s = canvas // 4
        boxes = [(canvas // 8, canvas // 2, s, s), (canvas // 2, canvas // 2 - s // 2, s, 3 * s // 2)]
        for x, y, w, h in boxes:
            comp[y : y + h, x : x + w] = rng.integers(0, 256, 3, dtype=np.uint8)
            mask[y : y + h, x : x + w] = 1.0
        items.append((comp, mask, scenes[i % len(scenes)], 1000 + i, boxes))
    start = time.perf_counter()
    inits = [repainter.start_image(c, m, s, sd, b) for c, m, s, sd, b in items]
    prep = (time.perf_counter() - start) / n
    return items, inits, prep


def loop(repainter, items, inits):
    """The reference script's way: one image at a time, base then refiner."""
    import numpy as np

    out = []
    for (comp, mask, scene, seed, boxes), init in zip(items, inits):
        out.append(repainter.generate([init], [mask], [scene], [seed])[0])  # batch of one
    return np.stack(out)


def batched(repainter, items, inits, b: int):
    out = []
    for start in range(0, len(items), b):
        chunk = items[start : start + b]
        out += repainter.generate(inits[start : start + b], [m for _, m, _, _, _ in chunk],
                                  [s for _, _, s, _, _ in chunk], [sd for _, _, _, sd, _ in chunk])
    return out


def timed(fn, cuda: bool, repeats: int) -> tuple[float, float]:
    """(best seconds of `repeats` warm runs, peak GPU GiB). On CUDA one untimed run first
    (kernel selection and allocator growth per batch shape); the CPU run is warmed once
    for all rows by the call-counting run."""
    import torch

    if cuda:
        fn()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return best, peak


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny models on the CPU (a few steps, seconds)")
    p.add_argument("--batches", default="1,2,4,8")
    p.add_argument("--steps", type=int, help="default 60 (the paper), 4 with --tiny")
    p.add_argument("--strength", type=float, default=0.9)
    p.add_argument("--guidance", type=float, default=6.0)
    p.add_argument("--split", type=float, default=0.75, help="refiner denoising_start")
    p.add_argument("--size", type=int, help="default 1024 (the paper), 64 with --tiny")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--loop-images", type=int, default=4, help="images through the per-image loop")
    p.add_argument("--compile", dest="compile", action="store_true", default=None)
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend; 'eager' checks the wiring without compiling kernels")
    p.add_argument("--threads", type=int, help="torch CPU threads (1 is steadiest on a busy machine)")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense fp16 peak of the GPU (H100/H200: 989)")
    return p


def measure(argv=None) -> dict:
    """Build, count, time: the figures main() prints, as data (benchmarks/gpu_suite.py calls
    this). Raises SystemExit(2) without CUDA unless --tiny."""
    args = parser().parse_args(argv)

    import torch
    from diffusers.utils import logging as diffusers_logging

    from gen4gen.models.repaint.diffusion_repaint import DiffusionRepainter
    from tests.tiny.tokenizer import clip_tokenizer

    diffusers_logging.set_verbosity_error()  # a dtype notice per VAE call drowns the table
    if args.threads:
        torch.set_num_threads(args.threads)

    cuda = torch.cuda.is_available() and not args.tiny
    if not args.tiny and not cuda:
        print("no CUDA device: the real-size benchmark needs a GPU; run with --tiny on a CPU", file=sys.stderr)
        raise SystemExit(2)
    device, dtype = ("cuda", torch.float16) if cuda else ("cpu", torch.float32)
    cfg = TINY if args.tiny else REAL
    steps = args.steps or (4 if args.tiny else 60)
    size = args.size or (64 if args.tiny else 1024)
    batches = [int(b) for b in args.batches.split(",")]
    do_compile = cuda if args.compile is None else args.compile

    tok = clip_tokenizer(Path(tempfile.mkdtemp()) / "tokenizer")
    t0 = time.perf_counter()
    parts = build_parts(cfg, device, dtype)
    base, refiner = pipelines(parts, tok)
    for pipe in (base, refiner):
        pipe.set_progress_bar_config(disable=True)
    params = {k: sum(p.numel() for p in m.parameters()) / 1e9 for k, m in parts.items()}
    print(f"built on {device} ({dtype}) in {time.perf_counter() - t0:.1f}s; parameters (B): "
          + ", ".join(f"{k} {v:.3f}" for k, v in params.items()))

    opts = dict(size=size, steps=steps, strength=args.strength, guidance=args.guidance, refiner_start=args.split,
                device=device)
    rep = DiffusionRepainter.from_pipelines("sdxl", base, refiner, **opts)
    n = max(batches)
    items, inits, prep = inputs(n, size, rep)

    calls = unet_calls(base, refiner, steps, args.strength, args.split)
    counted = [0, 0]
    hooks = [m.register_forward_pre_hook(lambda *_, i=i: counted.__setitem__(i, counted[i] + 1))
             for i, m in enumerate((parts["unet"], parts["refiner_unet"]))]
    rep.generate(inits[:1], [items[0][1]], [items[0][2]], [items[0][3]])
    for h in hooks:
        h.remove()
    print(f"UNet calls per image: base {calls[0]}, refiner {calls[1]} (pipeline schedule); "
          f"counted in a run: base {counted[0]}, refiner {counted[1]}")

    flops = flops_per_image(cfg, size, calls)
    unit, scale = ("T", 1e12) if flops["total"] > 1e12 else ("G", 1e9)
    print("FLOPs per image: " + ", ".join(f"{k} {v / scale:.3f} {unit}" for k, v in flops.items()))
    floor = flops["total"] / (args.peak_tflops * 1e12)
    if cuda:
        print(f"FLOP floor at {args.peak_tflops:.0f} TFLOP/s: {floor:.3f} s/image = {1 / floor:.2f} images/s")
    if args.tiny:
        real_calls = unet_calls(base, refiner, 60, 0.9, 0.75)
        real = flops_per_image(REAL, 1024, real_calls)
        print(f"Real size, paper settings (1024 px, 60 steps, strength 0.9, split 0.75; UNet calls {real_calls}): "
              f"{real['total'] / 1e12:.1f} TFLOP per image -> floor {real['total'] / 989e12:.3f} s/image at 989 TFLOP/s "
              f"(H100/H200 fp16 dense), {real['total'] / 165e12:.2f} s/image at 165 TFLOP/s (RTX 4090)")
    print(f"start images (offline scene, CPU): {prep * 1000:.0f} ms per image, not in the rates below")

    rows = []
    k = min(args.loop_images, n)
    secs, peak = timed(lambda: loop(rep, items[:k], inits[:k]), cuda, args.repeats)
    rows.append(("loop (reference: one image at a time)", k, secs, peak))
    for b in batches:
        r = DiffusionRepainter.from_pipelines("sdxl", base, refiner, **{**opts, "batch_size": b})
        secs, peak = timed(lambda: batched(r, items[:b], inits[:b], b), cuda, args.repeats)
        rows.append((f"batch {b}", b, secs, peak))
    if do_compile:
        eager = (base.unet, refiner.unet)
        base.unet = torch.compile(eager[0], backend=args.compile_backend)
        refiner.unet = torch.compile(eager[1], backend=args.compile_backend)
        for b in batches:
            r = DiffusionRepainter.from_pipelines("sdxl", base, refiner, **{**opts, "batch_size": b})
            start = time.perf_counter()
            batched(r, items[:b], inits[:b], b)  # compiles for this batch size
            compile_s = time.perf_counter() - start
            secs, peak = timed(lambda: batched(r, items[:b], inits[:b], b), cuda, args.repeats)
            rows.append((f"compiled batch {b} (first run {compile_s:.0f}s)", b, secs, peak))
        base.unet, refiner.unet = eager
    return dict(rows=rows, cuda=cuda, floor=floor, flops=flops, size=size, steps=steps, device=device,
                calls=calls, counted=tuple(counted))


def main(argv=None) -> int:
    try:
        r = measure(argv)
    except SystemExit as e:
        return int(e.code or 0)
    rows, cuda, floor, flops, size = r["rows"], r["cuda"], r["floor"], r["flops"], r["size"]
    loop_rate = rows[0][1] / rows[0][2]
    print()
    print(f"{'mode':44s} {'images/s':>9s} {'s/image':>8s} {'vs loop':>8s} {'peak GiB':>9s} {'% floor':>8s}")
    for name, count, secs, peak in rows:
        rate = count / secs
        share = f"{100 * floor * rate:7.1f}%" if cuda else f"{'-':>8s}"
        print(f"{name:44s} {rate:9.3f} {secs / count:8.3f} {rate / loop_rate:7.2f}x {peak:9.2f} {share}")
    if not cuda:
        achieved = max(c / s for _, c, s, _ in rows) * flops["total"] / 1e9
        print(f"\nCPU, tiny models: best {achieved:.2f} GFLOP/s achieved; "
              "no GPU figures (run without --tiny on a CUDA machine).")
        print("not run here: SDXL + refiner at real size on a GPU (no CUDA, or --tiny)")
    elif rows:
        fits = [r for r in rows if r[1] == 1 and r[0].startswith("batch")]
        if fits:
            verdict = "fits" if fits[0][3] <= 24 else "does NOT fit"
            print(f"\npaper's settings (batch 1, {size}px): peak {fits[0][3]:.1f} GiB, {verdict} in 24 GB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
