"""The class checks on real photos: what NanoDet sees in cut-outs, backgrounds and finals.

    python benchmarks/class_checks.py [--tiny] [--photos ../shared/realphotos]
                                      [--backgrounds ../shared/backgrounds] [--no-run] [--keep DIR]

Needs the fetched detector (`gen4gen weights fetch nanodet`); reads the DreamBooth subjects
of `../shared/realphotos/` and the photos of `../shared/backgrounds/` where they lie.

- Cut-outs (each photo's reference mask, on grey as the detector is shown them,
  models/detect/checks.py: cutout_image): per subject, its category's COCO class, in how many
  cut-outs that class (or a class that is still it) is found (>= `found`), and which the
  class check (`cutout_class`) flags, among the good photos and the ambiguous ones
  (`ambiguous.txt`). Subjects whose category has no COCO class are listed as skipped.
- Backgrounds: each photo vetted against all the subjects' categories (`vet_background`),
  with what was seen.
- Finals (not with --tiny or --no-run): `gen4gen init` + `generate` on the subjects with the
  default backends (benchmarks/segment_quality.py: whole_run), the detector on (`auto`), and
  its drop reasons: `not_detected`, `extra_object`, `cutout_class`.
- CPU seconds per image of one detection (one thread), the median over the cut-outs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
DEFAULT_PHOTOS = ROOT.parent / "shared" / "realphotos"
DEFAULT_BACKGROUNDS = ROOT.parent / "shared" / "backgrounds"
# benchmarks/smoke.py (make benchmark-smoke): the smallest mode, and the line with the figure
SMOKE = ["--tiny"]
HEADLINE = r"^class_checks: "
TINY_SUBJECTS = ("dog", "backpack", "teapot")


def cutouts(photos: Path, classes: dict[str, str], ambiguous: set[str], detector, cfg) -> dict:
    import numpy as np
    from PIL import Image

    from gen4gen.models.detect import checks

    rows, cpu = [], []
    for subject, category in classes.items():
        mapped = checks.coco_class(category)
        for path in sorted((photos / "photos" / subject).glob("*.jpg")):
            name = f"{subject}/{path.stem}"
            rgb = np.asarray(Image.open(path).convert("RGB"))
            mask = np.asarray(Image.open(photos / "masks" / subject / f"{path.stem}.png").convert("L"),
                              np.float32) / 255
            shown = checks.cutout_image(rgb, mask)
            start = time.process_time()
            found = detector.detect(shown)
            cpu.append(time.process_time() - start)
            measures = checks.cutout_measures(found, category)
            why = checks.cutout_class(measures, category, cfg)
            strict = max((d.score for d in found if d.label == mapped.coco), default=0.0)
            rows.append({"photo": name, "category": category, "coco": mapped.coco, "ambiguous": name in ambiguous,
                         "own": measures.get("class_own"), "found": (measures.get("class_own") or 0) >= cfg.found,
                         "strict": strict >= cfg.found,
                         "flag": why, "top": [d.as_dict() for d in found[:3]]})
    return {"rows": rows, "cpu_s": statistics.median(cpu) if cpu else 0.0}


def backgrounds(folder: Path, categories: list[str], detector, cfg) -> list[dict]:
    import numpy as np
    from PIL import Image

    from gen4gen.models.detect import checks

    out = []
    for path in sorted(folder.glob("*/*.jpg")):
        reason, found = checks.vet_background(detector, np.asarray(Image.open(path).convert("RGB")), categories, cfg)
        out.append({"photo": str(path.relative_to(folder)), "reason": reason,
                    "seen": [d.as_dict() for d in found if d.score >= cfg.found]})
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--backgrounds", type=Path, default=DEFAULT_BACKGROUNDS)
    parser.add_argument("--tiny", action="store_true", help="three subjects, no run (CI)")
    parser.add_argument("--no-run", action="store_true", help="cut-outs and backgrounds only")
    parser.add_argument("--keep", type=Path, help="keep the outputs here (default: a temporary folder)")
    args = parser.parse_args()

    from gen4gen.infra.records import ClassCheckConfig
    from gen4gen.models.detect import weights
    from gen4gen.models.detect.nanodet import NanoDet

    if not (args.photos / "classes.csv").is_file():
        print(f"not run here: no real photos at {args.photos} (see ../shared/realphotos/README.md)")
        print("class_checks: nothing measured")
        return 0
    if not weights.weights_path().is_file():
        print(f"not run here: no NanoDet weights at {weights.weights_path()} (`{weights.FETCH_COMMAND}`)")
        print("class_checks: nothing measured")
        return 0
    from segment_quality import subjects, whole_run

    classes = subjects(args.photos, False)
    if args.tiny:
        classes = {s: c for s, c in classes.items() if s in TINY_SUBJECTS}
    ambiguous = set((args.photos / "ambiguous.txt").read_text().split())
    cfg = ClassCheckConfig()
    detector = NanoDet(threads=1)
    cut = cutouts(args.photos, classes, ambiguous, detector, cfg)
    bgs = backgrounds(args.backgrounds, sorted(set(classes.values())), detector, cfg) \
        if args.backgrounds.is_dir() else []
    work = args.keep or Path(tempfile.mkdtemp(prefix="class-checks-"))
    work.mkdir(parents=True, exist_ok=True)
    run = None if args.tiny or args.no_run else whole_run(args.photos, classes, work, False)
    report(cut, bgs, run, cfg, work)
    return 0


def report(cut: dict, bgs: list[dict], run: dict | None, cfg, work: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=150)
    rows = cut["rows"]
    table = Table(title=f"Cut-outs (reference masks on grey): own class found (>= {cfg.found}) and flagged")
    for col in ("subject", "category -> COCO", "found", "as the class itself", "flagged (good)",
                "flagged (ambiguous)", "top detection each"):
        table.add_column(col, overflow="fold")
    for subject in dict.fromkeys(r["photo"].split("/")[0] for r in rows):
        mine = [r for r in rows if r["photo"].startswith(subject + "/")]
        first = mine[0]
        if first["coco"] is None:
            table.add_row(subject, f"{first['category']} -> none", "skipped", "-", "-", "-", "")
            continue
        good = [r for r in mine if not r["ambiguous"]]
        amb = [r for r in mine if r["ambiguous"]]
        tops = "; ".join(f"{r['photo'].split('/')[1]}: " + (f"{r['top'][0]['label']} {r['top'][0]['score']:.2f}"
                                                            if r["top"] else "nothing") for r in mine)
        table.add_row(subject, f"{first['category']} -> {first['coco']}", f"{sum(r['found'] for r in mine)}/{len(mine)}",
                      f"{sum(r['strict'] for r in mine)}/{len(mine)}",
                      f"{sum(bool(r['flag']) for r in good)}/{len(good)}",
                      f"{sum(bool(r['flag']) for r in amb)}/{len(amb)}" if amb else "-", tops)
    console.print(table)
    for r in rows:
        if r["flag"]:
            console.print(f"flagged {r['photo']}{' (ambiguous)' if r['ambiguous'] else ''}: {r['flag']}")
    flagged_bg = [b for b in bgs if b["reason"]]
    for b in bgs:
        seen = ", ".join(f"{d['label']} {d['score']:.2f}" for d in b["seen"]) or "nothing"
        console.print(f"background {b['photo']}: {'FLAGGED: ' + b['reason'] if b['reason'] else 'used'} (sees {seen})")
    if run:
        codes = {k: v for k, v in run["reasons"].items() if k in ("not_detected", "extra_object", "cutout_class")}
        console.print(f"generate (default backends, detector on): {run['kept']} kept, {run['dropped']} dropped of "
                      f"{run['planned']}; class reasons {codes}; all reasons {run['reasons']}")
        console.print(f"look at: {run['report']} and {run['finals']}")
    mapped = [r for r in rows if r["coco"]]
    good = [r for r in mapped if not r["ambiguous"]]
    amb = [r for r in mapped if r["ambiguous"]]
    (work / "class_checks.json").write_text(json.dumps({"cutouts": cut, "backgrounds": bgs, "run": run}, indent=1))
    print(f"class_checks: own class found in {sum(r['found'] for r in mapped)}/{len(mapped)} mapped cut-outs "
          f"({sum(r['strict'] for r in mapped)} as the class itself), "
          f"{sum(bool(r['flag']) for r in good)}/{len(good)} good flagged, "
          f"{sum(bool(r['flag']) for r in amb)}/{len(amb)} ambiguous flagged, {len(flagged_bg)}/{len(bgs)} "
          f"backgrounds flagged, {cut['cpu_s']:.3f} CPU s an image ({work})")


if __name__ == "__main__":
    raise SystemExit(main())
