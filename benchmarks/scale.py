"""How the factory's cost grows with the sample count (issue 13): one `gen4gen generate` per
size, in a fresh process each, on the offline backends, then the report and `datasets`.

    .venv/bin/python benchmarks/scale.py                 # 40, 400 and 4,000 samples
    .venv/bin/python benchmarks/scale.py --sizes 40 400 --canvas 128
    .venv/bin/python benchmarks/scale.py --sizes 10000   # the paper's size: 40 x 250 samples

Recipes have distinct photos derived offline (crops, flips and colour turns of the
scikit-image sample photos), 2 to 3 concepts per composition, 10 to 250 samples per
composition. Per size it prints: wall of the run (and of a cached rerun), seconds per
sample, the run's peak RSS (its largest process: the CLI's flow, or Prefect's temporary
server), bookkeeping share (1 - stage task-seconds / (workers x wall): everything but the
stages' tasks, segment and plan included, as Prefect timed them; over the whole run and
inside the flow run), the number of "Refusing to publish event"
warnings, `gen4gen`'s report build time and size (write_report), the seconds until the
report's first rows show in headless Chromium, and `datasets` load ms per row: the
dataset card's default config (the Parquet shards), and imagefolder.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageOps
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]

# benchmarks/smoke.py (make benchmark-smoke): the smallest mode, and the line with the figure
SMOKE = ["--sizes", "10", "--canvas", "64", "--no-rerun"]
HEADLINE = r"^largest size: "

BASES = [("chelsea.png", "cat"), ("coffee.png", "mug"), ("astronaut.png", "person"), ("rocket.jpg", "rocket"),
         ("motorcycle_left.png", "motorcycle"), ("cat.png", "cat"), ("hubble_deep_field.jpg", "lamp")]


def photos(folder: Path, n: int) -> list[tuple[str, str]]:
    """n distinct photos (path, category): each a crop, flip and hue turn of a sample photo."""
    import skimage.data

    root = Path(skimage.data.__file__).parent
    bases = [(Image.open(root / name).convert("RGB"), cat) for name, cat in BASES if (root / name).exists()]
    out = []
    rng = np.random.default_rng(0)
    for i in range(n):
        img, cat = bases[i % len(bases)]
        w, h = img.size
        dx, dy = (int(rng.integers(0, max(1, w // 8))), int(rng.integers(0, max(1, h // 8))))
        im = img.crop((dx, dy, w - (i % 5) * w // 40, h - dy // 2))
        if (i // len(bases)) % 2:
            im = ImageOps.mirror(im)
        hsv = np.array(im.convert("HSV"))
        hsv[..., 0] = (hsv[..., 0].astype(int) + 37 * (i // len(bases))) % 256
        im = Image.fromarray(hsv, "HSV").convert("RGB")
        im.thumbnail((384, 384))
        path = folder / f"photo-{i:04d}.png"
        im.save(path)
        out.append((str(path), cat))
    return out


def recipe(folder: Path, samples: int, canvas: int, workers: int) -> dict:
    # Samples per composition; from 10,000 up the paper's shape (41 compositions x 250).
    per = 10 if samples <= 40 else 25 if samples <= 400 else 100 if samples < 10_000 else 250
    comps = max(1, samples // per)
    n_concepts = min(150, max(4, comps + 2))
    pics = photos(folder, n_concepts)
    concepts = [{"id": f"c{i:03d}", "category": cat, "token": f"<c{i:03d}>", "photos": [p]}
                for i, (p, cat) in enumerate(pics)]
    compositions = []
    for j in range(comps):
        k = 2 + j % 2
        ids = sorted({concepts[(j + m * 7) % n_concepts]["id"] for m in range(k)})
        compositions.append({"id": f"comp-{j:03d}", "concepts": ids, "samples": per})
    return {
        "name": "scale", "version": "v1", "seed": 0, "canvas": canvas, "max_iou": 0.05,
        "concepts": concepts, "compositions": compositions,
        "stages": {"plan": {"backend": "offline"}, "segment": {"backend": "offline"},
                   "repaint": {"backend": "offline"}, "caption": {"backend": "template"},
                   # Cost, not quality: the derived photos' cut-outs are often flagged (a cat's
                   # face cropped into pieces); kept with the flags as notes, samples publish.
                   "filter": {"drop_flagged_cutouts": False}},
        "run": {"out": str(folder / "out"), "workers": workers, "retries": 0, "cache": True},
    }


STAGE_TASKS = ("segment", "plan", "composite", "repaint", "caption", "filter")


def generate(path: Path, home: Path) -> tuple[float, float, int, dict]:
    """(wall s, peak RSS GB of its largest process, refused events, task seconds) of one
    run, in a fresh process with its own Prefect home: task seconds are read back from the
    temporary server's database, per task name before '[' and as 'flow run'."""
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "gen4gen.flows.cli", "generate", str(path)], cwd=REPO,
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    text = proc.stdout + proc.stderr
    if proc.returncode:
        raise SystemExit(f"generate failed ({proc.returncode}):\n{text[-3000:]}")
    rss = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 2**20
    return wall, rss, len(re.findall("Refusing to publish event", text)), task_seconds(home / "prefect.db")


def task_seconds(db: Path) -> dict[str, float]:
    """Seconds per task kind (segment, repaint, ...) of the newest flow run, and the run's."""
    def seconds(a: str, b: str) -> float:
        return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()

    with sqlite3.connect(db) as con:
        run_id, start, end = con.execute(
            "select id, start_time, end_time from flow_run order by start_time desc limit 1").fetchone()
        out = {"flow run": seconds(start, end)}
        for name, a, b in con.execute("select name, start_time, end_time from task_run where flow_run_id = ?",
                                      (run_id,)):
            if a and b:
                kind = name.split("[")[0]
                out[kind] = out.get(kind, 0.0) + seconds(a, b)
    return out


def load_ms_per_row(builder: str | None, out: Path, cache: Path) -> tuple[float, int]:
    """`datasets.load_dataset` from a fresh cache, in a fresh process: ms per row, rows.
    builder None: the folder itself, read through its dataset card's default config."""
    call = f"{str(out)!r}" if builder is None else f"{builder!r},data_dir={str(out)!r}"
    code = (
        "import datasets,time,sys;t=time.perf_counter();"
        f"ds=datasets.load_dataset({call},cache_dir={str(cache)!r})['train'];n=len(ds);print(n,time.perf_counter()-t)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0 or len(proc.stdout.split()) < 2:
        raise SystemExit(f"datasets.load_dataset({call}) failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    rows, secs = proc.stdout.split()[-2:]
    return 1000 * float(secs) / max(1, int(rows)), int(rows)


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def open_seconds(page_file: Path) -> tuple[float, int]:
    """Seconds from navigation until the report's first page of rows is drawn in headless
    Chromium, and the DOM's element count then (nan, 0 without Chromium)."""
    if not Path(CHROMIUM).exists():
        return float("nan"), 0
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        start = time.perf_counter()
        page.goto(page_file.as_uri(), wait_until="load")
        page.locator("article.sample").first.wait_for(state="visible")
        seconds = time.perf_counter() - start
        nodes = page.evaluate("document.getElementsByTagName('*').length")
        browser.close()
    return seconds, nodes


def measure(samples: int, canvas: int, workers: int, root: Path, with_rerun: bool = True) -> dict:
    from gen4gen.tasks.views.report import write_report

    folder = root / f"n{samples}"
    folder.mkdir(parents=True)
    raw = recipe(folder, samples, canvas, workers)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = folder / "out"
    home = root / "prefect"  # one Prefect home for every run: its database is made once, as a user's
    wall, rss, refused, tasks = generate(path, home)
    rerun, _, refused_again, _ = generate(path, home) if with_rerun else (float("nan"), 0, 0, {})
    manifest = json.loads((out / "manifest.json").read_text())
    # The stages' task-seconds (segment and plan included); bookkeeping is the rest of the
    # workers' time: over the whole run, and inside the flow run (without the CLI's start
    # and Prefect's temporary server, a fixed cost of every run).
    stage_s = sum(tasks.get(k, 0.0) for k in STAGE_TASKS)
    start = time.perf_counter()
    page_file = folder / "report" / "report.html"
    report = write_report(str(out), str(page_file))
    report_s = time.perf_counter() - start
    open_s, nodes = open_seconds(page_file)
    card_ms, card_rows = load_ms_per_row(None, out, folder / "hf0")
    img_ms, img_rows = load_ms_per_row("imagefolder", out, folder / "hf1")
    assert img_rows == card_rows == manifest["kept"], (img_rows, card_rows, manifest["kept"])
    return {
        "samples": manifest["planned"], "kept": manifest["kept"], "wall s": wall, "s/sample": wall / manifest["planned"],
        "rerun s": rerun, "peak RSS GB": rss, "bookkeeping": max(0.0, 1 - stage_s / (workers * wall)),
        "in flow": max(0.0, 1 - stage_s / (workers * tasks["flow run"])),
        "refused": refused + refused_again, "report s": report_s, "report MB": report.bytes / 1e6,
        "opens s": open_s, "DOM nodes": nodes, "parquet ms/row": card_ms, "imagefolder ms/row": img_ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[40, 400, 4000])
    parser.add_argument("--canvas", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the datasets (printed folder)")
    parser.add_argument("--no-rerun", dest="rerun", action="store_false",
                        help="leave out the cached rerun of each size (the smoke run)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="gen4gen-scale-"))
    rows = []
    try:
        for n in args.sizes:
            rows.append(measure(n, args.canvas, args.workers, root, args.rerun))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        if args.keep:
            print(f"datasets kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    table = Table(title=f"gen4gen at scale: canvas {args.canvas}, {args.workers} workers, offline backends")
    for col in rows[0]:
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(*(f"{v:.3f}" if isinstance(v, float) and v < 1 else f"{v:.1f}" if isinstance(v, float) else str(v)
                        for v in r.values()))
    Console(width=240).print(table)  # whole column names, also when piped to a file
    r = rows[-1]
    rerun = f"rerun {r['rerun s']:.1f} s" if args.rerun else "no rerun (--no-rerun)"
    print(f"largest size: {r['samples']} samples, {r['s/sample']:.3f} s/sample, {rerun}, "
          f"peak RSS {r['peak RSS GB']:.2f} GB, report {r['report MB']:.2f} MB")
    if not Path(CHROMIUM).exists():
        print(f"not run here: the report's opening time in Chromium (no {CHROMIUM})")


if __name__ == "__main__":
    main()
