"""A personalised Stable Diffusion pipeline: base model + a Custom Diffusion checkpoint.

The base model (hub id at a revision, or a local folder) loads with diffusers'
`StableDiffusionPipeline.from_pretrained`; the checkpoint adds its cross-attention k/v
weights (`pytorch_custom_diffusion_weights.safetensors`) and one textual-inversion
embedding per concept token (`pipe.load_textual_inversion(file, token=...)`).

Why the k/v weights are not installed with `pipe.unet.load_attn_procs(folder, ...)`, the
loader CONTRACTS.md names: in diffusers 0.42 that call builds the processors and then
installs them only when the private `_pipeline` argument is passed (huggingface/diffusers
#9320), so the public call returns the base UNet unchanged, without a warning; and with
`_pipeline`, a safetensors file (which cannot hold the weightless self-attention entries)
is refused for naming too few layers. We read the same file, build diffusers' own
`CustomDiffusionAttnProcessor` for each layer it names, keep the UNet's processors for
the others, and check that every layer named was found, so a checkpoint made for another
base model is an error, not a silently unpersonalised model.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from pathlib import Path
from models import hf

WEIGHTS = "pytorch_custom_diffusion_weights.safetensors"
_SUFFIXES = ("to_k_custom_diffusion.weight", "to_v_custom_diffusion.weight", "to_q_custom_diffusion.weight",
             "to_out_custom_diffusion.0.weight", "to_out_custom_diffusion.0.bias")


def custom_diffusion_processors(unet, state: dict, name: str) -> dict:
    """Every attention layer's processor: Custom Diffusion where `state` has weights for
    the layer, the UNet's current one elsewhere."""
    from diffusers.models.attention_processor import CustomDiffusionAttnProcessor

    grouped: dict[str, dict] = defaultdict(dict)
    for key, value in state.items():
        suffix = next((s for s in _SUFFIXES if key.endswith("." + s)), None)
        if suffix is None:
            raise ValueError(f"{name}: {key!r} is not a Custom Diffusion weight")
        grouped[key[: -len(suffix) - 1]][suffix] = value
    procs = dict(unet.attn_processors)
    unknown = sorted(set(grouped) - set(procs))
    if unknown:
        raise ValueError(
            f"{name}: weights for attention layers the base model lacks ({unknown[:3]}...): "
            "was the checkpoint trained on another base model?"
        )
    for layer, weights in grouped.items():
        if "to_k_custom_diffusion.weight" not in weights:
            raise ValueError(f"{name}: layer {layer} has no to_k_custom_diffusion weight")
        k = weights["to_k_custom_diffusion.weight"]
        proc = CustomDiffusionAttnProcessor(
            train_kv=True, train_q_out="to_q_custom_diffusion.weight" in weights,
            hidden_size=k.shape[0], cross_attention_dim=k.shape[1],
        )
        try:
            proc.load_state_dict(weights)
        except RuntimeError as err:  # shapes that do not fit the base model's layer
            raise ValueError(f"{name}: layer {layer}: {err}") from err
        procs[layer] = proc
    return procs


class PersonalisedPipeline:
    """Generates images of a checkpoint's concepts. `generate` is serialised by a lock:
    one pipeline per process, shared by the task runner's threads."""

    def __init__(self, base_model: str, checkpoint: str, tokens: dict[str, str], base_revision: str | None = None,
                 device: str = "auto", dtype: str = "auto"):
        import torch
        from diffusers import StableDiffusionPipeline
        from safetensors.torch import load_file

        on, dt = hf.placement({"device": device, "dtype": dtype})
        src = hf.source({"model": base_model, "revision": base_revision}, what="evaluation base model")
        pipe = StableDiffusionPipeline.from_pretrained(
            src.path, dtype=dt, safety_checker=None, requires_safety_checker=False, **src.kwargs()
        )
        folder = Path(checkpoint)
        weights = folder / WEIGHTS
        state = load_file(str(weights), device="cpu")
        procs = custom_diffusion_processors(pipe.unet, state, str(weights))
        for proc in procs.values():
            if isinstance(proc, torch.nn.Module):  # new layers are built in float32
                proc.to(dtype=dt)
        pipe.unet.set_attn_processor(procs)
        for token, rel in tokens.items():
            pipe.load_textual_inversion(str(folder / rel), token=token)
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe.to(on)  # loaded in its dtype already; moved only
        self.device = on
        self.tokens = dict(tokens)
        self._torch = torch
        self._lock = threading.Lock()

    @property
    def resolution(self) -> int:
        """The base model's native side in pixels (512 for SD 1.5)."""
        return int(self.pipe.unet.config.sample_size) * int(self.pipe.vae_scale_factor)

    def generate(self, prompt: str, seeds: list[int], steps: int, guidance: float, size: int,
                 negative_prompt: str | None = None) -> list:
        """One image (PIL, RGB) per seed, in one batch; each image's noise comes from its own
        CPU generator, so an image depends on its seed, not on its batch (up to the
        rounding of batched kernels)."""
        gens = [self._torch.Generator("cpu").manual_seed(s) for s in seeds]
        with self._lock, self._torch.inference_mode():
            out = self.pipe(
                [prompt] * len(seeds), negative_prompt=[negative_prompt] * len(seeds) if negative_prompt else None,
                num_inference_steps=steps, guidance_scale=guidance, height=size, width=size, generator=gens,
            )
        return [im.convert("RGB") for im in out.images]
