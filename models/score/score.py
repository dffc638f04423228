"""Score generated images: OWL-ViT finds each concept, CLIP compares (DESIGN.md §6).

For a batch of images, `score_images` runs
  1. OWL-ViT once over all images, each queried with its concepts' category words
     (the best box per word above the threshold; two concepts of one category get two
     distinct boxes, assigned to the concepts so that each crop goes to the concept whose
     photos it resembles most);
  2. CLIP once over all crops, once over the whole images, once over the scene texts;
  3. CLIP over the source photos that no cache holds yet: a photo's feature is kept in
     memory and on disk under the photo's sha256 and the CLIP model's identity, so a
     concept's photos are encoded once per model, whatever the number of images or runs;
and returns one small `ImageScore` per image: CP-CLIP, TI-CLIP, and per concept the
detection score, the box, its similarity to its own photos and the best match.

TI-CLIP's text is the prompt with the concept tokens removed: every `<name>` token (the
concepts' and a composition token, which CLIP's vocabulary does not know) is cut out, then
the leftover spacing and punctuation is tidied ("<chelsea> cat , <coffee> mug" -> "cat,
mug"). The category words stay: with them the text describes the scene and its objects
in plain words, which is what the untuned CLIP can compare with the image.
"""

from __future__ import annotations

import io
import itertools
import re
import threading
from typing import Any, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from gen4gen.infra.errors import BadInput
from gen4gen.infra.storage import (decode_image, exists, join, read_bytes, read_input, read_rgb, resolve, sha256,
                           to_rgb_alpha, write_bytes)
from gen4gen.models import registry
from gen4gen.models.score.vision import Detection
from gen4gen.models.score import metrics

IMAGE_CHUNK = 64  # images held in memory at once (a 1024px RGB image is 3 MB)
_ANY_TOKEN = re.compile(r"<[A-Za-z0-9][A-Za-z0-9_-]{0,62}>")


class ConceptScore(BaseModel):
    model_config = ConfigDict(extra="forbid")

    detected: bool
    score: float | None = Field(default=None, description="OWL-ViT score of the concept's box")
    box: tuple[float, float, float, float] | None = Field(default=None, description="x0, y0, x1, y1 in pixels")
    own_similarity: float | None = Field(default=None, description="S_ii: mean cosine with its own photos")
    similarity: float | None = Field(default=None, description="S_i = max_j S_ij (what CP-CLIP sums)")
    matched: str | None = Field(default=None, description="the concept j of that maximum")


class ImageScore(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cp_clip: float
    ti_clip: float
    text: str = Field(description="the scene text TI-CLIP compared with")
    concepts: dict[str, ConceptScore]


# --------------------------------------------------------------------------- inputs


def _field(concept: Any, name: str) -> str:
    value = concept.get(name) if isinstance(concept, Mapping) else getattr(concept, name, None)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"concept {concept!r}: missing {name!r}")
    return value


def scene_text(prompt: str, tokens: Sequence[str] = ()) -> str:
    """The prompt with every concept token removed and the leftover spacing tidied."""
    text = prompt
    for token in tokens:
        text = text.replace(token, " ")
    text = _ANY_TOKEN.sub(" ", text)
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)  # no space before punctuation
    text = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", text)  # ", ," -> ","
    text = re.sub(r"\(\s*\)", "", text)
    return re.sub(r"\s+", " ", text).strip(" ,;:")


def _image(item: Any, name: str) -> np.ndarray:
    if isinstance(item, str):
        return read_rgb(item)
    a = np.asarray(item)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise ValueError(f"{name}: expected a storage URI or an HxWx3 uint8 array, got {a.dtype} {a.shape}")
    return a


# --------------------------------------------------------------------------- source features


class FeatureCache:
    """Source-photo features by (model identity, photo sha256): in memory, and as .npy
    objects under `folder` (a local folder or any storage URI; one sub-folder per model
    identity) when a folder is given."""

    def __init__(self, folder: str | None):
        self.folder = folder
        self._memory: dict[tuple[str, str], np.ndarray] = {}
        self._lock = threading.Lock()

    def _uri(self, identity: str, digest: str) -> str | None:
        if not self.folder:
            return None
        return join(self.folder, sha256(identity.encode())[:16], f"{digest}.npy")

    def get(self, identity: str, digest: str) -> np.ndarray | None:
        hit = self._memory.get((identity, digest))
        if hit is None:
            uri = self._uri(identity, digest)
            if uri is not None and exists(uri):
                try:
                    hit = np.load(io.BytesIO(read_bytes(uri)), allow_pickle=False)
                except (OSError, ValueError, EOFError, BadInput):  # torn or vanished: recompute
                    return None
                with self._lock:
                    self._memory[(identity, digest)] = hit
        return hit

    def put(self, identity: str, digest: str, feature: np.ndarray) -> None:
        feature = np.asarray(feature, dtype=np.float32)
        with self._lock:
            self._memory[(identity, digest)] = feature
        uri = self._uri(identity, digest)
        if uri is not None:
            buf = io.BytesIO()
            np.save(buf, feature)
            write_bytes(uri, buf.getvalue())  # atomic on local disks, whole-object on S3


_CACHES: dict[str | None, FeatureCache] = {}


def feature_cache(folder: str | None) -> FeatureCache:
    """One cache object per folder per process (its memory part is shared by all calls)."""
    key = resolve(folder) if folder else None
    if key not in _CACHES:
        _CACHES[key] = FeatureCache(key)
    return _CACHES[key]


def source_features(sources: Mapping[str, Sequence[Any]], clip: Any, cache: FeatureCache) -> dict[str, np.ndarray]:
    """concept id -> (n_photos, D) CLIP features of its source photos (URIs or arrays)."""
    digests: dict[str, list[str]] = {}
    todo: dict[str, np.ndarray] = {}
    for concept, photos in sources.items():
        if not photos:
            raise ValueError(f"sources[{concept!r}]: no source photos")
        digests[concept] = []
        for k, photo in enumerate(photos):
            if isinstance(photo, str):
                data = read_input(photo)
                digest = sha256(data)
                pixels = lambda d=data, u=photo: to_rgb_alpha(decode_image(d, u))[0]  # noqa: E731
            else:
                arr = _image(photo, f"sources[{concept!r}][{k}]")
                digest = sha256(np.ascontiguousarray(arr).tobytes() + str(arr.shape).encode())
                pixels = lambda a=arr: a  # noqa: E731
            digests[concept].append(digest)
            if digest not in todo and cache.get(clip.identity, digest) is None:
                todo[digest] = pixels()
    if todo:
        feats = clip.image_features(list(todo.values()))
        for digest, f in zip(todo, feats):
            cache.put(clip.identity, digest, f)
    return {c: np.stack([cache.get(clip.identity, d) for d in ds]) for c, ds in digests.items()}


# --------------------------------------------------------------------------- scoring


def _assign(group: list[str], dets: list[Detection | None], crop_feats: dict[int, np.ndarray],
            feats: dict[str, np.ndarray]) -> list[int | None]:
    """For concepts sharing a category: which detection goes to which concept (indices
    into dets), maximising the sum of own similarities over the detected ones."""
    found = [k for k, d in enumerate(dets) if d is not None]
    if len(group) == 1 or len(found) == 0:
        return [k if dets[k] is not None else None for k in range(len(group))]
    best, best_total = None, -np.inf
    for perm in itertools.permutations(range(len(group)), len(found)):
        total = sum(float((feats[group[p]] @ crop_feats[k]).mean()) for k, p in zip(found, perm))
        if total > best_total:
            best, best_total = perm, total
    out: list[int | None] = [None] * len(group)
    for k, p in zip(found, best):
        out[p] = k
    return out


def ensure_weights(vision_options: Mapping[str, Any] | None) -> None:
    """hf.WeightsMissing now, naming what is missing and the fixes, unless both scoring models'
    weights are there to load (CLIP through open_clip, OWL-ViT through transformers); nothing
    loads. The evaluate flow calls it before sampling, which would otherwise come first."""
    from gen4gen.models import hf
    from gen4gen.models.score.vision import CLIP_DEFAULTS, OWLVIT_DEFAULT, clip_weights

    options = dict(vision_options or {})
    clip, owl = options.get("clip") or {}, options.get("owlvit") or {}
    clip_weights(clip.get("model", CLIP_DEFAULTS["model"]), clip.get("pretrained", CLIP_DEFAULTS["pretrained"]))
    hf.source({"model": owl.get("model", OWLVIT_DEFAULT), "revision": owl.get("revision")}, what="vision.owlvit")


def score_images(images: Sequence[Any], concepts_per_image: Sequence[Sequence[Any]], prompts: Sequence[str],
                 sources: Mapping[str, Sequence[Any]], vision_options: Mapping[str, Any] | None = None,
                 *, threshold: float | None = None) -> list[ImageScore]:
    """One ImageScore per image.

    images: storage URIs or HxWx3 uint8 arrays. concepts_per_image: for each image, its
    concepts (records or dicts with id, category, token). prompts: the prompt each image
    was generated from. sources: concept id -> source photos (URIs or arrays).
    vision_options: {"clip": {...}, "owlvit": {...}, "feature_cache": folder or None}.
    threshold: the detection threshold, overriding the OWL-ViT option.
    """
    if not len(images) == len(concepts_per_image) == len(prompts):
        raise ValueError(
            f"score_images: {len(images)} images, {len(concepts_per_image)} concept lists and "
            f"{len(prompts)} prompts: one of each per image"
        )
    options = dict(vision_options or {})
    clip = registry.load("vision", "clip", options.get("clip") or {})
    owl = registry.load("vision", "owlvit", options.get("owlvit") or {})
    cache = feature_cache(options.get("feature_cache"))

    ids_per_image = [[_field(c, "id") for c in cs] for cs in concepts_per_image]
    for k, ids in enumerate(ids_per_image):
        if not ids or len(ids) != len(set(ids)):
            raise ValueError(f"concepts_per_image[{k}]: need distinct concepts, got {ids}")
    needed = sorted({c for ids in ids_per_image for c in ids})
    missing = [c for c in needed if c not in sources]
    if missing:
        raise ValueError(f"sources: no source photos for concept(s) {missing}")
    feats = source_features({c: sources[c] for c in needed}, clip, cache)

    results: list[ImageScore] = []
    for start in range(0, len(images), IMAGE_CHUNK):
        stop = min(start + IMAGE_CHUNK, len(images))
        results += _score_chunk(
            [_image(images[k], f"images[{k}]") for k in range(start, stop)],
            concepts_per_image[start:stop], prompts[start:stop], feats, clip, owl, threshold,
        )
    return results


def _score_chunk(pixels, concepts_per_image, prompts, feats, clip, owl, threshold) -> list[ImageScore]:
    categories = [[_field(c, "category") for c in cs] for cs in concepts_per_image]
    detections = owl.detect(pixels, categories, threshold=threshold)
    crops, where = [], []  # where[n] = (image, position in its concept list)
    for i, dets in enumerate(detections):
        for k, d in enumerate(dets):
            if d is not None:
                crops.append(d.crop(pixels[i]))
                where.append((i, k))
    crop_feats = dict(zip(where, clip.image_features(crops))) if crops else {}
    texts = [scene_text(p, [_field(c, "token") for c in cs]) for p, cs in zip(prompts, concepts_per_image)]
    image_feats = clip.image_features(pixels)
    text_feats = clip.text_features(texts)

    out = []
    for i, cs in enumerate(concepts_per_image):
        ids = [_field(c, "id") for c in cs]
        image_sources = {c: feats[c] for c in ids}
        # Concepts of one category share the word's boxes: give each box to the concept
        # it resembles most (the detector cannot tell two dogs apart by their word).
        chosen: dict[str, int | None] = {}
        for category in dict.fromkeys(categories[i]):
            group = [k for k, cat in enumerate(categories[i]) if cat == category]
            dets = [detections[i][k] for k in group]
            local = {n: crop_feats[(i, group[n])] for n, d in enumerate(dets) if d is not None}
            for n, pick in enumerate(_assign([ids[k] for k in group], dets, local, feats)):
                chosen[ids[group[n]]] = None if pick is None else group[pick]
        per: dict[str, ConceptScore] = {}
        crops_for_metric: dict[str, np.ndarray | None] = {}
        for c in ids:
            k = chosen[c]
            if k is None:
                per[c] = ConceptScore(detected=False)
                crops_for_metric[c] = None
                continue
            d, f = detections[i][k], crop_feats[(i, k)]
            matched, sim = metrics.best_match(f, image_sources, f"crop of {c}")
            own = metrics.similarities(f, {c: image_sources[c]}, f"crop of {c}")[c]
            per[c] = ConceptScore(detected=True, score=round(d.score, 6), box=tuple(round(v, 2) for v in d.box),
                                  own_similarity=own, similarity=sim, matched=matched)
            crops_for_metric[c] = f
        out.append(ImageScore(
            cp_clip=metrics.cp_clip(crops_for_metric, image_sources),
            ti_clip=metrics.ti_clip(image_feats[i], text_feats[i]),
            text=texts[i],
            concepts=per,
        ))
    return out
