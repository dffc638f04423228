"""The class checks: what a COCO detector (NanoDet) sees in a cut-out, a final, a background.

Pure functions over detections (models/detect/nanodet.py: `Detection`) and the recipe's
thresholds (`stages.filter.classes`, infra/records.py: ClassCheckConfig); the stages call
them (tasks/cutouts.py: `cutout_class`; tasks/filter.py: `not_detected`, `extra_object`;
the background intake: `vet_background`). A concept's category is mapped to a COCO class by
`classes.csv` (kept as data, with synonyms); a category with no COCO class is skipped by
every check, and says so in its measures (`class_mapped` 0).

- `cutout_class`: in a mapped concept's cut-out (the photo's masked pixels on grey, cropped
  to the mask with a margin, as it will be pasted), the detector is confident of another
  class (>= `clear`) while it does not find the concept's own (< `found`), or it is
  confident of a person in the cut-out of a concept that is not a person (a hand holding a
  clock, a backpack on a back).
- `not_detected`: a mapped concept of which the final shows no trace (no detection of its
  class >= `trace` where its box is, IoU >= `match_iou`): absence is claimed only when the
  detector sees nothing of it, as a weak reading (a corgi scored cat 0.48, dog 0.30) is
  still the concept there; a box too small for the detector to see is not held
  against it, nor is a concept the detector does not find in its own cut-out either (what
  the check asks is whether making the final lost the concept).
- `extra_object`: a person, an animal, or an object of a concept's class found (>= `found`)
  on the final where no concept's box is: brought in by a background, or painted by the
  repaint.
- `vet_background`: a background photo holding a person, an animal or an object of one of
  the recipe's concepts' classes (>= `found`).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from gen4gen.infra.records import ClassCheckConfig
from gen4gen.models.detect.nanodet import ANIMALS, COCO, SIDE, Detection

# A concept's box whose shorter side is under this, in the detector's pixels (the final
# letterboxed into SIDE): NanoDet's finest stride is 8 px and it learnt objects of two
# strides or more, so smaller ones are not held against the final.
MIN_SIDE_SEEN = 16
# An extra object must lie mostly outside every concept's box: the share of its own box that
# some concept's box covers, above which it is that concept (or stands on it).
COVERED = 0.5
CROP_MARGIN = 0.1  # the cut-out is cropped to its mask plus this share of each side
GREY = 114  # the grey a cut-out is shown on (the detector's own padding grey)
PERSON = "person"


@dataclass(frozen=True)
class Mapped:
    """A category's COCO class (None: it has none) and the classes that are still it."""

    category: str
    coco: str | None
    also: frozenset[str] = frozenset()
    note: str = ""

    @property
    def own(self) -> frozenset[str]:
        return frozenset({self.coco} if self.coco else set()) | self.also


@lru_cache(maxsize=1)
def _table() -> dict[str, Mapped]:
    text = (resources.files("gen4gen.models.detect") / "classes.csv").read_text(encoding="utf-8")
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    table = {name: Mapped(name, name) for name in COCO}
    for r in rows:
        also = frozenset(a for a in (r["also"] or "").split("|") if a)
        unknown = sorted((also | {r["coco"]}) - set(COCO) - {""})
        if unknown:
            raise ValueError(f"classes.csv: {r['category']}: not COCO classes: {unknown}")
        table[r["category"]] = Mapped(r["category"], r["coco"] or None, also, r["note"] or "")
    return table


def coco_class(category: str) -> Mapped:
    """The category's mapping: the whole phrase, else its last word, singular or plural
    (as models/plan/sizes.csv is read). Unknown words: no COCO class."""
    table = _table()
    words = re.findall(r"[a-z]+", category.lower())
    for name in (" ".join(words), words[-1] if words else ""):
        for candidate in (name, name[:-1] if name.endswith("s") else name,
                          name[:-2] if name.endswith("es") else name):
            if candidate in table:
                return table[candidate]
    return Mapped(category, None, note="not in the class map (models/detect/classes.csv)")


def class_id(label: str) -> float:
    """A class as a number, for the float-only measures (its index in COCO)."""
    return float(COCO.index(label))


# --------------------------------------------------------------------------- cut-outs


def cutout_image(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """The cut-out as the detector is shown it: the masked pixels on grey, cropped to the
    mask with a margin (None for an empty mask)."""
    m = mask >= 0.5
    ys, xs = np.nonzero(m)
    if not len(xs):
        return None
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    my, mx = int(CROP_MARGIN * (y1 - y0)), int(CROP_MARGIN * (x1 - x0))
    y0, y1 = max(0, y0 - my), min(m.shape[0], y1 + my)
    x0, x1 = max(0, x0 - mx), min(m.shape[1], x1 + mx)
    a = np.clip(mask[y0:y1, x0:x1, None].astype(np.float32), 0, 1)
    out = rgb[y0:y1, x0:x1, :3].astype(np.float32) * a + GREY * (1 - a)
    return out.round().astype(np.uint8)


def cutout_measures(detections: list[Detection], category: str) -> dict[str, float]:
    """What the cut-out check reads, as numbers: the best score of the concept's own classes,
    of any other class (and which), and of a person. Unmapped: `class_mapped` 0 only."""
    mapped = coco_class(category)
    if mapped.coco is None:
        return {"class_mapped": 0.0}
    own = [d.score for d in detections if d.label in mapped.own]
    other = [d for d in detections if d.label not in mapped.own]
    person = [d.score for d in detections if d.label == PERSON]
    best = max(other, key=lambda d: d.score, default=None)
    return {
        "class_mapped": 1.0,
        "class_own": max(own, default=0.0),
        "class_other": best.score if best else 0.0,
        "class_other_id": class_id(best.label) if best else -1.0,
        "class_person": max(person, default=0.0),
    }


def cutout_class(measures: dict[str, float], category: str, cfg: ClassCheckConfig) -> str | None:
    """Why the cut-out is not (only) the concept, from `cutout_measures`; None when it is,
    or when there is nothing to say (unmapped, or not measured by a detector)."""
    if measures.get("class_mapped", 0.0) < 1:
        return None
    mapped = coco_class(category)
    own, other = measures.get("class_own", 0.0), measures.get("class_other", 0.0)
    person = measures.get("class_person", 0.0)
    label = COCO[int(measures["class_other_id"])] if measures.get("class_other_id", -1) >= 0 else "?"
    if PERSON not in mapped.own and person >= cfg.clear:
        return (f"a person (score {person:.2f} >= {cfg.clear:.2f}) in the cut-out of a {category} "
                f"({mapped.coco} {own:.2f}): a hand, an arm or a wearer came with it")
    if other >= cfg.clear and own < cfg.found:
        return (f"the detector sees a {label} ({other:.2f} >= {cfg.clear:.2f}), not a {mapped.coco} "
                f"({own:.2f} < {cfg.found:.2f})")
    return None


# --------------------------------------------------------------------------- finals


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _covered(det: tuple[float, float, float, float], box: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(det[2], box[2]) - max(det[0], box[0]))
    iy = max(0.0, min(det[3], box[3]) - max(det[1], box[1]))
    area = (det[2] - det[0]) * (det[3] - det[1])
    return ix * iy / area if area > 0 else 1.0


@dataclass(frozen=True)
class Placed:
    """A concept on the final: its id, category, box (x0, y0, x1, y1, pixels), and the score
    of its own class in the cut-out it was made from (None: not measured)."""

    concept: str
    category: str
    box: tuple[float, float, float, float]
    alone: float | None = None


def final_checks(detections: list[Detection], placed: list[Placed], size: tuple[int, int],
                 cfg: ClassCheckConfig) -> tuple[list[tuple[str, str]], dict[str, float]]:
    """([(code, detail)], measures) for a final image of `size` (w, h): `not_detected` per
    mapped concept not found where its box is, `extra_object` per person, animal or concept
    class found where no concept stands."""
    reasons: list[tuple[str, str]] = []
    measures: dict[str, float] = {}
    scale = SIDE / max(size)
    concept_classes = set()
    for p in placed:
        mapped = coco_class(p.category)
        if mapped.coco is None:
            continue
        concept_classes |= {mapped.coco}
        matches = [d.score for d in detections if d.label in mapped.own and _iou(d.box, p.box) >= cfg.match_iou]
        best = max(matches, default=0.0)
        measures[f"class_found.{p.concept}"] = round(best, 4)
        side = min(p.box[2] - p.box[0], p.box[3] - p.box[1]) * scale
        # A concept the detector does not find in its own clean cut-out either: its absence
        # on the final says nothing about the final (the detector cannot see this object).
        seen_alone = p.alone is None or p.alone >= cfg.found
        if best < cfg.trace and side >= MIN_SIDE_SEEN and seen_alone:
            alone = f"; in its cut-out {p.alone:.2f}" if p.alone is not None else ""
            reasons.append(("not_detected", f"{p.concept}: no trace of a {mapped.coco} where its box is "
                                            f"(best {best:.2f} < {cfg.trace:.2f}{alone})"))
    wanted = {PERSON} | ANIMALS | concept_classes
    extras = [d for d in detections if d.label in wanted and d.score >= cfg.found
              and all(_covered(d.box, p.box) < COVERED for p in placed)]
    measures["extra_objects"] = float(len(extras))
    if extras:
        worst = max(extras, key=lambda d: d.score)
        listed = ", ".join(f"{d.label} {d.score:.2f}" for d in extras[:4])
        reasons.append(("extra_object", f"{listed} where no concept stands (best at "
                                        f"{', '.join(str(round(v)) for v in worst.box)})"))
    return reasons, measures


def detections_measures(detections: list[Detection], size: tuple[int, int], cfg: ClassCheckConfig,
                        limit: int = 8) -> dict[str, float]:
    """The detections over `found` as numbers for a sample's measures (the report draws them):
    `det.K.class` (COCO index), `det.K.score`, `det.K.x0` ... `det.K.y1` (0..1 of the image)."""
    w, h = size
    out: dict[str, float] = {}
    for k, d in enumerate([d for d in detections if d.score >= cfg.found][:limit]):
        out[f"det.{k}.class"] = class_id(d.label)
        out[f"det.{k}.score"] = round(d.score, 4)
        for name, v, full in zip(("x0", "y0", "x1", "y1"), d.box, (w, h, w, h)):
            out[f"det.{k}.{name}"] = round(v / full, 4)
    return out


def detections_from_measures(measures: dict[str, float]) -> list[dict]:
    """`detections_measures` read back: [{label, score, box (0..1)}]."""
    found = []
    k = 0
    while f"det.{k}.class" in measures:
        found.append({"label": COCO[int(measures[f"det.{k}.class"])], "score": measures[f"det.{k}.score"],
                      "box": [measures[f"det.{k}.{n}"] for n in ("x0", "y0", "x1", "y1")]})
        k += 1
    return found


# --------------------------------------------------------------------------- backgrounds


def background_reason(detections: list[Detection], categories: list[str], cfg: ClassCheckConfig) -> str | None:
    """Why a background photo must not be used (None: it may): a person, an animal or an
    object of one of the concepts' classes found on it."""
    classes = {PERSON} | ANIMALS | {m.coco for m in map(coco_class, categories) if m.coco}
    seen = [d for d in detections if d.label in classes and d.score >= cfg.found]
    if not seen:
        return None
    listed = ", ".join(f"{d.label} {d.score:.2f}" for d in sorted(seen, key=lambda d: -d.score)[:4])
    return f"it holds {listed} (>= {cfg.found:.2f}): a person, an animal or a concept's class"


def vet_background(detector, rgb: np.ndarray, categories: list[str],
                   cfg: ClassCheckConfig) -> tuple[str | None, list[Detection]]:
    """(the reason a background photo is not used, or None; the detections) for an RGB
    photo and the recipe's concept categories. `detector`: a loaded NanoDet."""
    found = detector.detect(rgb)
    return background_reason(found, categories, cfg), found

