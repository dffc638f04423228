"""Every benchmark in its smallest mode, one after another: `make benchmark-smoke` (CI runs it).

    python benchmarks/smoke.py [--only caption,crash] [--list]

Every other `benchmarks/*.py` is found by listing the folder, so a new script cannot be left
out. Each declares at its top level, as literals (read here without importing the script):

    SMOKE = ["--tiny"]              # the arguments of its smallest mode ([]: it has no larger one)
    HEADLINE = r"overhead ratio"    # a regex for the line of its output that holds its figure

A script without them, one that exits non-zero, runs past its time limit or prints no
headline line fails the smoke run. A script that needs what this machine lacks (a GPU, an
outside folder) prints one line starting `not run here:` and runs the rest; that line is
shown. Prints one row per script (its headline, its wall and CPU time) and exits 1 on any
failure.
Logs: $OUT/benchmark-smoke/ when $OUT is set, else a temporary folder (printed).
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NOT_HERE = "not run here:"  # what a script prints about what it could not run on this machine
LIMIT_S = 240  # one script's smoke run; the whole run's goal is 5 minutes on 2 cores


@dataclass
class Plan:
    """One script and its declared smallest mode (or why it has none)."""

    name: str
    path: Path
    args: list[str] = field(default_factory=list)
    headline: str = ""
    error: str = ""  # set when the script declares no usable small mode


def declared(path: Path, name: str):
    """The literal value of a top-level `name = ...` in the script, or KeyError."""
    tree = ast.parse(path.read_text(), str(path))
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets) and node.value is not None:
            return ast.literal_eval(node.value)
    raise KeyError(name)


def discover(folder: Path = HERE) -> list[Plan]:
    """Every benchmark script in `folder` (all `*.py` but this runner), with its small mode."""
    plans = []
    for path in sorted(folder.glob("*.py")):
        if path.resolve() == Path(__file__).resolve() or path.name.startswith("_"):
            continue
        plan = Plan(path.stem, path)
        try:
            plan.args = declared(path, "SMOKE")
            plan.headline = declared(path, "HEADLINE")
            if not (isinstance(plan.args, list) and all(isinstance(a, str) for a in plan.args)):
                raise ValueError(f"SMOKE is {plan.args!r}, not a list of strings")
            if not isinstance(plan.headline, str) or not plan.headline:
                raise ValueError(f"HEADLINE is {plan.headline!r}, not a regex")
            re.compile(plan.headline)
        except KeyError as err:
            plan.error = f"declares no {err.args[0]} (its smallest mode and headline: see benchmarks/smoke.py)"
        except (ValueError, SyntaxError, re.error) as err:
            plan.error = f"unusable smoke declaration: {err}"
        plans.append(plan)
    return plans


@dataclass
class Result:
    plan: Plan
    ok: bool
    headline: str
    notes: list[str]
    seconds: float
    log: Path | None = None
    cpu: float = 0.0  # CPU seconds of the script and everything it started (waited for)


def run(plan: Plan, logs: Path, limit: float = LIMIT_S) -> Result:
    if plan.error:
        return Result(plan, False, f"FAILED: {plan.error}", [], 0.0)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    # Small models gain nothing from threads, and on a shared CPU idle threads spin.
    env.setdefault("OMP_NUM_THREADS", "1")
    log = logs / f"{plan.name}.log"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, str(plan.path), *plan.args], cwd=ROOT, env=env, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)  # its own group: what it started (servers, CLI runs) goes too
            proc.wait()
            rc = None
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    text = log.read_text(errors="replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    notes = [ln for ln in lines if ln.startswith(NOT_HERE)]
    found = [ln for ln in lines if re.search(plan.headline, ln)]
    if rc is None:
        return Result(plan, False, f"FAILED: over its {limit:.0f} s limit", notes, seconds, log, cpu)
    if rc != 0:
        tail = " | ".join(lines[-3:])[-300:]
        return Result(plan, False, f"FAILED: exit {rc}: {tail}", notes, seconds, log, cpu)
    if not found:
        return Result(plan, False, f"FAILED: printed no line matching HEADLINE {plan.headline!r}", notes, seconds,
                      log, cpu)
    return Result(plan, True, found[-1], notes, seconds, log, cpu)


def table(results: list[Result], total: float) -> None:
    from rich.console import Console
    from rich.table import Table

    failed = sum(not r.ok for r in results)
    # The load average says how much of the wall time was other processes' (a shared machine).
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    t = Table(title=f"benchmark smoke: {len(results)} scripts, {failed} failed, {total:.0f} s wall, "
                    f"{sum(r.cpu for r in results):.0f} s CPU, load {load:.1f} on {os.cpu_count()} CPUs")
    t.add_column("script")
    t.add_column("headline (smallest mode)", overflow="fold")
    t.add_column("wall s", justify="right")
    t.add_column("CPU s", justify="right")
    for r in results:
        text = r.headline + "".join(f"\n[yellow]{n}[/yellow]" for n in r.notes)
        t.add_row(r.plan.name, text, f"{r.seconds:.1f}", f"{r.cpu:.1f}", style=None if r.ok else "red")
    Console(width=None if sys.stdout.isatty() else 160).print(t)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", help="comma-separated script names (default: every script)")
    p.add_argument("--list", action="store_true", help="print the scripts and their small modes, run nothing")
    p.add_argument("--limit", type=float, default=LIMIT_S, help="seconds per script")
    args = p.parse_args(argv)
    plans = discover()
    if args.only:
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - {pl.name for pl in plans})
        if unknown:
            p.error(f"--only: no such benchmark {unknown}")
        plans = [pl for pl in plans if pl.name in wanted]
    if args.list:
        for pl in plans:
            print(f"{pl.name:16s} {pl.error or ' '.join(['python', f'benchmarks/{pl.path.name}', *pl.args])}")
        return 1 if any(pl.error for pl in plans) else 0
    out = os.environ.get("OUT")
    logs = Path(out) / "benchmark-smoke" if out else Path(tempfile.mkdtemp(prefix="benchmark-smoke-"))
    logs.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    results = []
    for pl in plans:
        print(f"[smoke] {pl.name} {' '.join(pl.args)}", flush=True)
        results.append(run(pl, logs, args.limit))
        r = results[-1]
        print(f"[smoke] {pl.name}: {'ok' if r.ok else 'FAILED'} in {r.seconds:.1f} s", flush=True)
    total = time.perf_counter() - began
    table(results, total)
    for r in results:
        if not r.ok and r.log:
            print(f"\n--- {r.plan.name} (log {r.log}), last lines:")
            print("\n".join(r.log.read_text(errors="replace").splitlines()[-25:]))
    print(f"logs: {logs}")
    return 1 if any(not r.ok for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
