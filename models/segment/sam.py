"""SAM segmenter (`segment-anything`): a soft foreground mask from one product-style photo.

Prompt: the photo's box (inset by `box_margin`) and a positive point at its centre (the
factory's photos show one object, roughly centred). SAM answers three masks with a
predicted IoU each; the best by predicted IoU is kept. Its logits become a soft alpha,
``sigmoid(logits / softness)`` (the reference code's salient-object model gave a soft alpha
too; `softness: 0` gives a hard mask).

Rounds (the paper ran its segmenter several times, each on the previous round's cut-out,
and a person picked the best round): with `rounds: N`, round k+1 sees round k's cut-out
(the object over flat grey `fill`), is prompted with round k's mask box and its most
interior point, and can only remove pixels; the round with the highest predicted IoU is
kept, in place of the person's pick.

Photos with a real transparency channel keep it as their mask, as with the offline
segmenter: no guessing when the photographer already cut the object out.

Batching: the image encoder (nearly all of SAM's work) runs on `batch_size` photos at once;
the prompt encoder and mask decoder, which are small, run per photo on its embedding.

Weights: `checkpoint` is a local `.pth` / `.safetensors` state dict (Meta's release files),
or a Hugging Face repo id with `checkpoint_file` (the file in it) and a pinned `revision`.
`model_type` (vit_b / vit_l / vit_h) names the architecture; a checkpoint of another size
(a distilled or test model) gives it with `encoder: {embed_dim, depth, num_heads,
global_attn_indexes, ...}`, each field overriding the model type's value.

Device and dtype come from models/hf.py; on CUDA with fp16/bf16 the weights stay fp32 and
the forward passes run under autocast (segment-anything's relative position code is not
written for half-precision weights).
"""

from __future__ import annotations

import os

from functools import partial
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from gen4gen.models import hf, lifecycle
from gen4gen.models.options import Options, parse
from gen4gen.models.segment.segmenter import _check_alpha, _check_rgb, batch_categories

WHAT = "stages.segment (sam)"

# segment-anything's three released sizes: (embed_dim, depth, num_heads, global_attn_indexes).
MODEL_TYPES = {
    "vit_b": (768, 12, 12, (2, 5, 8, 11)),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": (1280, 32, 16, (7, 15, 23, 31)),
}


class EncoderOptions(Options):
    """Architecture fields of a non-standard SAM; unset fields follow `model_type` (and the
    released models for the rest: 1024 px input, 16 px patches, 14-token windows, 256-dim
    prompts, a 2-layer 8-head decoder with 2048-wide MLPs)."""

    embed_dim: int | None = Field(default=None, ge=8)
    depth: int | None = Field(default=None, ge=1)
    num_heads: int | None = Field(default=None, ge=1)
    global_attn_indexes: tuple[int, ...] | None = None
    image_size: int = Field(default=1024, ge=32)
    patch_size: int = Field(default=16, ge=2)
    window_size: int = Field(default=14, ge=0)
    prompt_dim: int = Field(default=256, ge=8, multiple_of=8)
    decoder_depth: int = Field(default=2, ge=1)
    decoder_heads: int = Field(default=8, ge=1)
    decoder_mlp_dim: int = Field(default=2048, ge=8)
    iou_hidden_dim: int = Field(default=256, ge=8)


class SamOptions(Options):
    checkpoint: str
    checkpoint_file: str | None = None
    revision: str | None = None
    model_type: Literal["vit_b", "vit_l", "vit_h"] = "vit_h"
    encoder: EncoderOptions | None = None
    rounds: int = Field(default=1, ge=1, le=8)
    box_margin: float = Field(default=0.02, ge=0.0, lt=0.5)
    softness: float = Field(default=1.0, ge=0.0)
    fill: int = Field(default=128, ge=0, le=255)
    batch_size: int = Field(default=4, ge=1)
    device: str = "auto"
    dtype: str = "auto"


def build_sam(model_type: str = "vit_h", encoder: EncoderOptions | dict | None = None):
    """An untrained `Sam` of the given type, fields in `encoder` overriding it."""
    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    enc = encoder if isinstance(encoder, EncoderOptions) else EncoderOptions.model_validate(encoder or {})
    embed_dim, depth, heads, global_idx = MODEL_TYPES[model_type]
    embed_dim = enc.embed_dim or embed_dim
    depth = enc.depth or depth
    heads = enc.num_heads or heads
    global_idx = tuple(enc.global_attn_indexes) if enc.global_attn_indexes is not None else global_idx
    if any(i >= depth for i in global_idx):
        raise ValueError(f"{WHAT}: option 'encoder.global_attn_indexes' {global_idx} must be below depth {depth}")
    if enc.image_size % enc.patch_size:
        raise ValueError(f"{WHAT}: option 'encoder.image_size' {enc.image_size} must be a multiple of patch_size {enc.patch_size}")
    grid = enc.image_size // enc.patch_size
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=enc.image_size,
            patch_size=enc.patch_size,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=heads,
            mlp_ratio=4,
            out_chans=enc.prompt_dim,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=enc.window_size,
            global_attn_indexes=global_idx,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=enc.prompt_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(enc.image_size, enc.image_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            transformer_dim=enc.prompt_dim,
            transformer=TwoWayTransformer(
                depth=enc.decoder_depth,
                embedding_dim=enc.prompt_dim,
                num_heads=enc.decoder_heads,
                mlp_dim=enc.decoder_mlp_dim,
            ),
            num_multimask_outputs=3,
            iou_head_depth=3,
            iou_head_hidden_dim=enc.iou_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


def _state_dict(path: str) -> dict:
    import torch

    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("model", state) if isinstance(state, dict) else state


class SamSegmenter:
    """``segment_batch([(rgb, alpha|None), ...]) -> [HxW float32 mask in [0, 1]]``."""

    name = "sam"

    def __init__(self, **options):
        import torch
        from segment_anything.utils.transforms import ResizeLongestSide

        self.options = parse(SamOptions, options, WHAT)
        self.device, self.dtype = hf.placement(options)
        path = self._checkpoint_path()
        sam = build_sam(self.options.model_type, self.options.encoder)
        try:
            sam.load_state_dict(_state_dict(path))
        except RuntimeError as err:
            first = str(err).strip().splitlines()
            raise ValueError(
                f"{WHAT}: checkpoint {path!r} does not fit model_type {self.options.model_type!r}"
                f"{' with the given encoder' if self.options.encoder else ''}; for a checkpoint of "
                f"another size set option 'encoder' (embed_dim, depth, num_heads, "
                f"global_attn_indexes, ...). torch says: {' '.join(first[:2])[:400]}"
            ) from None
        self.sam = lifecycle.place(sam, self.device).eval()
        self.resize = ResizeLongestSide(sam.image_encoder.img_size)
        self._autocast = self.device.startswith("cuda") and self.dtype != torch.float32

    # ------------------------------------------------------------------ lifecycle

    def memory_parts(self) -> list:
        return [self.sam]

    def working_bytes(self) -> int:
        """Activations of one image-encoder batch: segment-anything's global attention layers
        materialise (tokens x tokens) matrices per head three times (scores, relative
        positions added, softmax), beside about eight (tokens x width) maps per image
        (benchmarks/memory_plan.py measures 12.8 GiB for vit_h, batch 4, fp32)."""
        enc = self.sam.image_encoder
        tokens = (enc.img_size // enc.patch_embed.proj.kernel_size[0]) ** 2
        heads = enc.blocks[0].attn.num_heads
        width = enc.patch_embed.proj.out_channels
        size = 2 if self._autocast else 4
        b = self.options.batch_size
        return b * size * (3 * heads * tokens * tokens + 8 * tokens * width)

    def _checkpoint_path(self) -> str:
        named = str(self.options.checkpoint)
        hub_id = not named.startswith(("/", ".", "~")) and not os.path.exists(named)
        if hub_id and not self.options.checkpoint_file:
            # A recipe error, said before looking for weights anywhere.
            raise ValueError(
                f"{WHAT}: option 'checkpoint' {named!r} is not a local file; for a Hugging Face "
                "repo also set option 'checkpoint_file' (the .pth or .safetensors file in it)"
            )
        src = hf.source(self.options.model_dump(), "checkpoint", what=WHAT)
        if src.local:
            return src.path
        if not self.options.checkpoint_file:
            raise ValueError(
                f"{WHAT}: option 'checkpoint' {src.path!r} is not a local file; for a Hugging Face "
                "repo also set option 'checkpoint_file' (the .pth or .safetensors file in it)"
            )
        from huggingface_hub import hf_hub_download

        return hf_hub_download(src.path, self.options.checkpoint_file, revision=src.revision)

    # ------------------------------------------------------------------ public

    def segment(self, rgb: np.ndarray, alpha: np.ndarray | None = None, category: str | None = None) -> np.ndarray:
        return self.segment_batch([(rgb, alpha)], [category])[0]

    def segment_batch(
        self,
        items: list[tuple[np.ndarray, np.ndarray | None]],
        categories: list[str | None] | None = None,
    ) -> list[np.ndarray]:
        batch_categories(items, categories)  # SAM takes no class words (checked only)
        out: list[np.ndarray | None] = [None] * len(items)
        todo: list[int] = []
        for i, (rgb, alpha) in enumerate(items):
            _check_rgb(rgb)
            if alpha is not None:
                a = _check_alpha(alpha, rgb.shape[:2])
                if float(a.min()) < 0.99:  # a real cut-out: it is the mask
                    out[i] = a
                    continue
            todo.append(i)

        rounds = self.rounds_batch([items[i][0] for i in todo])
        for i, per_round in zip(todo, rounds):
            # The best round by predicted IoU; ties go to the later round (it saw less
            # background).
            best = max(range(len(per_round)), key=lambda r: (per_round[r][1], r))
            out[i] = per_round[best][0]
        return [m for m in out]  # type: ignore[misc]

    def rounds_batch(self, photos: list[np.ndarray]) -> list[list[tuple[np.ndarray, float]]]:
        """Every round's (soft mask, predicted IoU) per photo; round k+1 runs on round k's
        cut-out and only removes pixels. Fewer rounds when a round finds nothing."""
        per: list[list[tuple[np.ndarray, float]]] = [[] for _ in photos]
        prompts = [self._first_prompt(p.shape[:2]) for p in photos]
        previous: dict[int, np.ndarray] = {}
        active = list(range(len(photos)))
        for r in range(self.options.rounds):
            if not active:
                break
            images = {i: photos[i] if r == 0 else self._cutout(photos[i], previous[i]) for i in active}
            results: dict[int, tuple[np.ndarray, float]] = {}
            for start in range(0, len(active), self.options.batch_size):
                chunk = active[start : start + self.options.batch_size]
                for i, res in zip(chunk, self._predict([images[i] for i in chunk], [prompts[i] for i in chunk])):
                    results[i] = res
            still = []
            for i in active:
                logits, score = results[i]
                alpha = self._soft(logits)
                if r > 0:
                    alpha = np.where(previous[i] > 0, alpha, 0.0).astype(np.float32)  # only cut away
                per[i].append((alpha, score))
                prompt = self._next_prompt(alpha)
                if prompt is not None:  # something left to refine
                    previous[i], prompts[i] = alpha, prompt
                    still.append(i)
            active = still
        return per

    # ------------------------------------------------------------------ steps

    def _first_prompt(self, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        h, w = hw
        m = self.options.box_margin
        box = np.array([m * w, m * h, (1 - m) * w - 1, (1 - m) * h - 1], np.float32)
        return box, np.array([w / 2.0, h / 2.0], np.float32)

    def _next_prompt(self, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Round k's mask box (grown by the margin) and its most interior point."""
        solid = (alpha > 0.5).astype(np.uint8)
        ys, xs = np.nonzero(solid)
        if len(xs) == 0:
            return None
        h, w = alpha.shape
        pad = self.options.box_margin * max(h, w)
        box = np.array([max(0, xs.min() - pad), max(0, ys.min() - pad),
                        min(w - 1, xs.max() + pad), min(h - 1, ys.max() + pad)], np.float32)
        dist = cv2.distanceTransform(np.pad(solid, 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
        y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
        return box, np.array([x, y], np.float32)

    def _cutout(self, rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        a = alpha[..., None]
        return (rgb * a + self.options.fill * (1.0 - a)).round().astype(np.uint8)

    def _soft(self, logits: np.ndarray) -> np.ndarray:
        if self.options.softness == 0:
            alpha = (logits > 0).astype(np.float32)
        else:
            alpha = 1.0 / (1.0 + np.exp(-np.clip(logits / self.options.softness, -60, 60)))
        # Snap the ends so that the object's interior is exactly 1 (composite and repaint
        # treat mask == 1 as solid object) and faint haze is exactly 0.
        alpha[alpha >= 254.5 / 255] = 1.0
        alpha[alpha < 0.5 / 255] = 0.0
        return alpha.astype(np.float32)

    def _predict(self, images: list[np.ndarray], prompts: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, float]]:
        """Full-size mask logits and predicted IoU of the best of SAM's three masks, per image."""
        import torch

        sam = self.sam
        inputs, sizes = [], []
        for img in images:
            resized = self.resize.apply_image(img)
            sizes.append(resized.shape[:2])
            t = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).float()
            inputs.append(sam.preprocess(t))
        results = []
        with torch.inference_mode(), torch.autocast("cuda", dtype=self.dtype, enabled=self._autocast):
            embeddings = sam.image_encoder(torch.stack(inputs))
            dense_pe = sam.prompt_encoder.get_dense_pe()
            for k, (img, (box, point)) in enumerate(zip(images, prompts)):
                hw = img.shape[:2]
                box_t = torch.as_tensor(self.resize.apply_boxes(box[None], hw), dtype=torch.float32, device=self.device)
                pts = torch.as_tensor(self.resize.apply_coords(point[None], hw), dtype=torch.float32, device=self.device)
                labels = torch.ones((1, 1), dtype=torch.int, device=self.device)
                sparse, dense = sam.prompt_encoder(points=(pts[None], labels), boxes=box_t, masks=None)
                low, iou = sam.mask_decoder(
                    image_embeddings=embeddings[k : k + 1],
                    image_pe=dense_pe,
                    sparse_prompt_embeddings=sparse,
                    dense_prompt_embeddings=dense,
                    multimask_output=True,
                )
                j = int(torch.argmax(iou[0]))
                logits = sam.postprocess_masks(low[:, j : j + 1].float(), sizes[k], hw)[0, 0]
                results.append((logits.cpu().numpy().astype(np.float32), float(iou[0, j])))
        return results
