"""The offline layout planner: the paper's LLM layout step done with priors and sampling.

What the paper asks an LLM for, this planner derives from tables:
- real-world size ratios: the largest object 1.0, the smallest about 0.4 (log-height scale);
- boxes that do not overlap more than a set IoU, objects standing on the ground below the
  scene's horizon, each box shaped like its object (the cut-out's aspect ratio);
- the smallest box covers at least (H/5)^2 for up to 3 objects, (H/6)^2 for 4 and (H/8)^2
  for 5, as the reference code's post-processing does;
- a background scene from the library keyed by category (models/scenes.py).
Everything is drawn from a seeded generator, so the same seed gives the same layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gen4gen.models.scenes import DEFAULT_SCENES, scenes_for
from gen4gen.models.scenes import scene as scene_of
from gen4gen.infra.records import box_iou
from gen4gen.models.contracts import Layout, LayoutRequest, PlannedObject

# Category -> (typical real-world height in metres, width / height of the object).
# Only the ratios between categories matter; unknown categories get DEFAULT_PRIOR.
SIZE_PRIORS: dict[str, tuple[float, float]] = {
    "person": (1.7, 0.45),
    "astronaut": (1.8, 0.5),
    "motorcycle": (1.1, 1.5),
    "bicycle": (1.0, 1.6),
    "dog": (0.6, 1.2),
    "cat": (0.3, 1.3),
    "plant": (0.6, 0.7),
    "houseplant": (0.6, 0.7),
    "chair": (0.9, 0.8),
    "rocket": (1.5, 0.3),  # a model rocket: a tall, thin toy rather than a launch vehicle
    "teddybear": (0.4, 0.8),
    "backpack": (0.5, 0.7),
    "mug": (0.1, 1.2),
    "cup": (0.1, 1.2),
    "vase": (0.3, 0.6),
    "sunglasses": (0.05, 2.5),
}
DEFAULT_PRIOR = (0.5, 1.0)
SMALLEST_RATIO = 0.4  # the paper: largest object 1.0, smallest 0.4
MIN_SIDE_DIVISOR = {2: 5, 3: 5, 4: 6, 5: 8}  # smallest box >= (H/d)^2
# Height of the largest box over the canvas, by number of objects (room for the rest).
LARGEST_HEIGHT = {2: 0.62, 3: 0.55, 4: 0.5, 5: 0.46}


def size_ratios(categories: list[str]) -> list[float]:
    """Relative sizes: 1.0 for the tallest, SMALLEST_RATIO for the shortest, log-scaled."""
    heights = [math.log(SIZE_PRIORS.get(c.lower(), DEFAULT_PRIOR)[0]) for c in categories]
    lo, hi = min(heights), max(heights)
    if hi - lo < 1e-9:
        return [1.0] * len(categories)
    return [SMALLEST_RATIO + (1 - SMALLEST_RATIO) * (h - lo) / (hi - lo) for h in heights]


def category_aspect(category: str) -> float:
    return SIZE_PRIORS.get(category.lower(), DEFAULT_PRIOR)[1]


class OfflinePlanner:
    """Heuristic layouts: size priors, non-overlapping boxes on the ground, seeded."""

    name = "offline"

    def __init__(self, attempts: int = 200, jitter: float = 0.1):
        self.attempts = attempts
        self.jitter = jitter

    def plan_batch(self, requests: list[LayoutRequest]) -> list[Layout]:
        return [Layout(self.layout(list(r.objects), r.canvas, r.scene, r.max_iou, r.seed), self.name) for r in requests]

    def layout(
        self,
        objects: list[PlannedObject],
        canvas: int,
        scene: str,
        max_iou: float,
        seed: int,
        ratios: list[float] | None = None,
    ) -> list[tuple[int, int, int, int]]:
        """Boxes (x, y, w, h) in canvas pixels, one per object, in the objects' order.

        `ratios`: relative sizes (largest 1.0) from elsewhere (an LLM's ranking); default:
        the size table's."""
        n = len(objects)
        rng = np.random.default_rng(seed)
        horizon = scene_of(scene).horizon * canvas
        if ratios is not None and len(ratios) != n:
            raise ValueError(f"ratios: {len(ratios)} given for {n} objects")
        ratios = ratios if ratios is not None else self.size_ratios(objects)
        largest = LARGEST_HEIGHT.get(n, 0.42) * canvas * (1 + self.jitter * rng.uniform(-1, 1))
        min_area = (canvas / MIN_SIDE_DIVISOR.get(n, 8)) ** 2

        scale = 1.0
        for _ in range(40):  # shrink until a layout fits
            sizes = [self._box_size(largest * scale * r, o.aspect, canvas) for o, r in zip(objects, ratios)]
            # The paper's rule: scale everything up until the smallest box is big enough.
            small = min(w * h for w, h in sizes)
            if small < min_area and scale >= 1.0:
                up = math.sqrt(min_area / small)
                sizes = [self._box_size(h * up, w / h, canvas) for w, h in sizes]
            boxes = self._place(sizes, canvas, horizon, max_iou, rng)
            if boxes is not None:
                return boxes
            scale *= 0.93
        raise ValueError(
            f"no layout of {n} objects fits a {canvas}px canvas with max IoU {max_iou}"
        )

    @staticmethod
    def size_ratios(objects: list[PlannedObject]) -> list[float]:
        return size_ratios([o.category for o in objects])

    @staticmethod
    def scenes(objects: list[PlannedObject], count: int, seed: int = 0) -> list[str]:
        """The library's `count` best scenes for these categories (seed unused: a table)."""
        ranked = scenes_for([o.category for o in objects])
        ranked += [s for s in DEFAULT_SCENES if s not in ranked]
        return ranked[:count]

    @staticmethod
    def _box_size(height: float, aspect: float, canvas: int) -> tuple[int, int]:
        w, h = height * aspect, height
        # Wide objects are capped by the canvas width, keeping the aspect ratio.
        limit = 0.9 * canvas
        if w > limit:
            w, h = limit, limit / aspect
        if h > limit:
            w, h = limit * aspect, limit
        return max(8, round(w)), max(8, round(h))

    def _place(self, sizes, canvas, horizon, max_iou, rng):
        placed: list[tuple[int, int, int, int]] = []
        # Big objects first: they are the hardest to fit. Restore the order at the end.
        order = sorted(range(len(sizes)), key=lambda i: -sizes[i][0] * sizes[i][1])
        result: dict[int, tuple[int, int, int, int]] = {}
        for i in order:
            w, h = sizes[i]
            for _ in range(self.attempts):
                # Objects stand on the ground: the bottom edge lies below the horizon.
                lo_bottom = min(canvas - 1, max(h, horizon + 0.04 * canvas))
                bottom = rng.uniform(lo_bottom, canvas - 0.02 * canvas) if lo_bottom < canvas * 0.98 else canvas
                y = int(round(min(bottom, canvas) - h))
                x = int(round(rng.uniform(0, canvas - w)))
                y = max(0, min(y, canvas - h))
                box = (x, y, w, h)
                if all(box_iou(box, other) <= max_iou for other in placed):
                    placed.append(box)
                    result[i] = box
                    break
            else:
                return None
        return [result[i] for i in range(len(sizes))]

