"""The prepared GPU check: every model figure the factory needs, in one run of under 8 minutes.

    python benchmarks/gpu_suite.py                      # a CUDA machine (H100/H200): real sizes
    python benchmarks/gpu_suite.py --tiny               # anywhere: tiny models, wiring only
    python benchmarks/gpu_suite.py --only repaint,train --json rows.json

Sections, in this order (each a subprocess with its own time limit, so a hang, a CUDA
error or an out-of-memory kill costs one section, not the suite):

  env              torch, CUDA, the GPU
  pytest           `pytest -m gpu` (tests/models/test_gpu.py): passed / failed / skipped
  repaint          SDXL inpaint + refiner at 1024 px, random weights: batch 1 and 4 against a
                   per-image loop, peak memory, share of the FLOP floor (gpu_repaint.measure)
  caption          LLaVA-1.5 (7B sizes, random weights) images/s by batch (caption.measure)
  filter           CP-CLIP / TI-CLIP scoring, OWL-ViT B/32 + CLIP B/32 (eval_speed.measure)
  train            one Custom Diffusion optimizer step on SD 1.5 sizes (train_speed.run)
  segment          SAM ViT-H, random weights saved as a checkpoint, loaded by the backend
  lifecycle        registry.configure / use / resident, stage by stage (when the registry
                   has them), peak memory per stage; benchmarks/memory_plan.py's summary
  repaint-compile  the same repaint with both UNets under torch.compile (last: the slowest
                   and least predictable; it gets whatever time is left)

Real sizes are built from the released configs with random weights (HF_HUB_OFFLINE=1:
nothing is downloaded), so FLOPs and memory are the real ones. `--tiny` runs the tests'
tiny models instead (tests/tiny/), on the CPU in a minute or two; then every figure that
needs a GPU is a row marked "skipped: no CUDA", never an estimate. Each row is (check,
setting, figure, unit, note); the rows go to --json (default $OUT/gpu_suite.json when $OUT
is set, as on the GPU machine) and one table is printed last.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# benchmarks/smoke.py (make benchmark-smoke): the smallest mode, and the line with the figure
# Its repaint and train sections run gpu_repaint.py and train_speed.py code, smoked on their own.
SMOKE = ["--tiny", "--only", "caption,filter,segment"]
HEADLINE = r"^gen4gen GPU check \("

NO_CUDA = "skipped: no CUDA"
LIMIT_S = 460  # the whole suite on a GPU: 8 minutes less a margin for the table and start-up


def row(check: str, setting: str, figure: float | None = None, unit: str = "", note: str = "") -> dict:
    return {"check": check, "setting": setting, "figure": figure, "unit": unit, "note": note}


class Ctx:
    """What a section needs to know: tiny or real size, and where it runs."""

    def __init__(self, tiny: bool):
        import torch

        self.cuda = torch.cuda.is_available()
        self.tiny = tiny or not self.cuda
        self.device = "cuda" if self.cuda else "cpu"
        self.size = "tiny" if self.tiny else "real size"
        if not self.cuda:
            torch.set_num_threads(1)  # tiny models gain nothing from threads; on a busy CPU they spin

    def sync_reset(self) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        import torch

        if not self.cuda:
            return None
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**30

    def peak_row(self, stage: str, peak: float | None, what: str) -> dict:
        if peak is None:
            return row("peak memory", stage, None, "GiB", NO_CUDA)
        return row("peak memory", stage, round(peak, 2), "GiB", f"{self.size}: {what}")

    def gpu_only(self, check: str, setting: str, unit: str) -> list[dict]:
        """The real-size figure a CPU run cannot give, said as such."""
        return [] if self.cuda else [row(check, setting, None, unit, NO_CUDA)]


# --------------------------------------------------------------------------- sections


def s_env(ctx: Ctx) -> list[dict]:
    import diffusers
    import torch
    import transformers

    versions = (f"torch {torch.__version__}, diffusers {diffusers.__version__}, "
                f"transformers {transformers.__version__}")
    if not ctx.cuda:
        return [row("env", "device", None, "GiB", f"{NO_CUDA}; {versions}")]
    p = torch.cuda.get_device_properties(0)
    return [row("env", torch.cuda.get_device_name(0), round(p.total_memory / 2**30, 1), "GiB",
                f"CUDA {torch.version.cuda}, sm_{p.major}{p.minor}; {versions}")]


def s_pytest(ctx: Ctx, budget: float) -> list[dict]:
    import xml.etree.ElementTree as ET

    report = Path(tempfile.mkdtemp(prefix="gpu-suite-pytest-")) / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", f"--junitxml={report}",
           "tests/models/test_gpu.py"]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1" if not ctx.cuda else "8")}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(budget - 10, 10))
    print(done.stdout[-4000:], done.stderr[-2000:], sep="\n")
    if not report.exists():
        return [row("pytest -m gpu", "tests/models/test_gpu.py", None, "",
                    f"error: no report, rc {done.returncode}")]
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    total, skipped = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
    failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    cases = list(suite.iter("testcase"))
    failures = [c.get("name") for c in cases if c.find("failure") is not None or c.find("error") is not None]
    reasons = {c.find("skipped").get("message", "") for c in cases if c.find("skipped") is not None}
    setting = "tests/models/test_gpu.py"
    return [
        row("pytest -m gpu", setting, total - failed - skipped, "passed", f"{suite.get('time', '?')} s"),
        row("pytest -m gpu", setting, failed, "failed", ", ".join(failures)[:200]),
        row("pytest -m gpu", setting, skipped, "skipped", "; ".join(sorted(reasons))[:120]),
    ]


def _repaint_rows(ctx: Ctx, argv: list[str], check: str) -> tuple[list[dict], dict]:
    import gpu_repaint

    r = gpu_repaint.measure(argv)
    rows_, loop_rate = [], r["rows"][0][1] / r["rows"][0][2]
    setting = f"{r['size']} px, {r['steps']} steps, {ctx.size}"
    for name, count, secs, peak in r["rows"]:
        rate = count / secs
        note = f"{secs / count:.3f} s/img, {rate / loop_rate:.2f}x loop"
        if r["cuda"]:
            note += f", peak {peak:.1f} GiB, {100 * r['floor'] * rate:.0f}% of FLOP floor"
        rows_.append(row(check, f"{name}; {setting}", round(rate, 3), "img/s", note))
    return rows_, r


def s_repaint(ctx: Ctx) -> list[dict]:
    if ctx.tiny:
        argv = ["--tiny", "--batches", "1,2", "--loop-images", "2", "--no-compile"]
    else:  # 20 of the paper's 60 steps: the rate per UNet call is the same, the section 3x shorter
        argv = ["--batches", "1,4", "--loop-images", "4", "--steps", "20", "--no-compile"]
    rows_, r = _repaint_rows(ctx, argv, "repaint")
    if r["cuda"]:
        rows_.append(row("repaint", f"FLOP floor, {r['size']} px, {r['steps']} steps", round(r["floor"], 3),
                         "s/img", f"{r['flops']['total'] / 1e12:.1f} TFLOP per image at 989 TFLOP/s"))
        one = [p for name, n, _, p in r["rows"] if name == "batch 1"]
        rows_.append(ctx.peak_row("repaint (SDXL + refiner)", one[0] if one else None, "batch 1, 1024 px"))
    else:
        rows_ += ctx.gpu_only("repaint", "real size 1024 px, fp16", "img/s")
        rows_.append(ctx.peak_row("repaint (SDXL + refiner)", None, ""))
    return rows_


def s_repaint_compile(ctx: Ctx) -> list[dict]:
    if ctx.tiny:  # the eager backend checks the wiring without a C compiler or minutes of inductor
        argv = ["--tiny", "--batches", "2", "--loop-images", "1", "--compile", "--compile-backend", "eager"]
    else:
        argv = ["--batches", "4", "--loop-images", "1", "--steps", "20", "--compile"]
    rows_, r = _repaint_rows(ctx, argv, "repaint compile")
    eager = {n: n / secs for name, n, secs, _ in r["rows"] if name.startswith("batch ")}
    for rw, (name, n, secs, _) in zip(rows_, r["rows"]):
        if name.startswith("compiled") and n in eager:
            rw["note"] += f", {n / secs / eager[n]:.2f}x eager"
    if ctx.tiny:
        rows_[-1]["note"] += "; backend eager: wiring only"
    return rows_ + ctx.gpu_only("repaint compile", "real size, inductor", "img/s")


def s_caption(ctx: Ctx) -> list[dict]:
    import caption

    if ctx.tiny:
        from gen4gen.models.caption.llava import LlavaCaptioner
        from tests.tiny.llava import tiny_llava

        folder = tiny_llava(Path(tempfile.mkdtemp(prefix="tiny-llava-")))
        cap = LlavaCaptioner(model=str(folder), device=ctx.device, max_new_tokens=10)
        n, batches, what = 4, (1, 4), "tiny LLaVA"
    else:
        cap = caption.random_size_captioner(caption.REAL_7B, device="cuda", max_new_tokens=30)
        n, batches, what = 8, (1, 8), "LLaVA-1.5-7B sizes"
    ctx.sync_reset()
    rows_ = []
    for r in caption.measure(cap, n, batches):
        rows_.append(row("caption", f"{what}, batch {r['batch']}, {cap.max_new_tokens} tokens, {cap.dtype}",
                         round(r["images_s"], 3), "img/s", f"{r['tokens_s']:.0f} tokens/s"))
    rows_ += ctx.gpu_only("caption", "LLaVA-1.5-7B sizes, fp16", "img/s")
    return rows_ + [ctx.peak_row("caption (LLaVA)", ctx.peak_gib(), f"{what}, batch {max(batches)}")]


def s_filter(ctx: Ctx) -> list[dict]:
    import eval_speed

    n = 8 if ctx.tiny else 128
    ctx.sync_reset()
    r = eval_speed.measure(images=n, concepts=3, size=512, tiny=ctx.tiny, device=ctx.device)
    what = "tiny" if ctx.tiny else "OWL-ViT B/32 + CLIP B/32"
    rows_ = []
    for mode, secs in (("batched", r["batched_s"]), ("one at a time", r["single_s"])):
        rate = n / secs
        note = f"{eval_speed.PAPER_IMAGES / rate:.1f} s for the paper's {eval_speed.PAPER_IMAGES} images"
        if mode == "batched" and not ctx.tiny:
            note += f" (goal < {eval_speed.GOAL_SECONDS:.0f} s)"
        rows_.append(row("eval scoring", f"{mode}, {what}, {n} images, 3 concepts", round(rate, 2), "img/s", note))
    rows_ += ctx.gpu_only("eval scoring", "real size, fp16, 246 images", "img/s")
    return rows_ + [ctx.peak_row("filter / eval (OWL-ViT + CLIP)", r["peak_gib"], f"{what}, batch 16/64")]


def s_train(ctx: Ctx) -> list[dict]:
    import train_speed

    if ctx.tiny:
        argv = ["--tiny", "--batch", "2", "--steps", "2", "--warmup", "1", "--device", ctx.device]
    else:
        argv = ["--precision", "bf16", "--batch", "8", "--steps", "3", "--warmup", "1"]
    r = train_speed.run(train_speed.parse(argv))
    setting = f"{r['size']}, {r['precision']}, {r['res']} px, batch {r['batch']}"
    rows_ = [row("train step", setting, round(r["s_step"], 3), "s/step",
                 f"{2000 * r['s_step'] / 60:.1f} min for 2000 steps; {r['trainable'] / 1e6:.2f} M trainable")]
    rows_ += ctx.gpu_only("train step", "SD 1.5 sizes, bf16, 512 px, batch 8", "s/step")
    peak = r["memory"] if r["kind"] == "GPU" else None
    return rows_ + [ctx.peak_row("train (Custom Diffusion)", peak, setting)]


def _photos(n: int):
    import numpy as np
    import skimage.data

    base = [skimage.data.coffee(), skimage.data.chelsea(), skimage.data.astronaut()]
    return [(np.ascontiguousarray(base[i % len(base)]), None) for i in range(n)]


def s_segment(ctx: Ctx) -> list[dict]:
    import torch

    from gen4gen.models.segment.sam import SamSegmenter, build_sam
    from tests.tiny.sam import tiny_sam

    folder = Path(tempfile.mkdtemp(prefix="gpu-suite-sam-"))
    if ctx.tiny:
        options, what = {**tiny_sam(folder), "device": ctx.device}, "tiny SAM"
    else:  # ViT-H with random weights, saved as Meta's checkpoints are and loaded by the backend
        torch.manual_seed(0)
        with torch.device(ctx.device):  # initialised on the GPU: 636 M parameters in a second
            torch.save(build_sam("vit_h").state_dict(), folder / "sam_vit_h_random.pth")
        options, what = {"checkpoint": str(folder / "sam_vit_h_random.pth"), "model_type": "vit_h"}, "SAM ViT-H"
    sam = SamSegmenter(**options)
    items = _photos(4)
    sam.segment_batch(items[:1])  # warm-up
    ctx.sync_reset()
    start = time.perf_counter()
    sam.segment_batch(items)
    took = time.perf_counter() - start
    rows_ = [row("segment", f"{what}, 4 photos, batch {sam.options.batch_size}", round(4 / took, 2), "img/s")]
    return rows_ + ctx.gpu_only("segment", "SAM ViT-H, fp16", "img/s") + [
        ctx.peak_row("segment (SAM)", ctx.peak_gib(), f"{what}, 4 photos")]


def _stage_models(ctx: Ctx) -> list[tuple[str, str, str, dict]]:
    """(stage, family, backend, options) in stage order, on the tests' tiny models."""
    from tests.tiny.llava import tiny_llava
    from tests.tiny.sam import tiny_sam
    from tests.tiny.sdxl import tiny_sdxl_inpaint
    from tests.tiny.vision import tiny_clip, tiny_owlvit

    root = Path(tempfile.mkdtemp(prefix="gpu-suite-life-"))
    base = tiny_sdxl_inpaint(root / "sdxl", refiners={root / "refiner": 10})
    dev = {"device": ctx.device}
    return [
        ("segment", "segment", "sam", {**tiny_sam(root / "sam"), **dev}),
        ("repaint", "repaint", "sdxl", {"model": str(base), "refiner": str(root / "refiner"), "size": 64,
                                        "steps": 2, **dev}),
        ("caption", "caption", "llava", {"model": str(tiny_llava(root / "llava")), "max_new_tokens": 5, **dev}),
        ("filter", "vision", "clip", {**tiny_clip(root / "clip"), **dev}),
        ("filter", "vision", "owlvit", {"model": str(tiny_owlvit(root / "owlvit")), **dev}),
    ]


def _exercise(stage: str, backend: str, model) -> None:
    """One small batch through the model, as its stage would call it."""
    import numpy as np

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    if stage == "segment":
        model.segment_batch(_photos(1))
    elif stage == "repaint":
        mask = np.zeros((96, 96), np.float32)
        mask[30:80, 20:56] = 1.0
        model.repaint_batch([image * mask[..., None].astype(np.uint8)], [mask], ["in a garden"], [0],
                            [[(20, 30, 36, 50)]])
    elif stage == "caption":
        model.describe([image])
    elif backend == "clip":
        model.image_features([image])
    else:
        model.detect([image], [["cat"]])


def s_lifecycle(ctx: Ctx, gpu_memory_gb: float) -> list[dict]:
    from gen4gen.models import registry

    rows_ = []
    registry.configure(gpu_memory_gb=gpu_memory_gb, device=ctx.device)
    for stage, family, backend, options in _stage_models(ctx):
        ctx.sync_reset()
        start = time.perf_counter()
        with registry.use(family, backend, options) as model:
            _exercise(stage, backend, model)
        took = time.perf_counter() - start
        resident = registry.resident()
        names = ", ".join(f"{r.family}/{r.backend} on {r.device} {r.bytes / 2**20:.1f} MiB" for r in resident)
        peak = ctx.peak_gib()
        figure, unit = (round(peak, 3), "GiB") if peak is not None else (round(took, 2), "s")
        rows_.append(row("lifecycle", f"{stage} ({family}/{backend}), tiny, budget {gpu_memory_gb:g} GB",
                         figure, unit, f"resident after: {names or 'none'}"
                         + ("" if peak is not None else f"; peak memory {NO_CUDA}")))
    plan = ROOT / "benchmarks" / "memory_plan.py"
    if plan.exists():
        done = subprocess.run([sys.executable, str(plan)], cwd=ROOT, capture_output=True, text=True, timeout=60)
        lines = [ln for ln in done.stdout.splitlines() if ln.strip()]
        summary = next((ln for ln in reversed(lines) if "summary" in ln.lower()), lines[-1] if lines else "")
        note = (summary.strip()[:200] if done.returncode == 0
                else f"error rc {done.returncode}: {done.stderr[-200:]}")
        rows_.append(row("memory plan", "benchmarks/memory_plan.py", None, "", note))
    else:
        rows_.append(row("memory plan", "benchmarks/memory_plan.py", None, "", "skipped: not in this tree"))
    return rows_


# name, time limit on a GPU (s), with --tiny (s), function
SECTIONS = [
    ("env", 30, 60, lambda ctx, a: s_env(ctx)),
    ("pytest", 90, 240, lambda ctx, a: s_pytest(ctx, a.budget)),
    ("repaint", 110, 180, lambda ctx, a: s_repaint(ctx)),
    ("caption", 70, 120, lambda ctx, a: s_caption(ctx)),
    ("filter", 50, 120, lambda ctx, a: s_filter(ctx)),
    ("train", 50, 120, lambda ctx, a: s_train(ctx)),
    ("segment", 60, 90, lambda ctx, a: s_segment(ctx)),
    ("lifecycle", 30, 120, lambda ctx, a: s_lifecycle(ctx, a.gpu_memory_gb)),
    ("repaint-compile", 200, 180, lambda ctx, a: s_repaint_compile(ctx)),
]


# --------------------------------------------------------------------------- running


def child(args) -> int:
    """Run one section in this process; its rows go to --rows-out, an error becomes a row."""
    fn = dict((name, f) for name, _, _, f in SECTIONS)[args.section]
    try:
        rows_ = fn(Ctx(args.tiny), args)
        code = 0
    except BaseException as e:  # noqa: BLE001 - SystemExit from a benchmark's argparse too
        traceback.print_exc()
        last = traceback.extract_tb(e.__traceback__)[-1]
        rows_ = [row(args.section, "error", None, "",
                     f"{type(e).__name__}: {str(e)[:160]} ({Path(last.filename).name}:{last.lineno})")]
        code = 1
    Path(args.rows_out).write_text(json.dumps(rows_))
    return code


def run_section(name: str, limit: float, args, logs: Path) -> tuple[list[dict], str]:
    out = logs / f"{name}.rows.json"
    log = logs / f"{name}.log"
    cmd = [sys.executable, __file__, "--section", name, "--rows-out", str(out), "--budget", str(limit),
           "--gpu-memory-gb", str(args.gpu_memory_gb)] + (["--tiny"] if args.tiny else [])
    with open(log, "w") as f:
        # Own process group: a timeout kills the section and whatever it started (pytest, compile workers).
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            return [row(name, "error", None, "", f"timeout after {limit:.0f} s (log {log})")], "timeout"
    if out.exists():
        return json.loads(out.read_text()), "ok" if rc == 0 else "failed"
    tail = " | ".join(log.read_text().strip().splitlines()[-3:])[-200:]
    return [row(name, "error", None, "", f"exit {rc} without rows: {tail}")], "crashed"


def table(rows_: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, show_lines=False, header_style="bold")
    for col, kw in (("check", {}), ("setting", {"overflow": "fold"}), ("figure", {"justify": "right"}),
                    ("unit", {}), ("note", {"overflow": "fold"})):
        t.add_column(col, **kw)
    for r in rows_:
        f = r["figure"]
        figure = "-" if f is None else (f"{f:.3g}" if isinstance(f, float) and abs(f) < 1000 else str(f))
        style = "yellow" if r["note"].startswith("skipped") else "red" if r["setting"] == "error" else None
        t.add_row(r["check"], r["setting"], figure, r["unit"], r["note"], style=style)
    Console(width=160).print(t)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny models (CPU: a minute or two); GPU figures skipped")
    p.add_argument("--json", help="rows as JSON (default: $OUT/gpu_suite.json when $OUT is set)")
    p.add_argument("--only", help="comma-separated sections: " + ",".join(s[0] for s in SECTIONS))
    p.add_argument("--limit", type=float,
                   help=f"whole-suite seconds (default {LIMIT_S} on a GPU, 900 with --tiny)")
    p.add_argument("--gpu-memory-gb", type=float, default=24.0,
                   help="the lifecycle section's budget (24: the paper's card)")
    p.add_argument("--section", help=argparse.SUPPRESS)
    p.add_argument("--rows-out", help=argparse.SUPPRESS)
    p.add_argument("--budget", type=float, default=60.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.section:
        return child(args)

    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.tiny:
        print("no CUDA device: running the tiny checks; every real-size figure is a row 'skipped: no CUDA'")
        args.tiny = True
    limit = args.limit or (LIMIT_S if cuda and not args.tiny else 900)
    wanted = args.only.split(",") if args.only else [s[0] for s in SECTIONS]
    unknown = set(wanted) - {s[0] for s in SECTIONS}
    if unknown:
        p.error(f"--only: unknown sections {sorted(unknown)}")
    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else None
    json_path = Path(args.json) if args.json else (out_dir / "gpu_suite.json" if out_dir else None)
    logs = (out_dir / "gpu_suite_logs") if out_dir else Path(tempfile.mkdtemp(prefix="gpu-suite-"))
    logs.mkdir(parents=True, exist_ok=True)

    began = time.perf_counter()
    rows_, times = [], []
    mode = "tiny" if args.tiny else "real size"
    print(f"gpu_suite: {mode} on {'cuda' if cuda else 'cpu'}, limit {limit:.0f} s, logs in {logs}", flush=True)
    for name, gpu_s, tiny_s, _ in SECTIONS:
        if name not in wanted:
            continue
        left = limit - (time.perf_counter() - began)
        budget = min(tiny_s if args.tiny else gpu_s, left)
        if name == "repaint-compile":
            budget = left  # last on purpose: it takes what the others left
        if budget < 20:
            rows_.append(row(name, "not run", None, "", f"skipped: suite limit {limit:.0f} s spent"))
            times.append(row("section time", name, None, "s", "skipped: no time left"))
            continue
        start = time.perf_counter()
        got, status = run_section(name, budget, args, logs)
        took = time.perf_counter() - start
        rows_ += got
        times.append(row("section time", name, round(took, 1), "s", f"{status} (limit {budget:.0f} s)"))
        print(f"[{name}] {status} in {took:.1f} s (limit {budget:.0f} s)", flush=True)

    # Peak memory per stage together, then the times: the table reads section, memory, time.
    memory = [r for r in rows_ if r["check"] == "peak memory"]
    rows_ = [r for r in rows_ if r["check"] != "peak memory"] + memory + times
    total = time.perf_counter() - began
    rows_.append(row("section time", "whole suite", round(total, 1), "s", f"limit {limit:.0f} s"))
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"mode": mode, "cuda": cuda, "seconds": total, "rows": rows_}, indent=1))
    where = "CUDA" if cuda else "no CUDA: GPU figures skipped"
    table(rows_, f"gen4gen GPU check ({mode}, {where}), {total:.0f} s")
    if not cuda:
        print("not run here: every real-size figure (no CUDA): rows marked 'skipped: no CUDA'")
    if json_path:
        print(f"rows: {json_path}")
    failed = [r for r in rows_ if r["setting"] == "error" or (r["unit"] == "failed" and r["figure"])]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
