"""The two vision models of scoring and filtering: CLIP (open_clip) and OWL-ViT (transformers).

Both take images as HxWx3 uint8 numpy arrays and work in batches (one forward pass per
`batch_size` images), load their weights through models/hf.py's conventions (local path or
hub id, `device`/`dtype` options) and are built once per process by models/registry.py:

    registry.load("vision", "clip", {"model": "ViT-B-32", "pretrained": "openai"})
    registry.load("vision", "owlvit", {"model": "google/owlvit-base-patch32"})

torch, open_clip and transformers are imported inside the constructors so that importing
this module stays light.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from gen4gen.infra.storage import file_sha256
from gen4gen.models import hf, lifecycle

CLIP_DEFAULTS = {"model": "ViT-B-32", "pretrained": "openai"}
OWLVIT_DEFAULT = "google/owlvit-base-patch32"
DEFAULT_BATCH = 32


def _rgb(image: Any, name: str) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise ValueError(f"{name}: expected an HxWx3 uint8 RGB array, got {a.dtype} {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"{name}: empty image {a.shape}")
    # torch warns on read-only arrays (decoded images often are); a copy is cheap here.
    return a if a.flags.writeable else a.copy()


# --------------------------------------------------------------------------- CLIP

CLIP_LOCAL = "a local checkpoint file (open_clip's state dict: open_clip_model.safetensors or a .pt/.bin)"


def clip_weights(model: str, pretrained: str | None, what: str = "vision.clip") -> str | None:
    """Where open_clip will read `pretrained` of `model` from, checked before anything loads
    (models/hf.py's rule, for open_clip's names): a checkpoint file must exist; a tag resolves
    through open_clip's table to a hub repo (timm/..., laion/...) whose weights file must be in
    the local HF cache or, online, on a hub that answers. Without it a missing tag meant hub
    retries inside open_clip, then an error naming neither the tag nor the fix. Returns the
    file, or None (random weights; a download to come)."""
    import open_clip

    if not pretrained:
        return None
    cfg = open_clip.get_pretrained_cfg(model, pretrained)
    named = f"{what}: model {model!r} pretrained {pretrained!r}"
    if not cfg:
        path = os.path.expanduser(pretrained)
        if os.path.isfile(path):
            return path
        raise hf.WeightsMissing(
            f"{named} is neither a tag of {model} ({open_clip.list_pretrained_tags_by_model(model)}) nor a "
            f"checkpoint file (looked for that path on this machine). Fix it either way: (1) give one of those "
            f"tags (its weights in the local Hugging Face cache), or (2) set option 'pretrained' to {CLIP_LOCAL}.")
    if cfg.get("file"):  # a table entry of a local file (open_clip reads it as is)
        return clip_weights(model, cfg["file"], what)
    if cfg.get("hf_hub"):
        # As open_clip.download_pretrained: 'org/repo/' is the default file, .safetensors first.
        repo, filename = os.path.split(cfg["hf_hub"])
        from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

        if not filename or filename == HF_WEIGHTS_NAME:
            names = [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
        else:
            names = ([filename[:-4] + ".safetensors"] if filename.endswith((".bin", ".pth")) else []) + [filename]
        return hf.ensure_hub_file(repo, names, what=named, key="pretrained", local=CLIP_LOCAL)
    # A URL only (no tag of open_clip 3.3 is): open_clip downloads it into ~/.cache/clip.
    cached = os.path.expanduser(os.path.join("~/.cache/clip", os.path.basename(cfg.get("url", ""))))
    if os.path.isfile(cached) or not hf._offline():
        return cached if os.path.isfile(cached) else None
    raise hf.WeightsMissing(f"{named} is {cfg.get('url')}, not in {os.path.dirname(cached)}, and this machine is "
                            f"offline (HF_HUB_OFFLINE=1). Fix it either way: (1) download it there, or (2) set "
                            f"option 'pretrained' to {CLIP_LOCAL}.")


class Clip:
    """open_clip CLIP: L2-normalised image and text features, float32 numpy, in batches.

    Options:
      model: an open_clip architecture name (ViT-B-32 by default);
      pretrained: an open_clip tag ("openai") or a local checkpoint file; None: random
        weights (benchmarks only);
      model_config: optional json file of a custom architecture; its file name (without
        .json) is the architecture name and must equal `model`;
      device, dtype: as models/hf.py (CUDA + fp16 when present, else CPU + fp32);
      batch_size: images or texts per forward pass.
    """

    def __init__(self, model: str = CLIP_DEFAULTS["model"], pretrained: str | None = CLIP_DEFAULTS["pretrained"],
                 model_config: str | None = None, device: str = "auto", dtype: str = "auto",
                 batch_size: int = DEFAULT_BATCH):
        import open_clip
        import torch

        self.device, self.dtype = hf.placement({"device": device, "dtype": dtype})
        if model_config is not None:
            cfg = Path(os.path.expanduser(model_config))
            if not cfg.is_file():
                raise FileNotFoundError(f"vision.clip: model_config {str(cfg)!r} does not exist")
            if cfg.stem != model:
                raise ValueError(
                    f"vision.clip: model_config {cfg.name!r} defines architecture {cfg.stem!r} "
                    f"but option model is {model!r}; they must be the same name"
                )
            open_clip.add_model_config(cfg)
        if model not in open_clip.list_models():
            raise ValueError(f"vision.clip: unknown architecture {model!r} (give model_config for a custom one)")
        quick_gelu = False
        found = clip_weights(model, pretrained)  # missing weights: WeightsMissing now, not retries
        if pretrained:
            tag = open_clip.get_pretrained_cfg(model, pretrained)
            if tag:
                # OpenAI's weights were trained with QuickGELU; the plain config uses GELU.
                quick_gelu = bool(tag.get("quick_gelu", False))
            else:
                pretrained = found  # the checkpoint file, ~ expanded
        precision = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(self.dtype, "fp32")
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(
            model, pretrained=pretrained or None, precision=precision, device=lifecycle.build_device(self.device),
            force_quick_gelu=quick_gelu,
        )
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(model)
        self.batch_size = int(batch_size)
        weights = ("file-sha256:" + file_sha256(pretrained)) if pretrained and os.path.isfile(pretrained) else (pretrained or "random")
        # What a cached feature depends on (not the device or dtype: fp16 and fp32 features
        # agree to ~1e-3, far below anything the filter or the metrics resolve).
        self.identity = f"open_clip:{model}:{weights}"
        if model_config is not None:
            self.identity += ":config-sha256:" + file_sha256(str(cfg))[:16]

    def memory_parts(self) -> list:
        return [self.model]

    def image_features(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N, D) L2-normalised features of N RGB uint8 images of any sizes."""
        import torch
        from PIL import Image

        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            pixels = torch.stack([
                self.preprocess(Image.fromarray(_rgb(im, f"images[{start + k}]"))) for k, im in enumerate(chunk)
            ]).to(self.device, self.dtype)
            with torch.inference_mode():
                f = self.model.encode_image(pixels, normalize=True)
            out.append(f.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def text_features(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) L2-normalised features of N texts (CLIP truncates past its context length)."""
        import torch

        for k, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{k}]: expected a string, got {type(t).__name__}")
        out = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(list(texts[start : start + self.batch_size])).to(self.device)
            with torch.inference_mode():
                f = self.model.encode_text(tokens, normalize=True)
            out.append(f.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    @property
    def dim(self) -> int:
        return int(self.model.text_projection.shape[1]) if self.model.text_projection is not None else int(
            self.model.visual.output_dim)


# --------------------------------------------------------------------------- OWL-ViT


@dataclass(frozen=True)
class Detection:
    """One detected object: box (x0, y0, x1, y1) in image pixels and its score in [0, 1]."""

    box: tuple[float, float, float, float]
    score: float

    def crop(self, image: np.ndarray) -> np.ndarray:
        """The box's pixels (at least 1x1, clipped to the image)."""
        h, w = image.shape[:2]
        x0 = min(max(int(np.floor(self.box[0])), 0), w - 1)
        y0 = min(max(int(np.floor(self.box[1])), 0), h - 1)
        x1 = max(min(int(np.ceil(self.box[2])), w), x0 + 1)
        y1 = max(min(int(np.ceil(self.box[3])), h), y0 + 1)
        return image[y0:y1, x0:x1]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


class OwlVit:
    """OWL-ViT open-vocabulary detection by text query, in batches.

    Options: model (hub id or local folder, google/owlvit-base-patch32 by default),
    revision, threshold (a box counts when its sigmoid score for the query is above it),
    template (how a category word becomes a query, "{}" by default: the bare word, as the
    paper's metric does), device, dtype, batch_size.
    """

    def __init__(self, model: str = OWLVIT_DEFAULT, revision: str | None = None, threshold: float = 0.1,
                 template: str = "{}", device: str = "auto", dtype: str = "auto",
                 batch_size: int = 8, same_box_iou: float = 0.5):
        from transformers import OwlViTForObjectDetection, OwlViTProcessor

        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"vision.owlvit: threshold {threshold} must lie in [0, 1)")
        if "{}" not in template:
            raise ValueError(f"vision.owlvit: template {template!r} must contain '{{}}' for the category word")
        src = hf.source({"model": model, "revision": revision}, "model", what="vision.owlvit")
        self.device, self.dtype = hf.placement({"device": device, "dtype": dtype})
        self.processor = OwlViTProcessor.from_pretrained(src.path, **src.kwargs())
        self.model = OwlViTForObjectDetection.from_pretrained(src.path, dtype=self.dtype, **src.kwargs())
        lifecycle.place(self.model, self.device).eval()
        self.threshold = float(threshold)
        self.template = template
        self.batch_size = int(batch_size)
        self.same_box_iou = float(same_box_iou)
        self.identity = f"owlvit:{src.path}@{src.revision or 'local'}"

    def memory_parts(self) -> list:
        return [self.model]

    def detect(self, images: Sequence[np.ndarray], labels_per_image: Sequence[Sequence[str]],
               threshold: float | None = None) -> list[list[Detection | None]]:
        """For each image and each of its labels: the label's best box above the threshold, or None.

        The result follows `labels_per_image` position by position. Each label is scored on
        its own (a box may be the best for two different words). A word listed k times in
        one image (two dogs) gets its k best boxes that overlap each other at most
        `same_box_iou`, best first; the ones it lacks are None.
        """
        import torch

        if len(images) != len(labels_per_image):
            raise ValueError(f"detect: {len(images)} images but {len(labels_per_image)} label lists")
        limit = self.threshold if threshold is None else float(threshold)
        results: list[list[Detection | None]] = []
        for start in range(0, len(images), self.batch_size):
            chunk = [_rgb(im, f"images[{start + k}]") for k, im in enumerate(images[start : start + self.batch_size])]
            labels = [list(ls) for ls in labels_per_image[start : start + self.batch_size]]
            for k, ls in enumerate(labels):
                if not ls or not all(isinstance(w, str) and w.strip() for w in ls):
                    raise ValueError(f"labels_per_image[{start + k}]: need one or more non-empty words, got {ls}")
            words = [list(dict.fromkeys(ls)) for ls in labels]  # each word queried once per image
            queries = [[self.template.format(w) for w in ws] for ws in words]
            inputs = self.processor(text=queries, images=chunk, return_tensors="pt")
            inputs = {k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
                      for k, v in inputs.items()}
            with torch.inference_mode():
                out = self.model(**inputs)
            scores = torch.sigmoid(out.logits.float()).cpu().numpy()  # (B, boxes, queries)
            boxes = out.pred_boxes.float().cpu().numpy()  # (B, boxes, 4): cx, cy, w, h in [0, 1]
            for b, image in enumerate(chunk):
                h, w = image.shape[:2]
                c = boxes[b]
                corners = np.stack([c[:, 0] - c[:, 2] / 2, c[:, 1] - c[:, 3] / 2,
                                    c[:, 0] + c[:, 2] / 2, c[:, 1] + c[:, 3] / 2], axis=1)
                corners = np.clip(corners, 0.0, 1.0) * np.array([w, h, w, h], dtype=np.float64)
                picked = {word: self._best(scores[b, :, q], corners, labels[b].count(word), limit)
                          for q, word in enumerate(words[b])}
                results.append([picked[word].pop(0) for word in labels[b]])
        return results

    def _best(self, scores: np.ndarray, corners: np.ndarray, k: int, limit: float) -> list[Detection | None]:
        chosen: list[Detection] = []
        for i in np.argsort(-scores, kind="stable"):
            if scores[i] <= limit or len(chosen) == k:
                break
            if all(_iou(corners[i], np.array(d.box)) <= self.same_box_iou for d in chosen):
                chosen.append(Detection(tuple(float(v) for v in corners[i]), float(scores[i])))
        return chosen + [None] * (k - len(chosen))

