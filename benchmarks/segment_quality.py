"""Segmentation on real photos: each backend against reference masks, then a whole run.

    python benchmarks/segment_quality.py [--tiny] [--photos ../shared/realphotos]
                                         [--backends offline isnet] [--keep DIR]

Reads the DreamBooth subjects of `../shared/realphotos/` (photos, reference masks, classes,
the ambiguous photos: its README) from where they lie; nothing of that folder is copied
into the project. Per backend, through the segment stage's own code (tasks/segment.py:
segment_concept, its cache and the cut-out checks): mean and median IoU against the
reference masks, photos below 0.5 and 0.8, seconds a photo, and what the checks flagged
(among the bad cut-outs, the good ones and the ambiguous photos, which are left out of
the IoU figures). Then `gen4gen init` + `gen4gen generate` on those subjects with the
default backends (a temporary folder holds the copies `init` reads), with the kept and
dropped counts and reasons, the report and a contact sheet of the finals to look at.
`--tiny`: two subjects, the one backend `auto` picks (IS-Net where its weights were
fetched, else offline), and a small run (canvas 256, 1 sample per composition), for CI.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
DEFAULT_PHOTOS = ROOT.parent / "shared" / "realphotos"
# benchmarks/smoke.py (make benchmark-smoke): the smallest mode, and the line with the figure
SMOKE = ["--tiny"]
HEADLINE = r"^segment_quality: "
TINY_SUBJECTS = ("dog", "teapot")


def subjects(photos: Path, tiny: bool) -> dict[str, str]:
    """subject -> class, from the folder's classes.csv."""
    with open(photos / "classes.csv", newline="") as f:
        found = {row[0]: row[1] for row in csv.reader(f) if len(row) >= 2 and row[0] != "subject"}
    return {s: c for s, c in found.items() if s in TINY_SUBJECTS} if tiny else found


def iou(mask, reference) -> float:
    a, b = mask >= 0.5, reference >= 0.5
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def measure_backend(backend: str, photos: Path, classes: dict[str, str], ambiguous: set[str], work: Path) -> dict:
    import numpy as np
    from PIL import Image

    from gen4gen.infra.records import Concept, StageConfig
    from gen4gen.infra.storage import join, read_mask, resolve
    from gen4gen.tasks.segment import segment_concept

    out = resolve(str(work / f"seg-{backend}"))
    rows, seconds, count = [], 0.0, 0
    for subject, category in classes.items():
        files = sorted((photos / "photos" / subject).glob("*.jpg"))
        concept = Concept(id=subject, category=category, token=f"<{subject}>", photos=[str(p) for p in files])
        start = time.perf_counter()
        cuts = segment_concept(concept, out, StageConfig(backend=backend), refresh=True)
        seconds += time.perf_counter() - start
        count += len(files)
        for path, cut in zip(files, cuts):
            name = f"{subject}/{path.stem}"
            ref = np.asarray(Image.open(photos / "masks" / subject / f"{path.stem}.png").convert("L"), np.float32) / 255
            score = iou(read_mask(join(out, cut.mask)), ref) if cut.usable else 0.0
            flags = [cut.error.code] if cut.error else [f.code for f in cut.flags]
            rows.append({"photo": name, "iou": score, "flags": flags, "ambiguous": name in ambiguous})
    judged = [r for r in rows if not r["ambiguous"]]
    ious = [r["iou"] for r in judged]
    bad = [r for r in judged if r["iou"] < 0.5]
    good = [r for r in judged if r["iou"] >= 0.8]
    amb = [r for r in rows if r["ambiguous"]]
    return {
        "backend": backend, "photos": len(judged), "mean": statistics.mean(ious), "median": statistics.median(ious),
        "below_0.5": len(bad), "below_0.8": sum(1 for v in ious if v < 0.8), "s_per_photo": seconds / max(1, count),
        "bad_flagged": sum(1 for r in bad if r["flags"]), "good_flagged": sum(1 for r in good if r["flags"]),
        "good": len(good), "ambiguous_flagged": [r["photo"] for r in amb if r["flags"]],
        "ambiguous": [r["photo"] for r in amb], "rows": rows,
    }


def whole_run(photos: Path, classes: dict[str, str], work: Path, tiny: bool) -> dict:
    """`gen4gen init` + `generate` on the subjects, default backends, as a user runs them."""
    concepts = work / "concepts"
    for subject in classes:
        shutil.copytree(photos / "photos" / subject, concepts / subject)  # outside the project
    (concepts / "concepts.csv").write_text("folder,category\n" + "".join(f"{s},{c}\n" for s, c in classes.items()))
    exe = [sys.executable, "-m", "gen4gen.flows.cli"]
    recipe, data = work / "recipe.yaml", work / "dataset"
    init = [*exe, "init", str(concepts), "--out", str(recipe)] + (["--canvas", "256", "--samples", "1"] if tiny else [])
    subprocess.run(init, check=True, capture_output=True, text=True)
    start = time.perf_counter()
    gen = subprocess.run([*exe, "generate", str(recipe), "--out", str(data)], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if gen.returncode != 0:
        raise SystemExit(f"generate failed ({gen.returncode}):\n{gen.stderr[-3000:]}")
    manifest = json.loads((data / "manifest.json").read_text())
    card = (data / "README.md").read_text()
    reasons: Counter[str] = Counter()
    for comp in manifest["compositions"]:
        reasons.update(comp.get("reasons", {}))
    subprocess.run([*exe, "report", str(data), "--out", str(work / "report.html")], check=True, capture_output=True)
    sheet = finals_sheet(data, work / "finals.png")
    return {"wall_s": wall, "kept": manifest["kept"], "dropped": manifest["dropped"], "failed": manifest["failed"],
            "planned": manifest["planned"], "reasons": dict(reasons), "card_segmenter": segmenter_line(card),
            "flagged_photos": len(manifest.get("flagged_photos", {})), "report": str(work / "report.html"),
            "finals": str(sheet)}


def segmenter_line(card: str) -> str:
    for line in card.splitlines():
        if "segment" in line.lower() and ("isnet" in line.lower() or "offline" in line.lower()):
            return line.strip()[:120]
    return "(the card names no segmenter)"


def finals_sheet(data: Path, target: Path) -> Path:
    """Every final image of the run (kept and dropped) as one grid of thumbnails."""
    from PIL import Image, ImageDraw

    records = []
    for rec in sorted(data.glob(".stages/*/filter/*.json")):
        try:
            s = json.loads(rec.read_text())
        except ValueError:
            continue
        if s.get("paths", {}).get("repaint"):
            records.append((data / s["paths"]["repaint"], s.get("status", "?"), s.get("composition", "")))
    side, cols = 192, 6
    rows = max(1, -(-len(records) // cols))
    sheet = Image.new("RGB", (cols * side, rows * (side + 14)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (path, status, comp) in enumerate(records):
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((side, side))
            x, y = (i % cols) * side, (i // cols) * (side + 14)
            sheet.paste(im, (x, y + 14))
            draw.text((x + 2, y + 1), f"{status} {comp}"[:30], fill="green" if status == "kept" else "red")
    sheet.save(target)
    return target


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--backends", nargs="+", help="segment backends to measure (default: offline, isnet if fetched)")
    parser.add_argument("--tiny", action="store_true", help="two subjects and a small run (CI)")
    parser.add_argument("--no-run", action="store_true", help="measure the backends only")
    parser.add_argument("--keep", type=Path, help="keep the outputs here (default: a temporary folder)")
    args = parser.parse_args()
    if not (args.photos / "classes.csv").is_file():
        print(f"not run here: no real photos at {args.photos} (see ../shared/realphotos/README.md)")
        print("segment_quality: nothing measured")
        return 0
    classes = subjects(args.photos, args.tiny)
    ambiguous = set((args.photos / "ambiguous.txt").read_text().split())
    if args.backends:
        backends = args.backends
    elif args.tiny:
        backends = ["isnet" if _has_weights() else "offline"]
    else:
        backends = ["offline"] + (["isnet"] if _has_weights() else [])
    work = args.keep or Path(tempfile.mkdtemp(prefix="segment-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    results = [measure_backend(b, args.photos, classes, ambiguous, work) for b in backends]
    run = None if args.no_run else whole_run(args.photos, classes, work, args.tiny)
    report(results, run, work)
    return 0


def _has_weights() -> bool:
    """Whether `auto` would pick IS-Net here (its weights were fetched)."""
    from gen4gen.infra.records import StageConfig
    from gen4gen.models.segment.weights import resolve_segment

    return resolve_segment(StageConfig(backend="auto"))[0].backend == "isnet"


def report(results: list[dict], run: dict | None, work: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=140)
    table = Table(title="Segmentation against the reference masks (ambiguous photos left out)")
    for col in ("backend", "photos", "mean IoU", "median", "< 0.5", "< 0.8", "s/photo", "bad flagged",
                "good flagged", "ambiguous flagged"):
        table.add_column(col)
    for r in results:
        table.add_row(r["backend"], str(r["photos"]), f"{r['mean']:.3f}", f"{r['median']:.3f}", str(r["below_0.5"]),
                      str(r["below_0.8"]), f"{r['s_per_photo']:.2f}", f"{r['bad_flagged']}/{r['below_0.5']}",
                      f"{r['good_flagged']}/{r['good']}", f"{len(r['ambiguous_flagged'])}/{len(r['ambiguous'])}")
    console.print(table)
    for r in results:
        low = ", ".join(f"{x['photo']} {x['iou']:.2f} ({';'.join(x['flags']) or 'not flagged'})"
                        for x in r["rows"] if x["iou"] < 0.8 and not x["ambiguous"])
        console.print(f"{r['backend']}: below 0.8: {low or 'none'}")
        flagged = ", ".join(f"{x['photo']} ({';'.join(x['flags'])})" for x in r["rows"] if x["flags"])
        console.print(f"{r['backend']}: flagged: {flagged or 'none'}")
    if run:
        console.print(f"generate (default backends): {run['kept']} kept, {run['dropped']} dropped, {run['failed']} failed "
                      f"of {run['planned']} in {run['wall_s']:.1f} s; reasons {run['reasons']}; "
                      f"{run['flagged_photos']} photos flagged")
        console.print(f"card: {run['card_segmenter']}")
        console.print(f"look at: {run['report']} and {run['finals']}")
    (work / "segment_quality.json").write_text(json.dumps({"backends": results, "run": run}, indent=1))
    best = max(results, key=lambda r: r["mean"])
    print(f"segment_quality: best {best['backend']} mean IoU {best['mean']:.3f}, "
          f"{best['below_0.8']} photos below 0.8 ({work})")


if __name__ == "__main__":
    raise SystemExit(main())
