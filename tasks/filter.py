"""Filter: each image -> keep or drop, with every reason it broke a rule.

Rules (limits in FilterConfig): each object must stay mostly unoccluded and cover a
fair share of its box; the image must not be degenerate (too little contrast, one flat
colour over a large share, black holes in the background); the caption must name every
concept's token. Dropped samples keep their files and their reasons.

Backend "clip" adds model checks after the rules (models/score.py): OWL-ViT looks for each
concept by its category word and CLIP compares the concept's best box with all of the
concept's source photos. A concept whose best box scores at most `detect_threshold` is
`not_detected`; one whose crop's mean cosine with its own photos is under
`min_similarity` is `low_similarity`. The scores are kept in sample.measures
(`detect.<id>`, `similarity.<id>`, `best_similarity.<id>`, `cp_clip`, `ti_clip`) so that a
threshold can be chosen from a run's numbers afterwards.
"""

from __future__ import annotations

import time

import numpy as np
from prefect import task

from gen4gen.infra.caching import STAGE_CACHE
from gen4gen.infra.errors import BadInput
from gen4gen.infra.limits import gpu_slot
from gen4gen.models import registry
from gen4gen.infra.storage import join, read_input, read_mask, read_rgb
from gen4gen.tasks.caption import missing_tokens
from gen4gen.tasks.common import each_sample
from gen4gen.infra.records import Concept, FilterConfig, Reason, Sample

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


def vision_reasons(samples: list[Sample], out: str, limits: FilterConfig, concepts: list[Concept]) -> None:
    """Score the samples that reached the filter and add the model checks' reasons and
    measures (in place; the rules' reasons stay). All samples go through the models as
    one batch."""
    from gen4gen.models.score import score_images

    todo = [s for s in samples if s.status != "failed"]
    if not todo:
        return
    by_id = {c.id: c for c in concepts}
    missing = sorted({c for s in todo for c in s.concepts} - set(by_id))
    if missing:
        raise ValueError(f"filter: no concept records for {missing} (backend 'clip' needs their categories and photos)")
    sources = {}
    for cid in sorted({c for s in todo for c in s.concepts}):
        usable = []
        for photo in by_id[cid].photos:
            try:
                read_input(photo)  # unreadable photos already failed their segmentation
                usable.append(photo)
            except BadInput:
                continue
        sources[cid] = usable
    scorable = [s for s in todo if all(sources[c] for c in s.concepts)]
    for s in todo:
        if not all(sources[c] for c in s.concepts):
            s.fail("no_source_photos", STAGE, f"no readable source photo for {[c for c in s.concepts if not sources[c]]}")
    if not scorable:
        return
    options = {"feature_cache": join(out, ".cache/clip-features"), **limits.vision}
    # Threshold 0: every concept gets its best box, so a miss is reported with its score.
    scores = score_images(
        [join(out, s.paths["repaint"]) for s in scorable],
        [[by_id[c] for c in s.concepts] for s in scorable],
        [s.caption or "" for s in scorable],
        {c: sources[c] for c in {c for s in scorable for c in s.concepts}},
        options,
        threshold=0.0,
    )
    for sample, score in zip(scorable, scores):
        sample.measures["ti_clip"] = round(score.ti_clip, 6)
        found = 0.0
        for cid in sample.concepts:
            c = score.concepts[cid]
            category = by_id[cid].category
            det = c.score or 0.0
            sample.measures[f"detect.{cid}"] = round(det, 6)
            if c.detected:
                sample.measures[f"similarity.{cid}"] = round(c.own_similarity, 6)
                sample.measures[f"best_similarity.{cid}"] = round(c.similarity, 6)
            if not c.detected or det <= limits.detect_threshold:
                sample.drop("not_detected", STAGE,
                            f"{cid}: OWL-ViT's best {category!r} box scores {det:.3f} <= {limits.detect_threshold}")
                continue
            found += c.similarity
            if c.own_similarity < limits.min_similarity:
                like = f"; it looks more like {c.matched} ({c.similarity:.3f})" if c.matched != cid else ""
                sample.drop("low_similarity", STAGE,
                            f"{cid}: crop's similarity to its source photos {c.own_similarity:.3f} < {limits.min_similarity}{like}")
        # CP-CLIP at the filter's own detection threshold (DESIGN.md §6).
        sample.measures["cp_clip"] = round(found / len(sample.concepts), 6)


def filter_samples(samples: list[Sample], out: str, limits: FilterConfig, concepts: list[Concept] | None = None) -> list[Sample]:
    if limits.backend == "clip":
        if concepts is None:
            raise ValueError("filter: backend 'clip' needs the recipe's concepts (categories and photos)")
        samples = filter_samples(samples, out, limits.model_copy(update={"backend": "rules"}))
        start = time.perf_counter()
        vision_reasons(samples, out, limits, concepts)
        spent = (time.perf_counter() - start) / max(1, len(samples))
        for s in samples:  # the batch's time, shared evenly
            s.seconds[STAGE] = round(s.seconds.get(STAGE, 0.0) + spent, 4)
        return samples

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
def filter_task(samples: list[Sample], out: str, limits: FilterConfig, concepts: list[Concept] | None = None) -> list[Sample]:
    with gpu_slot(registry.uses_gpu("filter", limits.backend)):
        return filter_samples(samples, out, limits, concepts)
