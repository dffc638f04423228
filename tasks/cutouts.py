"""Cut-out checks: is a mask the object alone, or a piece of the photo?

A segmenter is trusted no further than these checks (DESIGN.md §5). Every backend's masks
go through them, per source photo, after segmentation:

- `cutout_empty`: (almost) nothing was cut out;
- `cutout_whole`: the mask covers almost the whole photo (the background came with it);
- `cutout_frame`: the mask runs along most of one frame edge (a floor, a sofa, a table top,
  an arm or a person that the frame cuts off);
- `cutout_across`: the mask reaches two opposite frame edges (a person wearing the object,
  a table running through the photo);
- `cutout_pieces`: several large disconnected parts (two objects, or object and clutter);
- `cutout_sprawl`: the mask fills little of its own convex outline (flowers, a tray and a
  cup around a vase: several things joined);
- `cutout_odd`: unlike the concept's other photos in area, outline or colour, which is how
  a backpack worn by a person or a clock held in a hand shows up;
- `cutout_class`: what a COCO detector sees in the cut-out is not the concept (another class
  and not its own, or a person with an object that is not one): models/detect/checks.py,
  where a detector runs (`stages.filter.classes`), for categories with a COCO class.

The measures come from the mask and the photo once and are kept in the cut-out's record
with this module's code version; a change here re-measures (cheap) but never re-segments,
because this module is not part of the segment stage's code. The flags a photo gets are in
the plan's key (tasks/plan.py), so a change that alters them re-plans just those samples.
The planner prefers photos without flags; the filter drops a sample built from a flagged
one, with the flag as its reason (tasks/filter.py).
"""

from __future__ import annotations

import math
import re

import cv2
import numpy as np

from gen4gen.infra.records import ClassCheckConfig, Cutout, Reason
from gen4gen.models import registry
from gen4gen.models.detect import checks as class_checks
from gen4gen.models.registry import modules_hash
from gen4gen.models.segment.segmenter import PERSON_WORDS

STAGE = "segment"
# The measures' code version, kept among them (a float: measures are numbers) so a cached
# record measured by other checks is re-measured.
CHECKS_ID = float(int(modules_hash(("gen4gen.tasks.cutouts",))[:12], 16))

# The checks' thresholds, chosen on the DreamBooth photos of ../shared/realphotos/
# (benchmarks/segment_quality.py prints what each flags there).
NEAR_EMPTY = 0.01  # object pixels over the photo below this: nothing usable was cut out
WHOLE = 0.85  # above this the mask is most of the photo
EDGE_BAND = 0.01  # a frame edge is this share of the photo's longer side deep
ALONG_EDGE = 0.5  # the mask covers more than this share of one frame edge
ACROSS = 0.15  # ... or more than this of two opposite edges
MIN_SOLIDITY = 0.45  # the mask's area over its convex hull's, below this: sprawling
PIECE_SHARE = 0.15  # a part holding at least this share of the mask counts as a large part
MEASURE_SIDE = 256  # measures are taken on a copy of at most this side (fast, enough)
# A photo is "odd" when it is at least ODD times as far from every other photo of its
# concept as those are from each other, and far in absolute terms (ODD_FLOOR): one scale
# per measure says what "far" is (log area 1.0 = 2.7x, log aspect 0.7 = 2x, 45 Lab units:
# light alone moves a yellow duck's colour by about 40 from one photo to the next).
ODD, ODD_FLOOR = 2.0, 1.0
SCALES = {"log_area": 1.0, "log_aspect": 0.7, "colour": 45.0}


def measures_of(mask: np.ndarray, rgb: np.ndarray) -> dict[str, float]:
    """What the checks look at, measured on a photo's soft mask (and the photo, for colour),
    with the checks' code version under `checks`."""
    return {"checks": CHECKS_ID, **measure(mask, rgb)}


def measure(mask: np.ndarray, rgb: np.ndarray) -> dict[str, float]:
    """What the checks look at, measured on a photo's soft mask (and the photo, for colour)."""
    h, w = mask.shape
    scale = min(1.0, MEASURE_SIDE / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    soft = cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_AREA) if scale < 1 else mask
    m = soft >= 0.5
    sh, sw = m.shape
    band = max(1, round(EDGE_BAND * max(sh, sw)))
    out = {
        "coverage": float(m.mean()),
        "edge_top": float(m[:band].mean()), "edge_bottom": float(m[-band:].mean()),
        "edge_left": float(m[:, :band].mean()), "edge_right": float(m[:, -band:].mean()),
    }
    if not m.any():
        return out | {"parts": 0.0, "second_part": 0.0, "log_aspect": 0.0, "fill": 0.0}
    n, _, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
    areas = np.sort(stats[1:, cv2.CC_STAT_AREA])[::-1].astype(np.float64)
    total = float(areas.sum())
    ys, xs = np.nonzero(m)
    bw, bh = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA) if scale < 1 else rgb
    lab = cv2.cvtColor(np.ascontiguousarray(small), cv2.COLOR_RGB2LAB).astype(np.float32)
    # OpenCV's 8-bit Lab: L in 0..255 for 0..100; a, b offset by 128.
    colour = lab[m].mean(axis=0) * np.array([100 / 255, 1, 1], np.float32) - np.array([0, 128, 128])
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull = cv2.contourArea(cv2.convexHull(np.vstack(contours)))
    # The base: how far the mask's lowest row is from the frame's bottom, and how much of the
    # object's width its next-lowest row spans (a body cut straight by a blanket's or a
    # table's edge just above the frame ends in a wide straight line).
    bottom = int(ys.max())
    base_row = m[max(int(ys.min()), bottom - 1)]
    return out | {
        "base_gap": float((sh - 1 - bottom) / sh),
        "base_width": float(base_row.sum() / bw),
        "solidity": float(min(1.0, total / hull)) if hull > 0 else 1.0,
        "parts": float((areas >= PIECE_SHARE * total).sum()),
        "second_part": float(areas[1] / total) if len(areas) > 1 else 0.0,
        "log_aspect": float(math.log(bw / bh)),
        "fill": float(total / (bw * bh)),
        "lab_l": float(colour[0]), "lab_a": float(colour[1]), "lab_b": float(colour[2]),
    }


def classes_of(mask: np.ndarray, rgb: np.ndarray, category: str, detector) -> dict[str, float]:
    """The class measures of a cut-out (models/detect/checks.py: cutout_measures): {} when no
    detector runs (`detector`: its weights file, or None) or the mask is empty."""
    if detector is None:
        return {}
    if class_checks.coco_class(category).coco is None:
        return {"class_mapped": 0.0}  # said once, not detected: no check would read it
    shown = class_checks.cutout_image(rgb, mask)
    if shown is None:
        return {}
    model = registry.load("detect", "nanodet", {"weights": str(detector)})
    return class_checks.cutout_measures(model.detect(shown), category)


def photo_flags(measures: dict[str, float], category: str | None = None) -> list[Reason]:
    """The checks that need only the photo's own mask. A person's photo is a portrait cut off
    by the bottom edge as a rule (the offline segmenter's person prior says so too): for
    person categories the bottom edge is not held against the mask."""
    flags = []
    coverage = measures.get("coverage", 0.0)
    if coverage < NEAR_EMPTY:
        flags.append(_flag("cutout_empty", f"the mask covers {coverage:.1%} of the photo (< {NEAR_EMPTY:.0%})"))
        return flags  # nothing else means anything on an empty mask
    if coverage > WHOLE:
        flags.append(_flag("cutout_whole", f"the mask covers {coverage:.0%} of the photo (> {WHOLE:.0%})"))
    edges = {side: measures.get(f"edge_{side}", 0.0) for side in ("top", "bottom", "left", "right")}
    if set(re.findall(r"[a-z]+", (category or "").lower())) & PERSON_WORDS:
        edges["bottom"] = 0.0
    side, along = max(edges.items(), key=lambda kv: kv[1])
    if along > ALONG_EDGE:
        flags.append(_flag("cutout_frame", f"the mask runs along {along:.0%} of the {side} edge "
                                           f"(> {ALONG_EDGE:.0%}): background or a holder came with it"))
    for a, b in (("top", "bottom"), ("left", "right")):
        if along <= ALONG_EDGE and min(edges[a], edges[b]) > ACROSS:
            flags.append(_flag("cutout_across", f"the mask reaches both the {a} ({edges[a]:.0%}) and the {b} "
                                                f"({edges[b]:.0%}) edges: something runs through the photo with it"))
    if measures.get("solidity", 1.0) < MIN_SOLIDITY:
        flags.append(_flag("cutout_sprawl", f"the mask fills {measures['solidity']:.0%} of its outline "
                                            f"(< {MIN_SOLIDITY:.0%}): several things joined, or clutter"))
    if measures.get("parts", 1.0) >= 2:
        flags.append(_flag("cutout_pieces", f"{int(measures['parts'])} large separate parts "
                                            f"(the second holds {measures['second_part']:.0%} of the mask)"))
    return flags


def odd_ones(measures: list[dict[str, float]]) -> dict[int, str]:
    """Index -> why, for the photos unlike all the concept's others (3 photos or more)."""
    n = len(measures)
    if n < 3:
        return {}  # with two photos, which one is odd cannot be told
    # Each pair once (the differences are symmetric): its largest difference and which.
    dist = np.zeros((n, n))
    why: dict[tuple[int, int], str] = {}
    for i in range(n):
        for j in range(i + 1, n):
            name, value = max(_differences(measures[i], measures[j]).items(), key=lambda kv: kv[1])
            dist[i, j] = dist[j, i] = value
            why[i, j] = why[j, i] = name
    found = {}
    for i in range(n):
        others = [j for j in range(n) if j != i]
        j = min(others, key=lambda k: dist[i, k])
        nearest = dist[i, j]
        # How alike the others are among themselves: their median distance to each other.
        typical = float(np.median([dist[a, b] for a in others for b in others if a < b]))
        if nearest > ODD_FLOOR and nearest > ODD * typical:
            found[i] = (f"unlike the concept's other photos in {_what(why[i, j])} (distance {nearest:.1f}, "
                        f"theirs to each other {typical:.1f})")
    return found


def check_concept(cutouts: list[Cutout], category: str | None = None,
                  classes: ClassCheckConfig | None = None) -> list[Cutout]:
    """The cut-outs with their flags: each photo's own checks, the class check (where a
    detector measured the cut-out), then the odd ones out."""
    classes = classes or ClassCheckConfig()
    usable = [i for i, c in enumerate(cutouts) if c.usable and c.measures]
    flagged = {i: photo_flags(cutouts[i].measures, category) for i in usable}
    for i in usable:
        why = class_checks.cutout_class(cutouts[i].measures, category or "", classes)
        if why:
            flagged[i].append(_flag("cutout_class", why))
    # Only photos whose masks pass their own checks are compared: a failed one is no yardstick.
    clean = [i for i in usable if not flagged[i]]
    for k, reason in odd_ones([cutouts[i].measures for i in clean]).items():
        flagged[clean[k]].append(_flag("cutout_odd", reason))
    return [c.model_copy(update={"flags": flagged.get(i, [])}) for i, c in enumerate(cutouts)]


def _differences(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """Each measure's difference between two photos, in units of its scale."""
    colour = math.dist((a["lab_l"], a["lab_a"], a["lab_b"]), (b["lab_l"], b["lab_a"], b["lab_b"]))
    return {
        "log_area": abs(math.log(max(a["coverage"], 1e-6) / max(b["coverage"], 1e-6))) / SCALES["log_area"],
        "log_aspect": abs(a["log_aspect"] - b["log_aspect"]) / SCALES["log_aspect"],
        "colour": colour / SCALES["colour"],
    }


def _what(name: str) -> str:
    return {"log_area": "area", "log_aspect": "outline", "colour": "colour"}[name]


def _flag(code: str, detail: str) -> Reason:
    return Reason(code=code, stage=STAGE, detail=detail)


# A frame edge "cuts" an object when its mask covers more than this share of that edge (the
# cut-out checks' edge measures): a straight edge of a few percent of the photo's side shows.
CUT_EDGE = 0.02


# ... and a base this close to the frame's bottom (share of the photo's height) that is a
# straight line this wide (share of the object's width) is cut there too (by a blanket's or
# a table's edge): in a scene it must stand on the canvas's bottom edge, never in the middle.
NEAR_BOTTOM, STRAIGHT_BASE = 0.1, 0.5


def cut_edges(cutout: Cutout) -> tuple[str, ...]:
    """The frame edges of its photo that cut the object off."""
    m = cutout.measures
    cut = [side for side in ("bottom", "left", "right", "top") if m.get(f"edge_{side}", 0.0) > CUT_EDGE]
    if "bottom" not in cut and m.get("base_gap", 1.0) < NEAR_BOTTOM and m.get("base_width", 0.0) > STRAIGHT_BASE:
        cut.insert(0, "bottom")
    return tuple(cut)


def placeable(cut: tuple[str, ...]) -> bool:
    """Whether a cut-off object can enter a scene from its cut edges: from the bottom or one
    side; cut at the top it would hang from the sky, cut at both sides it is wider than the
    canvas."""
    return "top" not in cut and not {"left", "right"} <= set(cut)
