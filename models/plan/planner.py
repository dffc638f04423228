"""The offline layout planner: the paper's LLM layout step done with priors and sampling.

What the paper asks an LLM for, this planner derives from tables:
- real-world size ratios: each object's longest side from its category's typical size
  (models/plan/sizes.csv, or the recipe's own `size`), over the largest's, no smaller than 0.4
  (the paper's range: largest 1.0, smallest 0.4); the plan records which rule sized a box;
- boxes that do not overlap more than a set IoU, objects standing on the ground below the
  scene's horizon, each box shaped like its object (the cut-out's aspect ratio);
- the smallest box covers at least (H/5)^2 for up to 3 objects, (H/6)^2 for 4 and (H/8)^2
  for 5, as the reference code's post-processing does;
- a background scene from the library keyed by category (models/scenes.py).
Everything is drawn from a seeded generator, so the same seed gives the same layout.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from importlib import resources

import numpy as np

from gen4gen.models.scenes import DEFAULT_SCENES, scenes_for
from gen4gen.models.scenes import scene as scene_of
from gen4gen.infra.records import box_iou
from gen4gen.models.backgrounds import Ground
from gen4gen.models.contracts import Box, Layout, LayoutRequest, PlannedObject

SMALLEST_RATIO = 0.4  # the paper: largest object 1.0, smallest 0.4
MIN_SIDE_DIVISOR = {2: 5, 3: 5, 4: 6, 5: 8}  # smallest box >= (H/d)^2
# Longer side of the largest box over the canvas, by number of objects (room for the rest).
LARGEST_SIDE = {2: 0.7, 3: 0.62, 4: 0.56, 5: 0.5}
MAX_SIDE = 0.9  # no box side beyond this share of the canvas
# On a background photo, planned sizes are those of an object halfway into the scene's depth
# (Ground.depth_scale there); nearer objects come out larger, farther ones smaller.
MIDDLE_SCALE = 0.8
# The largest object's longer side at middle depth on a background photo, by object count:
# an object a person photographs in a room or a garden fills about a third of the frame.
PHOTO_LARGEST_SIDE = {2: 0.42, 3: 0.4, 4: 0.36, 5: 0.33}


@dataclass(frozen=True)
class SizePrior:
    """A category's typical real-world size (models/plan/sizes.csv, with its source)."""

    category: str
    longest_m: float  # its longest side, in metres
    aspect: float  # width / height, upright as photographed
    source: str


def _read_sizes() -> dict[str, SizePrior]:
    text = (resources.files("gen4gen.models.plan") / "sizes.csv").read_text(encoding="utf-8")
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    return {r["category"]: SizePrior(r["category"], float(r["longest_m"]), float(r["aspect"]), r["source"])
            for r in rows}


SIZES: dict[str, SizePrior] = _read_sizes()
# An unknown category: a middling household object, square (a neutral size and shape).
NEUTRAL = SizePrior("unknown", 0.4, 1.0, "neutral")


def size_prior(category: str) -> SizePrior | None:
    """The size prior of a category word: the whole phrase, else its last word ("pink
    sunglasses" -> sunglasses), singular or plural; None when the table does not know it."""
    words = re.findall(r"[a-z]+", category.lower())
    for name in (" ".join(words), words[-1] if words else ""):
        for candidate in (name, name[:-1] if name.endswith("s") else name, name[:-2] if name.endswith("es") else name):
            if candidate in SIZES:
                return SIZES[candidate]
    return None


def object_size(obj: PlannedObject) -> tuple[float, str]:
    """(longest side in metres, the rule that gave it): the recipe's own size for the
    concept, else its category's prior, else the neutral size."""
    if obj.size is not None:
        return obj.size, f"recipe size {obj.size:g} m"
    prior = size_prior(obj.category)
    if prior is not None:
        return prior.longest_m, f"prior {prior.category} {prior.longest_m:g} m"
    return NEUTRAL.longest_m, f"neutral {NEUTRAL.longest_m:g} m (no prior for {obj.category!r})"


def size_ratios_of(objects: list[PlannedObject]) -> list[float]:
    """Relative sizes (largest 1.0): real-world longest sides over the largest's, brought
    into the paper's range (smallest 0.4) when they span more, by a power that keeps their
    order: a mug beside a motorcycle stays visible and still smaller than a cat."""
    sizes = [object_size(o)[0] for o in objects]
    raw = [s / max(sizes) for s in sizes]
    low = min(raw)
    k = math.log(SMALLEST_RATIO) / math.log(low) if low < SMALLEST_RATIO else 1.0
    return [r**k for r in raw]


def size_ratios(categories: list[str]) -> list[float]:
    """size_ratios_of for bare category words (no recipe sizes)."""
    return size_ratios_of([PlannedObject(c, c, 1.0) for c in categories])


def category_aspect(category: str) -> float:
    return (size_prior(category) or NEUTRAL).aspect


def sizing_rules(objects: list[PlannedObject]) -> list[str]:
    """What sized each object's box, for the plan record."""
    sizes = [object_size(o) for o in objects]
    span = min(m for m, _ in sizes) / max(m for m, _ in sizes)
    note = f", within the paper's {SMALLEST_RATIO:g}-1 range" if span < SMALLEST_RATIO else ""
    return [rule + note for _, rule in sizes]


def repair_sizes(boxes: list[Box], objects: list[PlannedObject], canvas: int,
                 tolerance: float = 1.5) -> tuple[list[Box], list[str]]:
    """Boxes from elsewhere (an LLM) checked against the size prior, and repaired when far off.

    The reference is the box of the object the prior calls largest; a box whose longer side
    is more than `tolerance` times off what the prior expects relative to it is resized to
    the expected side around its bottom centre (objects stand on the ground), kept on the
    canvas. Returns the boxes and, per box, the rule that sized it.
    """
    ratios = size_ratios_of(objects)
    ref = int(np.argmax(ratios))
    ref_side = max(boxes[ref][2], boxes[ref][3])
    out, rules = [], []
    for i, ((x, y, w, h), o, r) in enumerate(zip(boxes, objects, ratios)):
        want = ref_side * r / ratios[ref]
        have = max(w, h)
        if i == ref or 1 / tolerance <= have / want <= tolerance:
            out.append((x, y, w, h))
            rules.append("llm")
            continue
        k = want / have
        nw, nh = max(8, round(w * k)), max(8, round(h * k))
        nw, nh = min(nw, canvas), min(nh, canvas)
        nx = int(round(min(max(0, x + w / 2 - nw / 2), canvas - nw)))
        ny = int(round(min(max(0, y + h - nh), canvas - nh)))
        out.append((nx, ny, nw, nh))
        rules.append(f"llm, repaired to {object_size(o)[1]} (was {have / want:.1f}x the prior's size)")
    return out, rules


class OfflinePlanner:
    """Heuristic layouts: size priors, non-overlapping boxes on the ground, seeded."""

    name = "offline"

    def __init__(self, attempts: int = 200, jitter: float = 0.1):
        self.attempts = attempts
        self.jitter = jitter

    def plan_batch(self, requests: list[LayoutRequest]) -> list[Layout]:
        return [Layout(self.layout(list(r.objects), r.canvas, r.scene, r.max_iou, r.seed, ground=r.ground),
                       self.name, sizing=sizing_rules(list(r.objects))) for r in requests]

    def layout(
        self,
        objects: list[PlannedObject],
        canvas: int,
        scene: str,
        max_iou: float,
        seed: int,
        ratios: list[float] | None = None,
        ground: Ground | None = None,
    ) -> list[tuple[int, int, int, int]]:
        """Boxes (x, y, w, h) in canvas pixels, one per object, in the objects' order.

        `ratios`: relative sizes (largest 1.0) from elsewhere (an LLM's ranking); default:
        the size table's. `ground`: a background photo's ground (models/backgrounds.py):
        every base stands on it, farther objects smaller and higher (`_place_on_ground`)."""
        n = len(objects)
        rng = np.random.default_rng(seed)
        horizon = scene_of(scene).horizon * canvas
        if ratios is not None and len(ratios) != n:
            raise ValueError(f"ratios: {len(ratios)} given for {n} objects")
        ratios = ratios if ratios is not None else self.size_ratios(objects)
        table = PHOTO_LARGEST_SIDE if ground is not None else LARGEST_SIDE
        largest = table.get(n, 0.3) * canvas * (1 + self.jitter * rng.uniform(-1, 1))
        # In a photo of a place, objects at the paper's sizes tower over the room or the
        # garden: half its minimum area there, sizes by depth doing the rest.
        min_area = (canvas / MIN_SIDE_DIVISOR.get(n, 8)) ** 2 * (0.5 if ground is not None else 1.0)

        sides = [largest * r for r in ratios]
        first = [self._box_size(side, o.aspect) for side, o in zip(sides, objects)]
        # The paper's rule: scale everything up until the smallest box is big enough, but
        # never past MAX_SIDE: the sizes between objects win over the minimum area.
        up = max(1.0, math.sqrt(min_area / min(w * h for w, h in first)))
        up = min(up, MAX_SIDE * canvas / max(max(wh) for wh in first))
        sides = [side * up for side in sides]
        scale = 1.0
        for _ in range(40):  # shrink (all boxes alike: their ratios stay) until a layout fits
            sizes = [self._box_size(s * scale, o.aspect) for s, o in zip(sides, objects)]
            cap = MAX_SIDE * canvas / max(max(wh) for wh in sizes)
            if cap < 1.0:  # a box past the canvas: every box shrinks with it
                sizes = [self._box_size(s * scale * cap, o.aspect) for s, o in zip(sides, objects)]
            if ground is not None:
                boxes = self._place_on_ground(sizes, [o.cut for o in objects], ground, max_iou, rng)
            else:
                boxes = self._place(sizes, canvas, horizon, max_iou, rng)
            if boxes is not None:
                return boxes
            scale *= 0.93
        raise ValueError(
            f"no layout of {n} objects fits a {canvas}px canvas with max IoU {max_iou}"
        )

    @staticmethod
    def size_ratios(objects: list[PlannedObject]) -> list[float]:
        return size_ratios_of(objects)

    @staticmethod
    def scenes(objects: list[PlannedObject], count: int, seed: int = 0) -> list[str]:
        """The library's `count` best scenes for these categories (seed unused: a table)."""
        ranked = scenes_for([o.category for o in objects])
        ranked += [s for s in DEFAULT_SCENES if s not in ranked]
        return ranked[:count]

    @staticmethod
    def _box_size(longest: float, aspect: float) -> tuple[int, int]:
        """(w, h) of a box whose longer side is `longest`, shaped like its object."""
        w, h = (longest, longest / aspect) if aspect >= 1 else (longest * aspect, longest)
        return max(8, round(w)), max(8, round(h))

    def _place_on_ground(self, sizes, cuts, ground: Ground, max_iou, rng):
        """Boxes standing on a photo's ground. `sizes` are the sizes at middle depth
        (MIDDLE_SCALE); an object's base row is drawn between the far end of the ground and
        the canvas's bottom, its size follows its depth (Ground.depth_scale), its whole base
        must lie on ground, and an object its photo cut off enters from that edge: its box
        touches the canvas's edge there (a cut at the bottom: the nearest row)."""
        canvas = ground.side
        margin = 0.01 * canvas  # a base this far inside the ground, not on its very edge

        def propose(i: int, w0: int, h0: int):
            cut = cuts[i]
            bottom = canvas if "bottom" in cut else rng.uniform(ground.horizon + margin, canvas - margin)
            k = ground.depth_scale(bottom) / MIDDLE_SCALE
            w, h = max(8, round(w0 * k)), max(8, round(h0 * k))
            if w > canvas or h > bottom:
                return None
            x = 0 if "left" in cut else canvas - w if "right" in cut else int(round(rng.uniform(0, canvas - w)))
            if "bottom" not in cut and bottom < ground.top_at(x, x + w) + margin:
                return None  # some of the base would stand on the wall or in the sky
            return (x, int(round(bottom)) - h, w, h)

        return self._place_each(sizes, max_iou, propose)

    def _place(self, sizes, canvas, horizon, max_iou, rng):
        def propose(i: int, w: int, h: int):
            # Objects stand on the ground: the bottom edge lies below the horizon.
            lo_bottom = min(canvas - 1, max(h, horizon + 0.04 * canvas))
            bottom = rng.uniform(lo_bottom, canvas - 0.02 * canvas) if lo_bottom < canvas * 0.98 else canvas
            y = int(round(min(bottom, canvas) - h))
            x = int(round(rng.uniform(0, canvas - w)))
            return (x, max(0, min(y, canvas - h)), w, h)

        return self._place_each(sizes, max_iou, propose)

    def _place_each(self, sizes, max_iou, propose):
        """Boxes one object at a time, big ones first (the hardest to fit), each from up to
        `attempts` of `propose(i, w, h)`'s candidates overlapping the placed ones at most
        `max_iou`; None when one does not fit. In the objects' order."""
        placed: list[tuple[int, int, int, int]] = []
        result: dict[int, tuple[int, int, int, int]] = {}
        for i in sorted(range(len(sizes)), key=lambda i: -sizes[i][0] * sizes[i][1]):
            for _ in range(self.attempts):
                box = propose(i, *sizes[i])
                if box is not None and all(box_iou(box, other) <= max_iou for other in placed):
                    placed.append(box)
                    result[i] = box
                    break
            else:
                return None
        return [result[i] for i in range(len(sizes))]

