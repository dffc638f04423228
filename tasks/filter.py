"""Filter: each image -> keep or drop, with every reason it broke a rule.

Rules (limits in FilterConfig): each object must stay mostly unoccluded and cover a
fair share of its box; the image must not be degenerate (too little contrast, one flat
colour over a large share, black holes in the background); the caption must name every
concept's token. Dropped samples keep their files and their reasons.
"""

from __future__ import annotations

import numpy as np
from prefect import task

from infra.caching import STAGE_CACHE
from infra.storage import join, read_mask, read_rgb
from infra.limits import gpu_slot
from tasks.caption import missing_tokens
from tasks.common import each_sample
from tasks.records import FilterConfig, Reason, Sample

STAGE = "filter"
HOLE_LEVEL = 8  # all channels below this: a black hole the repaint left


def image_reasons(image: np.ndarray, mask: np.ndarray, limits: FilterConfig) -> list[Reason]:
    """Reasons a whole image is degenerate (none: it is fine)."""
    reasons = []
    grey = image.astype(np.float32).mean(axis=2)
    std = float(grey.std())
    if std < limits.min_image_std:
        reasons.append(Reason(code="low_contrast", stage=STAGE, detail=f"grey std {std:.1f} < {limits.min_image_std}"))
    # Most frequent exact colour, on a 4x subsample (enough to see a flat fill).
    small = image[::4, ::4].reshape(-1, 3)
    packed = (small[:, 0].astype(np.int64) << 16) | (small[:, 1].astype(np.int64) << 8) | small[:, 2]
    flat = float(np.bincount(np.unique(packed, return_inverse=True)[1]).max() / len(packed))
    if flat > limits.max_flat_share:
        reasons.append(Reason(code="flat", stage=STAGE, detail=f"{flat:.0%} of the image is one colour > {limits.max_flat_share:.0%}"))
    background = mask < 0.5  # a black object is fine; a black background is a hole
    if background.any():
        holes = float((image[background].max(axis=1) < HOLE_LEVEL).mean())
        if holes > limits.max_hole_share:
            reasons.append(Reason(code="holes", stage=STAGE, detail=f"{holes:.1%} of the background is black > {limits.max_hole_share:.1%}"))
    return reasons


def object_reasons(measures: dict[str, float], concepts: list[str], limits: FilterConfig) -> list[Reason]:
    reasons = []
    for c in concepts:
        hidden = 1.0 - measures.get(f"visible.{c}", 0.0)
        if hidden > limits.max_occlusion:
            reasons.append(Reason(code="occluded", stage=STAGE, detail=f"{c}: {hidden:.0%} hidden > {limits.max_occlusion:.0%}"))
        area = measures.get(f"area.{c}", 0.0)
        if area < limits.min_visible_area:
            reasons.append(Reason(code="too_small", stage=STAGE, detail=f"{c}: visible area {area:.0%} of its box < {limits.min_visible_area:.0%}"))
    return reasons


def filter_samples(samples: list[Sample], out: str, limits: FilterConfig) -> list[Sample]:
    def one(sample: Sample) -> None:
        image = read_rgb(join(out, sample.paths["repaint"]))
        mask = read_mask(join(out, sample.paths["mask"]))
        reasons = object_reasons(sample.measures, sample.concepts, limits) + image_reasons(image, mask, limits)
        missing = missing_tokens(sample.caption or "", sample.tokens)
        if missing:
            reasons.append(Reason(code="caption", stage=STAGE, detail=f"caption names no {missing}"))
        if reasons:
            sample.status = "dropped"
            sample.reasons.extend(reasons)
        else:
            sample.status = "kept"

    return each_sample(samples, STAGE, one)


@task(name="filter", cache_policy=STAGE_CACHE, persist_result=True)
def filter_task(samples: list[Sample], out: str, limits: FilterConfig) -> list[Sample]:
    with gpu_slot("filter", limits.backend):
        return filter_samples(samples, out, limits)
