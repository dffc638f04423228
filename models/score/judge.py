"""The filter's backends (models/contracts.py: Judge): keep or drop, with every reason.

`rules` (RulesJudge): each object must stay mostly unoccluded and cover a fair share of its
box; the image must not be degenerate (too little contrast, one flat colour over a large
share, black holes in the background); the caption must name every concept's token.

`clip` (ClipJudge): the rules, then OWL-ViT looks for each concept by its category word and
CLIP compares the concept's best box with all of the concept's source photos
(models/score/score.py). A concept whose best box scores at most `detect_threshold` is
`not_detected`; one whose crop's mean cosine with its own photos is under `min_similarity`
is `low_similarity`. The scores go into the measures (`detect.<id>`, `similarity.<id>`,
`best_similarity.<id>`, `cp_clip`, `ti_clip`) so a threshold can be chosen afterwards.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gen4gen.infra.errors import BadInput
from gen4gen.infra.records import Reason
from gen4gen.infra.storage import read_input
from gen4gen.models.contracts import JudgeItem, Verdict

STAGE = "filter"
HOLE_LEVEL = 8  # all channels below this: a black hole the repaint left


def image_reasons(image: np.ndarray, mask: np.ndarray, min_image_std: float, max_flat_share: float,
                  max_hole_share: float, backdrop: np.ndarray | None = None) -> list[Reason]:
    """Reasons a whole image is degenerate (none: it is fine)."""
    reasons = []
    grey = image.astype(np.float32).mean(axis=2)
    std = float(grey.std())
    if std < min_image_std:
        reasons.append(Reason(code="low_contrast", stage=STAGE, detail=f"grey std {std:.1f} < {min_image_std}"))
    # Most frequent exact colour, on a 4x subsample (enough to see a flat fill).
    small = image[::4, ::4].reshape(-1, 3)
    packed = (small[:, 0].astype(np.int64) << 16) | (small[:, 1].astype(np.int64) << 8) | small[:, 2]
    flat = float(np.bincount(np.unique(packed, return_inverse=True)[1]).max() / len(packed))
    if flat > max_flat_share:
        reasons.append(Reason(code="flat", stage=STAGE, detail=f"{flat:.0%} of the image is one colour > {max_flat_share:.0%}"))
    background = mask < 0.5  # a black object is fine; a black background is a hole
    if backdrop is not None:
        background &= backdrop.max(axis=2) >= 2 * HOLE_LEVEL  # ... unless the photo is dark there
    if background.any():
        holes = float((image[background].max(axis=1) < HOLE_LEVEL).mean())
        if holes > max_hole_share:
            reasons.append(Reason(code="holes", stage=STAGE, detail=f"{holes:.1%} of the background is black > {max_hole_share:.1%}"))
    return reasons


def object_reasons(measures: dict[str, float], concepts: list[str], max_occlusion: float,
                   min_visible_area: float) -> list[Reason]:
    reasons = []
    for c in concepts:
        hidden = 1.0 - measures.get(f"visible.{c}", 0.0)
        if hidden > max_occlusion:
            reasons.append(Reason(code="occluded", stage=STAGE, detail=f"{c}: {hidden:.0%} hidden > {max_occlusion:.0%}"))
        area = measures.get(f"area.{c}", 0.0)
        if area < min_visible_area:
            reasons.append(Reason(code="too_small", stage=STAGE, detail=f"{c}: visible area {area:.0%} of its box < {min_visible_area:.0%}"))
    return reasons


def missing_tokens(caption: str, tokens: list[str]) -> list[str]:
    return [t for t in tokens if t not in caption]


class RulesJudge:
    """The rule filter: thresholds only, no model."""

    name = "rules"
    batch_size = 64

    def __init__(self, max_occlusion: float = 0.4, min_visible_area: float = 0.15, min_image_std: float = 12.0,
                 max_flat_share: float = 0.2, max_hole_share: float = 0.01, **model_options: Any):
        if model_options:
            raise ValueError(f"stages.filter (rules): unknown settings {sorted(model_options)}")
        self.max_occlusion, self.min_visible_area = max_occlusion, min_visible_area
        self.min_image_std, self.max_flat_share, self.max_hole_share = min_image_std, max_flat_share, max_hole_share

    def judge_batch(self, items: list[JudgeItem]) -> list[Verdict]:
        return [Verdict(reasons=self.reasons(item)) for item in items]

    def reasons(self, item: JudgeItem) -> list[Reason]:
        ids = [c.id for c in item.concepts]
        reasons = object_reasons(item.measures, ids, self.max_occlusion, self.min_visible_area)
        reasons += image_reasons(item.image, item.mask, self.min_image_std, self.max_flat_share, self.max_hole_share,
                                  item.backdrop)
        missing = missing_tokens(item.caption, item.tokens)
        if missing:
            reasons.append(Reason(code="caption", stage=STAGE, detail=f"caption names no {missing}"))
        return reasons


class ClipJudge:
    """The rules, then OWL-ViT + CLIP per concept (one model batch for the whole call)."""

    name = "clip"

    def __init__(self, detect_threshold: float = 0.1, min_similarity: float = 0.6,
                 vision: dict[str, Any] | None = None, batch_size: int = 32, **rules: Any):
        self.rules = RulesJudge(**rules)
        self.detect_threshold, self.min_similarity = detect_threshold, min_similarity
        self.vision = dict(vision or {})
        self.batch_size = batch_size

    def judge_batch(self, items: list[JudgeItem]) -> list[Verdict]:
        from gen4gen.models.score.score import score_images

        verdicts = [Verdict(reasons=self.rules.reasons(item)) for item in items]
        sources = self._readable_sources(items)
        scorable = []
        for item, verdict in zip(items, verdicts):
            empty = [c.id for c in item.concepts if not sources[c.id]]
            if empty:
                verdict.failed = Reason(code="no_source_photos", stage=STAGE,
                                        detail=f"no readable source photo for {empty}")
            else:
                scorable.append((item, verdict))
        if not scorable:
            return verdicts
        # Threshold 0: every concept gets its best box, so a miss is reported with its score.
        scores = score_images(
            [item.image_uri for item, _ in scorable], [item.concepts for item, _ in scorable],
            [item.caption for item, _ in scorable],
            {c.id: sources[c.id] for item, _ in scorable for c in item.concepts}, self.vision, threshold=0.0,
        )
        for (item, verdict), score in zip(scorable, scores):
            self._judge(item, verdict, score)
        return verdicts

    def _judge(self, item: JudgeItem, verdict: Verdict, score) -> None:
        m = verdict.measures
        m["ti_clip"] = round(score.ti_clip, 6)
        found = 0.0
        for concept in item.concepts:
            cid, c = concept.id, score.concepts[concept.id]
            det = c.score or 0.0
            m[f"detect.{cid}"] = round(det, 6)
            if c.detected:
                m[f"similarity.{cid}"] = round(c.own_similarity, 6)
                m[f"best_similarity.{cid}"] = round(c.similarity, 6)
            if not c.detected or det <= self.detect_threshold:
                verdict.reasons.append(Reason(
                    code="not_detected", stage=STAGE,
                    detail=f"{cid}: OWL-ViT's best {concept.category!r} box scores {det:.3f} <= {self.detect_threshold}"))
                continue
            found += c.similarity
            if c.own_similarity < self.min_similarity:
                like = f"; it looks more like {c.matched} ({c.similarity:.3f})" if c.matched != cid else ""
                verdict.reasons.append(Reason(
                    code="low_similarity", stage=STAGE,
                    detail=f"{cid}: crop's similarity to its source photos {c.own_similarity:.3f} < {self.min_similarity}{like}"))
        # CP-CLIP at the filter's own detection threshold (DESIGN.md §6).
        m["cp_clip"] = round(found / len(item.concepts), 6)

    @staticmethod
    def _readable_sources(items: list[JudgeItem]) -> dict[str, list[str]]:
        sources: dict[str, list[str]] = {}
        for item in items:
            for c in item.concepts:
                if c.id in sources:
                    continue
                usable = []
                for photo in c.photos:
                    try:
                        read_input(photo)  # unreadable photos already failed their segmentation
                        usable.append(photo)
                    except BadInput:
                        continue
                sources[c.id] = usable
        return sources
