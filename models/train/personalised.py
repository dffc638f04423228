"""A personalised Stable Diffusion pipeline: base model + a Custom Diffusion checkpoint.

The base model (hub id at a revision, or a local folder) loads with diffusers'
`StableDiffusionPipeline.from_pretrained`; the checkpoint goes in through the one loader of
the checkpoint contract, `infra/checkpoint.py: load_into` (diffusers' own
`unet.load_attn_procs` for the k/v weights, `load_textual_inversion` per token; it passes
`_pipeline=` because diffusers 0.42 otherwise leaves the UNet unchanged without a word,
huggingface/diffusers#9320, and checks that the processors really changed). A checkpoint
that does not fit the base model is an error naming both.
"""

from __future__ import annotations

import threading

from gen4gen.models import hf, lifecycle


class PersonalisedPipeline:
    """Generates images of a checkpoint's concepts. `generate` is serialised by a lock:
    one pipeline per process, shared by the task runner's threads."""

    def __init__(self, base_model: str, checkpoint: str, base_revision: str | None = None,
                 device: str = "auto", dtype: str = "auto"):
        import torch
        from diffusers import StableDiffusionPipeline

        from gen4gen.infra.checkpoint import load_into

        on, dt = hf.placement({"device": device, "dtype": dtype})
        src = hf.source({"model": base_model, "revision": base_revision}, what="evaluation base model")
        pipe = StableDiffusionPipeline.from_pretrained(
            src.path, dtype=dt, safety_checker=None, requires_safety_checker=False, **src.kwargs()
        )
        try:
            self.info = load_into(pipe, checkpoint)
        except (KeyError, ValueError, RuntimeError) as err:  # layer names or shapes of another model
            raise ValueError(f"checkpoint {checkpoint} does not fit base model {base_model}: {err}") from err
        pipe.set_progress_bar_config(disable=True)
        self.pipe = lifecycle.place(pipe, on)
        self.device = on
        self._torch = torch
        self._lock = threading.Lock()

    def memory_parts(self) -> list:
        return [self.pipe.unet, self.pipe.vae, self.pipe.text_encoder]

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
