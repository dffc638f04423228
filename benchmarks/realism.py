"""Finals on real photos: objects standing in real background photos, checked and timed.

    python benchmarks/realism.py [--tiny] [--samples 3] [--canvas 1024] [--keep DIR]
                                 [--photos ../shared/realphotos] [--backgrounds ../shared/backgrounds]

From the DreamBooth subjects of `../shared/realphotos/` and the scene folders of
`../shared/backgrounds/` (read where they lie; without them, the demo's own copies under
configs/demo-photos/), with the default backends (cut-outs by IS-Net where its weights were
fetched, else offline), a recipe of ten compositions is run twice side by side in one
process: on the background photos, and without them (today's procedural scenes). Printed:
kept and dropped with their reasons; objects whose base is off the photo's ground (the
lowest row of the object's mask above the ground line the plan recorded); cut edges inside
the canvas (an object its photo cut off whose cut side does not lie on the canvas's edge);
seconds per sample from planning to the filter (the cut-outs made once before, shared by
both runs: what the background photo changes), on photos over procedural (goal: 1.5x). A contact sheet of every
final on photos (contact-sheet.jpg) is written to --keep (default: a temporary folder) to
look at and rate. `--tiny`: one composition, two photos a subject, one sample, canvas 256,
for CI.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
SHARED = ROOT.parent / "shared"
DEMO = ROOT / "configs" / "demo-photos"
# benchmarks/smoke.py (make benchmark-smoke): the smallest mode, and the line with the figure
SMOKE = ["--tiny"]
HEADLINE = r"^realism: "
# Compositions of the dev subjects (by folder name); those whose subjects are missing are skipped.
COMPOSITIONS = [
    ("dog", "can"), ("bear_plushie", "candle", "duck_toy"), ("teapot", "can"), ("wolf_plushie", "rc_car"),
    ("dog", "bear_plushie", "wolf_plushie"), ("vase", "candle"), ("backpack", "duck_toy"),
    ("bear_plushie", "duck_toy", "rc_car", "wolf_plushie"), ("teapot", "can", "candle", "duck_toy", "bear_plushie"),
    ("dog", "duck_toy", "rc_car"),
]


def subjects(photos: Path) -> dict[str, str]:
    """subject folder -> category word: classes.csv where there is one, else the folder name."""
    classes = photos / "classes.csv"
    found = {}
    if classes.is_file():
        with open(classes, newline="") as f:
            found = {row[0]: row[1] for row in csv.reader(f) if len(row) >= 2 and row[0] != "subject"}
    folder = photos / "photos" if (photos / "photos").is_dir() else photos
    return {d.name: found.get(d.name, d.name.replace("_", " ")) for d in sorted(folder.iterdir()) if d.is_dir()}


def recipe(photos: Path, backgrounds: Path | None, samples: int, canvas: int, tiny: bool) -> dict:
    from gen4gen.models.backgrounds import scene_words

    folder = photos / "photos" if (photos / "photos").is_dir() else photos
    have = subjects(photos)
    comps = [c for c in COMPOSITIONS if all(s in have for s in c)][: 1 if tiny else None]
    used = sorted({s for c in comps for s in c})
    raw = {
        "name": "realism", "canvas": canvas, "max_iou": 0.05,
        "concepts": [{"id": s.replace("_", "-"), "category": have[s], "token": f"<{s.replace('_', '-')}>",
                      "photos": [str(p) for p in sorted(folder.joinpath(s).glob("*.jpg"))][: 2 if tiny else None]}
                     for s in used],
        "compositions": [{"id": "-".join(s.split("_")[0] for s in c) + f"-{i}", "samples": 1 if tiny else samples,
                          "concepts": [s.replace("_", "-") for s in c]} for i, c in enumerate(comps)],
    }
    if backgrounds is not None:
        raw["backgrounds"] = [{"scene": scene_words(d.name), "photos": [str(p) for p in sorted(d.glob("*.jpg"))]}
                              for d in sorted(backgrounds.iterdir()) if d.is_dir() and any(d.glob("*.jpg"))]
    return raw


def segment_first(raw: dict, out: Path) -> None:
    """Cut every photo out once, into the cache both runs share: the runs then time what the
    background photo changes (planning on it, compositing, repainting, filtering)."""
    from gen4gen.infra.records import DatasetConfig
    from gen4gen.models.segment.weights import resolve_config
    from gen4gen.tasks.segment import segment_concept

    config, _ = resolve_config(DatasetConfig.model_validate(raw))
    for concept in config.concepts:
        segment_concept(concept, str(out), config.stages.segment)


def run(raw: dict, out: Path):
    from gen4gen.infra.records import DatasetConfig
    from gen4gen.tasks.pipeline import run_local

    start = time.perf_counter()
    _, samples, cutouts = run_local(DatasetConfig.model_validate(raw), str(out), publish=False)
    return [s for ss in samples.values() for s in ss], cutouts, time.perf_counter() - start


def placement_faults(samples, cutouts, out: Path) -> tuple[int, int, int]:
    """(objects checked, bases off the ground, cut edges inside the canvas) over live samples."""
    import numpy as np

    from gen4gen.infra.storage import read_mask
    from gen4gen.tasks.cutouts import cut_edges

    by_photo = {c.photo: c for cs in cutouts.values() for c in cs}
    checked = off = inside = 0
    for s in samples:
        bg = s.plan.background
        if "mask" not in s.paths or bg is None or not bg.ground:
            continue
        mask = read_mask(str(out / s.paths["mask"]))
        side = mask.shape[0]
        for b in s.plan.boxes:
            region = mask[b.y : b.y + b.h, b.x : b.x + b.w] >= 0.5
            rows = np.nonzero(region.any(axis=1))[0]
            if rows.size == 0:
                continue
            checked += 1
            base = b.y + int(rows[-1])
            n = len(bg.ground)
            cols = np.nonzero(region.any(axis=0))[0]
            a, z = (b.x + int(cols[0])) * n // side, (b.x + int(cols[-1])) * n // side
            if base < max(bg.ground[a : z + 1]) - 2:
                off += 1
            cut = cut_edges(by_photo[s.plan.photos[b.concept]])
            at_edge = {"bottom": base >= side - 2, "left": b.x + int(cols[0]) <= 1,
                       "right": b.x + int(cols[-1]) >= side - 2, "top": False}
            inside += any(not at_edge[c] for c in cut)
    return checked, off, inside


def contact_sheet(samples, out: Path, dest: Path, side: int = 320) -> None:
    from PIL import Image, ImageDraw

    cols = 5
    rows = (len(samples) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * side, rows * (side + 16)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, s in enumerate(samples):
        x, y = (i % cols) * side, (i // cols) * (side + 16)
        path = s.paths.get("repaint") or s.paths.get("composite")
        if path:
            sheet.paste(Image.open(out / path).convert("RGB").resize((side, side)), (x, y + 16))
        why = ",".join(r.code for r in s.reasons)
        draw.text((x + 2, y + 2), f"{i} {s.composition} {s.status} {why}"[:60], fill="black")
    sheet.save(dest, quality=85)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--canvas", type=int, default=1024)
    parser.add_argument("--photos", type=Path, default=SHARED / "realphotos")
    parser.add_argument("--backgrounds", type=Path, default=SHARED / "backgrounds")
    parser.add_argument("--keep", type=Path, help="folder for the runs and the contact sheet")
    args = parser.parse_args()
    photos, backgrounds = args.photos, args.backgrounds
    if not (photos.is_dir() and backgrounds.is_dir()):
        print(f"not run here: no {photos} or {backgrounds}; using the demo's copies in {DEMO}")
        photos, backgrounds = DEMO / "photos", DEMO / "backgrounds"
    canvas = 256 if args.tiny else args.canvas
    work = args.keep or Path(tempfile.mkdtemp(prefix="realism-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        with_photos = recipe(photos, backgrounds, args.samples, canvas, args.tiny)
        segment_first(with_photos, work / "out")
        drawn, _, wall_drawn = run(recipe(photos, None, args.samples, canvas, args.tiny), work / "out")
        on_photo, cutouts, wall_photo = run(with_photos, work / "out")
        kept = sum(s.status == "kept" for s in on_photo)
        reasons = Counter(r.code for s in on_photo for r in s.reasons)
        checked, off, inside = placement_faults(on_photo, cutouts, work / "out")
        per_photo, per_drawn = wall_photo / len(on_photo), wall_drawn / len(drawn)
        sheet = work / "contact-sheet.jpg"
        contact_sheet(on_photo, work / "out", sheet)
        print(f"samples on photos: {len(on_photo)}, kept {kept}, dropped or failed {len(on_photo) - kept}"
              f" ({', '.join(f'{k} {v}' for k, v in reasons.most_common()) or 'no reasons'})")
        print(f"objects checked: {checked}; base off the ground: {off}; cut edge inside the canvas: {inside}")
        print(f"seconds per sample (plan to filter, cut-outs cached): photos {per_photo:.3f}, "
              f"procedural {per_drawn:.3f}; runs {wall_photo:.1f} s and {wall_drawn:.1f} s, {len(on_photo)} samples each")
        print(f"contact sheet: {sheet}")
        print(f"realism: kept {kept}/{len(on_photo)}, off ground {off}, cut edges inside {inside}, "
              f"time photo/procedural {per_photo / max(per_drawn, 1e-9):.2f}x (goal <= 1.5)")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
