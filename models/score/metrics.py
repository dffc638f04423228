"""CP-CLIP and TI-CLIP (DESIGN.md §6) as pure functions of feature vectors, plus a bootstrap.

No model here: the callers (models/score/score.py) run OWL-ViT and CLIP and pass features in, so
every number can be checked by hand.

CP-CLIP for one image whose concept set O' has |O'| concepts:
  S_ij = mean over concept j's source photos x of cos(crop_i, x)
  S_i  = max over j of S_ij            (a crop is credited with the concept it looks most like)
  CP   = sum over detected crops of S_i / |O'|   (an undetected concept adds 0)
TI-CLIP: cos(image, text). Raw cosines in [-1, 1], never scaled by 100.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

ArrayLike = Sequence[float] | np.ndarray


def _vector(value: ArrayLike, name: str) -> np.ndarray:
    v = np.asarray(value, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D feature vector, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name}: feature holds NaN or infinite values")
    norm = float(np.linalg.norm(v))
    if norm == 0.0:
        raise ValueError(f"{name}: feature is all zeros (no direction to compare)")
    return v / norm


def _matrix(values: Sequence[ArrayLike] | np.ndarray, name: str) -> np.ndarray:
    rows = [_vector(v, f"{name}[{k}]") for k, v in enumerate(values)]
    if not rows:
        raise ValueError(f"{name}: no source photo features (each concept needs at least one)")
    dims = {r.size for r in rows}
    if len(dims) > 1:
        raise ValueError(f"{name}: features of different dimensions {sorted(dims)}")
    return np.stack(rows)


def cosine(a: ArrayLike, b: ArrayLike, names: tuple[str, str] = ("a", "b")) -> float:
    va, vb = _vector(a, names[0]), _vector(b, names[1])
    if va.size != vb.size:
        raise ValueError(f"{names[0]} has dimension {va.size} but {names[1]} has {vb.size}")
    return float(np.clip(va @ vb, -1.0, 1.0))


def similarities(crop: ArrayLike, sources: Mapping[str, Sequence[ArrayLike]], name: str = "crop") -> dict[str, float]:
    """S_ij for one crop i: concept j -> mean cosine of the crop with j's source photos."""
    v = _vector(crop, name)
    out = {}
    for concept, feats in sources.items():
        m = _matrix(feats, f"sources[{concept!r}]")
        if m.shape[1] != v.size:
            raise ValueError(f"{name} has dimension {v.size} but sources[{concept!r}] has {m.shape[1]}")
        out[concept] = float(np.clip(m @ v, -1.0, 1.0).mean())
    return out


def best_match(crop: ArrayLike, sources: Mapping[str, Sequence[ArrayLike]], name: str = "crop") -> tuple[str, float]:
    """(j, S_i): the concept the crop looks most like and that similarity (ties: first listed)."""
    sims = similarities(crop, sources, name)
    if not sims:
        raise ValueError("sources: no concepts to compare with")
    j = max(sims, key=lambda k: sims[k])  # max() keeps the first of equal keys
    return j, sims[j]


def cp_clip(crops: Mapping[str, ArrayLike | None], sources: Mapping[str, Sequence[ArrayLike]]) -> float:
    """CP-CLIP of one image.

    crops: each concept label of the image -> feature of its best detected crop, or None
    when the detector found nothing above its threshold (that concept then adds 0).
    sources: each concept label -> features of its source photos. Labels must match.
    """
    if not crops:
        raise ValueError("crops: the image has no concepts (|O'| = 0)")
    missing = sorted(set(crops) - set(sources))
    if missing:
        raise ValueError(f"sources: no source photos for concept(s) {missing}")
    # Validate every source list even when no crop was detected: a bad input is an error
    # whatever the detector did.
    for concept in crops:
        _matrix(sources[concept], f"sources[{concept!r}]")
    total = 0.0
    for concept, feat in crops.items():
        if feat is None:
            continue
        total += best_match(feat, {c: sources[c] for c in crops}, f"crops[{concept!r}]")[1]
    return total / len(crops)


def ti_clip(image_feature: ArrayLike, text_feature: ArrayLike) -> float:
    """TI-CLIP: cosine of the image feature with the scene text's feature."""
    return cosine(image_feature, text_feature, ("image_feature", "text_feature"))


def bootstrap(values: Sequence[float], n: int = 2000, seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """Mean of `values` and a percentile bootstrap interval, reproducible by `seed`.

    Returns {"mean", "low", "high", "n"}; one value gives a zero-width interval.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"values: expected a non-empty list of numbers, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("values: NaN or infinite score")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level {level} must lie strictly between 0 and 1")
    if n < 1:
        raise ValueError(f"n {n}: need at least one resample")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n, x.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return {"mean": float(x.mean()), "low": float(low), "high": float(high), "n": int(x.size)}
