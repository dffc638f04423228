"""Diffusion repainters: SDXL inpainting + the SDXL refiner (`sdxl`), or SD 1.5 inpainting
(`sd-inpaint`), repainting the background behind the user's objects.

What one batch does (`repaint_batch`), per sample:

1. Starting image. The paper starts from a real, slightly blurred background photo
   outside the objects combined with the composite (starting from noise gave unrealistic
   backgrounds). With a background photo (the recipe's `backgrounds`) `init: photo` (the
   default there) does exactly that: the photo blurred by radius 1, the objects over it.
   Without one, our composite is black outside the objects, so `init: scene` (default)
   paints the planned scene with the offline repainter (`scene_options`, same seed and
   boxes: wall or sky, textured ground in perspective, contact shadows) behind the
   objects and blurs that background by `init_blur` (Gaussian sigma in pixels at 1024):
   the procedural scene plays the paper's background photo. `init: grey` puts the objects
   on flat grey instead (closer to starting from noise).
2. Mask. The repaint mask is the inverted object mask smoothed with a `mask_blur` x
   `mask_blur` average (the paper's 5x5). diffusers binarises the mask it is given, so the
   smoothing acts where it matters: the final blend (step 5).
3. Base pass at `size` x `size` (1024 for SDXL, 512 for SD 1.5; the canvas is resized
   to it and back), prompt `prompt` ("a realistic photo of {scene}": object names are
   left out, as in the paper), `negative_prompt`, `strength` 0.9, `steps` 60, `guidance`
   6.0, one generator per sample seeded by the sample's seed.
4. SDXL only: with a `refiner` (default the SDXL 1.0 refiner) the base stops at
   `refiner_start` (0.75) and hands its latents to the refiner, which denoises the rest
   (denoising_start 0.75). The refiner's decoded image is the result. The refiner shares
   the base's VAE and second text encoder (`share_refiner_parts`), as diffusers' own
   base + refiner recipe does: one copy in memory. `refiner: null` keeps the base output.
5. Finish (`finish`): decoded image resized to the canvas, blended with the starting image
   through the smoothed object mask (alpha = mask_blur-average of the object mask), then
   every fully-on object pixel is pasted back from the composite: the objects stay
   exactly the user's (the reference code let the VAE and refiner alter them).

Weights: `model` / `refiner` are local folders (save_pretrained layout) or hub ids with
`revision` / `refiner_revision` pinned; `variant` (e.g. fp16) picks the hub's fp16 files.
Device and dtype from models/hf.py (fp16 on CUDA). `offload: true` moves each component to
the GPU only while it runs (diffusers' model CPU offload) for cards under 24 GB.

Memory (models/lifecycle.py): the registry weighs the UNets, text encoders and VAE (the
shared ones once) and moves them as a whole between stages. `vae_slicing` (default on)
decodes one image of a batch at a time: SDXL's VAE decodes in fp32 (its fp16 overflows),
about 3 GiB per 1024 px image, so a batch of 4 would need 12 GiB at once. `vae` swaps in
another AutoencoderKL (e.g. `madebyollin/sdxl-vae-fp16-fix`, whose config says no upcast:
the decode stays fp16, half the memory); the refiner shares it when `share_refiner_parts`.
"""

from __future__ import annotations

import threading
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import Field, field_validator

from gen4gen.infra.errors import BadInput
from gen4gen.models import hf, lifecycle
from gen4gen.models.options import Options, parse
from gen4gen.models.backgrounds import soften
from gen4gen.models.contracts import Backdrop
from gen4gen.models.repaint.repainter import OfflineRepainter

# Against the artefacts inpainting tends to make; kept under CLIP's 77 tokens (the paper's
# own list is longer and gets truncated).
NEGATIVE_PROMPT = (
    "cartoon, drawing, painting, illustration, 3d render, text, watermark, logo, frame, "
    "collage, duplicate, deformed, distorted, disfigured, extra limbs, bad anatomy, blurry, "
    "low quality, lowres, jpeg artifacts, oversaturated"
)

DEFAULTS: dict[str, dict[str, Any]] = {
    "sdxl": {
        "model": "diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
        "refiner": "stabilityai/stable-diffusion-xl-refiner-1.0",
        "size": 1024,
    },
    "sd-inpaint": {
        "model": "stable-diffusion-v1-5/stable-diffusion-inpainting",
        "refiner": None,
        "size": 512,
    },
}


class DiffusionOptions(Options):
    model: str
    revision: str | None = None
    variant: str | None = None
    refiner: str | None = None
    refiner_revision: str | None = None
    refiner_variant: str | None = None
    refiner_start: float = Field(default=0.75, gt=0.0, lt=1.0)
    share_refiner_parts: bool = True
    steps: int = Field(default=60, ge=1, le=1000)
    strength: float = Field(default=0.9, gt=0.0, le=1.0)
    guidance: float = Field(default=6.0, ge=0.0)
    size: int = Field(default=1024, ge=64, multiple_of=8)
    prompt: str = "a realistic photo of {scene}"
    negative_prompt: str = NEGATIVE_PROMPT
    mask_blur: int = Field(default=5, ge=1, le=101)
    # None: "photo" for a sample with a background photo, else "scene".
    init: Literal["photo", "scene", "grey"] | None = None
    init_blur: float = Field(default=2.0, ge=0.0)
    scene_options: dict[str, Any] = Field(default_factory=dict)
    batch_size: int = Field(default=4, ge=1, le=64)
    safety_checker: bool = False
    offload: bool = False
    vae: str | None = None
    vae_revision: str | None = None
    vae_slicing: bool = True
    device: str = "auto"
    dtype: str = "auto"

    @field_validator("prompt")
    @classmethod
    def _has_scene(cls, v: str) -> str:
        if "{scene}" not in v:
            raise ValueError("must contain '{scene}'")
        return v


class DiffusionRepainter:
    """``repaint_batch(composites, masks, scenes, seeds, boxes) -> [HxWx3 uint8]``."""

    def __init__(self, kind: Literal["sdxl", "sd-inpaint"] = "sdxl", *, _pipes: tuple | None = None, **options):
        if kind not in DEFAULTS:
            raise ValueError(f"unknown diffusion repainter {kind!r}; known: {sorted(DEFAULTS)}")
        self.kind = self.name = kind
        what = f"stages.repaint ({kind})"
        self.options = opts = parse(DiffusionOptions, {**DEFAULTS[kind], **options}, what)
        if kind == "sd-inpaint" and opts.refiner:
            raise ValueError(f"{what}: option 'refiner' is for sdxl only (SD 1.5 has no refiner)")
        self.batch_size = opts.batch_size
        self.device, self.dtype = hf.placement(options)
        self.scene_painter = OfflineRepainter(**opts.scene_options)
        self.base, self.refiner = _pipes if _pipes is not None else self._load(what)
        # The default Prefect task runner is a thread pool: two compositions may repaint at
        # once, and a pipeline call mutates its scheduler's state (set_timesteps). One call
        # at a time; the GPU would serialise them anyway.
        self._lock = threading.Lock()
        for pipe in (self.base, self.refiner):
            if pipe is not None:
                pipe.set_progress_bar_config(disable=True)

    @classmethod
    def from_pipelines(cls, kind: str, base, refiner=None, /, **options) -> "DiffusionRepainter":
        """A repainter around pipelines already in memory (the GPU benchmark builds them
        from configs with random weights)."""
        return cls(kind, _pipes=(base, refiner), **{**options, "refiner": "(in memory)" if refiner is not None else None})

    def _load(self, what: str):
        opts = self.options
        if self.kind == "sdxl":
            from diffusers import StableDiffusionXLInpaintPipeline as Pipe

            extra: dict[str, Any] = {"add_watermarker": False}
        else:
            from diffusers import StableDiffusionInpaintPipeline as Pipe

            extra = {} if opts.safety_checker else {"safety_checker": None, "requires_safety_checker": False}
        src = hf.source(opts.model_dump(), "model", what=what)
        kw = dict(torch_dtype=self.dtype, variant=opts.variant, **src.kwargs(), **extra)
        if opts.vae:
            from diffusers import AutoencoderKL

            vsrc = hf.source(opts.model_dump(), "vae", what=what)
            kw["vae"] = AutoencoderKL.from_pretrained(vsrc.path, torch_dtype=self.dtype, **vsrc.kwargs())
        base = Pipe.from_pretrained(src.path, **kw)
        refiner = None
        if opts.refiner:
            rsrc = hf.source(opts.model_dump(), "refiner", what=what)
            rkw: dict[str, Any] = dict(torch_dtype=self.dtype, variant=opts.refiner_variant, **rsrc.kwargs(), **extra)
            if opts.share_refiner_parts:
                rkw.update(vae=base.vae, text_encoder_2=base.text_encoder_2)
            refiner = Pipe.from_pretrained(rsrc.path, **rkw)
            if refiner.unet.config.in_channels != 4:
                raise ValueError(f"{what}: option 'refiner' {rsrc.path!r} has a {refiner.unet.config.in_channels}-channel UNet; "
                                 "expected a 4-channel SDXL refiner")
        if base.unet.config.in_channels != 9:
            raise ValueError(f"{what}: option 'model' {src.path!r} is not an inpainting model "
                             f"(its UNet takes {base.unet.config.in_channels} channels, inpainting needs 9)")
        for pipe in (base, refiner):
            if pipe is None:
                continue
            if opts.vae_slicing:
                pipe.vae.enable_slicing()
            if self.streams_weights:
                pipe.enable_model_cpu_offload(device=self.device)
            else:
                lifecycle.place(pipe, self.device)
        return base, refiner

    # ------------------------------------------------------------------ lifecycle

    @property
    def streams_weights(self) -> bool:
        """Components stream to the GPU one at a time (diffusers' model CPU offload)."""
        return self.options.offload and self.device.startswith("cuda")

    def memory_parts(self) -> list:
        parts = []
        for pipe in (self.base, self.refiner):
            if pipe is not None:
                parts += [getattr(pipe, n, None) for n in ("unet", "text_encoder", "text_encoder_2", "vae")]
        return [p for p in parts if p is not None]

    def working_bytes(self) -> int:
        """Activations of one batch (an estimate; benchmarks/memory_plan.py measures them on
        the meta device): the UNet at 2 x batch (classifier-free guidance), about 40 maps of
        (latent pixels x first block width) per image in fp16/fp32, and the VAE decode of
        one image (slicing) or the batch, about 6 maps of (pixels x its first block width),
        in fp32 when the VAE upcasts."""
        opts = self.options
        size = self.dtype.itemsize
        latent = (opts.size // 8) ** 2
        unet = self.base.unet.config.block_out_channels[0]
        vae = self.base.vae
        vae_size = 4 if getattr(vae.config, "force_upcast", True) else size
        images = 1 if getattr(vae, "use_slicing", False) else self.batch_size
        unet_bytes = 2 * self.batch_size * 40 * latent * unet * size
        vae_bytes = images * 6 * opts.size**2 * vae.config.block_out_channels[0] * vae_size
        return max(unet_bytes, vae_bytes)

    # ------------------------------------------------------------------ public

    def repaint(self, composite, mask, scene: str, seed: int, boxes, backdrop: Backdrop | None = None) -> np.ndarray:
        return self.repaint_batch([composite], [mask], [scene], [seed], [boxes], [backdrop])[0]

    def repaint_batch(
        self,
        composites: list[np.ndarray],
        masks: list[np.ndarray],
        scenes: list[str],
        seeds: list[int],
        boxes: list[list[tuple[int, int, int, int]]],
        backdrops: list[Backdrop | None] | None = None,
    ) -> list[np.ndarray]:
        """Each composite with its background repainted; objects' solid pixels exact.

        Runs `batch_size` samples per pipeline call; a longer list is cut into batches.
        """
        n = len(composites)
        if not (len(masks) == len(scenes) == len(seeds) == len(boxes) == n):
            raise ValueError(f"repaint_batch: {n} composites but {len(masks)} masks, {len(scenes)} scenes, "
                             f"{len(seeds)} seeds, {len(boxes)} box lists")
        out: list[np.ndarray] = []
        for start in range(0, n, self.batch_size):
            sl = slice(start, start + self.batch_size)
            inits, checked = [], []
            photos = (backdrops or [None] * n)[sl]
            for c, m, s, sd, b, p in zip(composites[sl], masks[sl], scenes[sl], seeds[sl], boxes[sl], photos):
                m = OfflineRepainter._check(c, m, s, sd, b)
                checked.append(m)
                inits.append(self.start_image(c, m, s, sd, b, p))
            generated = self.generate(inits, checked, scenes[sl], seeds[sl])
            out += [self.finish(c, m, i, g) for c, m, i, g in zip(composites[sl], checked, inits, generated)]
        return out

    def start_image(self, composite, mask, scene: str, seed: int, boxes, backdrop: Backdrop | None = None) -> np.ndarray:
        """The image the diffusion starts from: the objects over the sample's background
        photo blurred by radius 1 (`photo`, as the paper does), over the planned scene
        (slightly blurred), or over flat grey."""
        init = self.options.init or ("photo" if backdrop is not None else "scene")
        if init == "photo":
            if backdrop is None:
                raise BadInput(f"scene {scene!r}", "init 'photo' needs a background photo: the recipe has no "
                               "backgrounds for this sample", code="no_background")
            a = mask[..., None]
            photo = soften(backdrop.image, 1.0).astype(np.float32)
            return (a * composite + (1 - a) * photo).round().clip(0, 255).astype(np.uint8)
        if init == "grey":
            a = mask[..., None]
            return (a * composite + (1 - a) * 128.0).round().clip(0, 255).astype(np.uint8)
        init = self.scene_painter.repaint(composite, mask, scene, seed, boxes)
        sigma = self.options.init_blur * mask.shape[0] / 1024.0
        if sigma > 0:
            blurred = cv2.GaussianBlur(init, (0, 0), sigma)
            a = mask[..., None]
            init = (a * init + (1 - a) * blurred).round().clip(0, 255).astype(np.uint8)
        return init

    def blend_alpha(self, mask: np.ndarray) -> np.ndarray:
        """The object mask smoothed with a mask_blur x mask_blur average (1 = no smoothing)."""
        k = self.options.mask_blur
        if k <= 1:
            return mask.astype(np.float32)
        return cv2.blur(mask.astype(np.float32), (k, k), borderType=cv2.BORDER_REPLICATE)

    def generate(self, inits: list[np.ndarray], masks: list[np.ndarray], scenes: list[str], seeds: list[int]) -> list[np.ndarray]:
        """The pipelines' decoded images (float32 HxWx3 in [0, 1], canvas size), one per
        sample, in one base call and one refiner call."""
        import torch
        from PIL import Image

        opts = self.options
        h, w = inits[0].shape[:2]
        mh, mw = self._model_size(h, w)
        images, mask_images = [], []
        for init, mask in zip(inits, masks):
            if init.shape[:2] != (h, w):
                raise ValueError(f"repaint_batch: canvases of different sizes in one batch: {init.shape[:2]} and {(h, w)}")
            images.append(Image.fromarray(self._resize(init, mw, mh)))
            repaint = 1.0 - self.blend_alpha(mask)
            mask_images.append(Image.fromarray((self._resize(repaint, mw, mh) * 255).round().astype(np.uint8), "L"))
        prompts = [opts.prompt.format(scene=s) for s in scenes]
        negatives = [opts.negative_prompt] * len(prompts)

        def generators():
            return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]

        common = dict(prompt=prompts, negative_prompt=negatives, mask_image=mask_images, height=mh, width=mw,
                      num_inference_steps=opts.steps, guidance_scale=opts.guidance, strength=opts.strength)
        with self._lock:
            result = self._run(images, generators, common)
        flagged = getattr(result, "nsfw_content_detected", None) or [False] * len(prompts)
        out = []
        for img, bad, scene in zip(result.images, flagged, scenes):
            if bad:
                raise BadInput(f"scene {scene!r}", "the safety checker blanked the repainted image", code="nsfw")
            out.append(self._resize(np.asarray(img, np.float32), w, h))
        return out

    def _run(self, images, generators, common):
        opts = self.options
        if self.refiner is not None:
            latents = self.base(image=images, generator=generators(), denoising_end=opts.refiner_start,
                                output_type="latent", **common).images
            return self.refiner(image=latents, generator=generators(), denoising_start=opts.refiner_start,
                                output_type="np", **common)
        return self.base(image=images, generator=generators(), output_type="np", **common)

    def finish(self, composite: np.ndarray, mask: np.ndarray, init: np.ndarray, generated: np.ndarray) -> np.ndarray:
        """Decoded image -> final: blended with the starting image through the smoothed
        object mask, then the objects' solid pixels pasted back exactly."""
        a = self.blend_alpha(mask)[..., None]
        out = a * init.astype(np.float32) + (1 - a) * (generated * 255.0)
        out = out.round().clip(0, 255).astype(np.uint8)
        solid = mask >= 1.0
        out[solid] = composite[solid]
        return out

    # ------------------------------------------------------------------ helpers

    def _model_size(self, h: int, w: int) -> tuple[int, int]:
        """(height, width) the pipeline runs at: the longer side `size`, multiples of 8."""
        s = self.options.size
        if h >= w:
            return s, max(8, round(s * w / h / 8) * 8)
        return max(8, round(s * h / w / 8) * 8), s

    @staticmethod
    def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
        if img.shape[:2] == (h, w):
            return img
        shrink = w < img.shape[1]
        return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC).clip(
            0, 255 if img.dtype == np.uint8 else 1.0)
