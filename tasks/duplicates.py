"""Near-duplicates: within a composition, no kept final repeats an earlier kept one.

With one or two photos per concept, the same photos in nearly the same layout on the same
background can come out twice, and a personalisation model memorises what it sees twice.
A kept sample is a near-duplicate of an earlier kept sample (in sample order) when both
were made from the same source photo per concept and the 64-bit perceptual hashes of their
finals (`imagehash.phash`, DCT-based: robust to small shifts and re-encoding) lie within
`near_duplicates.max_distance` bits. It is dropped with `near_duplicate`, its reason naming
the sample it repeats; the distance and the two layouts' mean box IoU are in its measures.

Decided in one place, `tally` (tasks/targets.py), over a composition's samples in index
order after every round: the verdict of a sample depends only on the samples before it, so
lowering a target keeps the same verdicts, and rounds count it like any other drop. A
final's hash is computed once and cached by the final's sha256 in the composition's stage
tree (`.stages/{composition}/duplicates/`): a rerun or a later round reads it back, never
the image. Each kept sample is compared with the earlier kept ones of its photos (one
vectorised XOR and popcount), so the cost per sample stays small at thousands of samples.
"""

from __future__ import annotations

import json
import re

import numpy as np

from gen4gen.infra.errors import BadInput
from gen4gen.infra.records import NearDuplicateConfig, Sample, box_iou
from gen4gen.infra.storage import join, read_bytes, read_image, write_bytes
from gen4gen.tasks.stage import STAGES_DIR, committed_names

STAGE = "duplicates"
CODE = "near_duplicate"
_SHA = re.compile(r"[0-9a-f]{64}")  # a record's image hash names a cache file: hex only
HASH = "phash1"  # bump when the hash (function, size) changes: cached hashes are named by it


def phash(image) -> int:
    """The 64-bit perceptual hash of a PIL image, as an int."""
    import imagehash  # imported here: only runs that keep samples need it

    return int(str(imagehash.phash(image, hash_size=8)), 16)


def final_hashes(samples: list[Sample], out: str) -> dict[str, int]:
    """Sample id -> pHash of its final (the repaint stage's image), for the kept samples;
    cached by the final's sha256."""
    kept = [s for s in samples if s.status == "kept" and _SHA.fullmatch(s.hashes.get("repaint", ""))]
    if not kept:
        return {}
    comp = kept[0].composition
    cached = committed_names(out, comp, STAGE)
    hashes: dict[str, int] = {}
    for s in kept:
        name = f"{HASH}-{s.hashes['repaint'][:24]}.json"
        uri = join(out, STAGES_DIR, comp, STAGE, name)
        value = None
        if name in cached:
            try:
                value = int(json.loads(read_bytes(uri, limit=256))["phash"], 16)
            except (BadInput, ValueError, KeyError, TypeError):
                value = None  # unreadable: hash the image again and rewrite it
        if value is None:
            value = phash(read_image(join(out, s.paths["repaint"])))
            write_bytes(uri, json.dumps({"phash": f"{value:016x}"}).encode())
        hashes[s.id] = value
    return hashes


def _mean_iou(a: Sample, b: Sample) -> float:
    boxes = {box.concept: box.xywh for box in b.plan.boxes}
    ious = [box_iou(box.xywh, boxes[box.concept]) for box in a.plan.boxes if box.concept in boxes]
    return sum(ious) / len(ious) if ious else 0.0


def drop_near_duplicates(samples: list[Sample], out: str, config: NearDuplicateConfig) -> int:
    """Drop (in place) each kept sample too close to an earlier kept one; returns how many."""
    if not config.enabled:
        return 0
    hashes = final_hashes(samples, out)
    groups: dict[tuple, tuple[list[Sample], list[int]]] = {}  # photos used -> earlier kept, hashes
    dropped = 0
    for s in sorted(samples, key=lambda x: x.plan.index):
        if s.status != "kept" or s.id not in hashes:
            continue
        earlier, values = groups.setdefault(tuple(sorted(s.plan.photos.items())), ([], []))
        if values:
            distances = np.bitwise_count(np.array(values, dtype=np.uint64) ^ np.uint64(hashes[s.id]))
            i = int(np.argmin(distances))
            if int(distances[i]) <= config.max_distance:
                other = earlier[i]
                s.measures["near_duplicate.distance"] = float(distances[i])
                s.measures["near_duplicate.box_iou"] = round(_mean_iou(s, other), 4)
                s.drop(CODE, STAGE, f"repeats sample {other.id}: pHash distance {int(distances[i])} <= "
                                    f"{config.max_distance}, same photos")
                dropped += 1
                continue
        earlier.append(s)
        values.append(hashes[s.id])
    return dropped
