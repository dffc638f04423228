"""Incremental regeneration: the rerun after changing one of N compositions, over the full run.

    python benchmarks/incremental.py [--tiny] [--config configs/demo.yaml] [--samples 4] [--workers W]

A full run of the recipe into a fresh folder, then the same recipe with one composition's
scenes changed, into the same folder: only that composition's stages run again (cache hits
for the rest), the plan and publish steps run again whole. Goal: rerun / full <= 1/N + 0.05.
Both runs under one local Prefect server, after a warm-up run (modules, textures loaded).
`--tiny` (canvas 128, 1 sample, 3 compositions) is for CPU machines; GPU figures at real sizes are missing.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

# benchmarks/smoke.py (make benchmark-smoke): the smallest mode, and the line with the figure
SMOKE = ["--tiny"]
HEADLINE = r"^rerun / full: "


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    parser.add_argument("--samples", type=int, default=4, help="samples per composition")
    parser.add_argument("--tiny", action="store_true", help="canvas 128, 1 sample per composition, 3 compositions")
    # The rerun's one composition keeps one worker busy, the full run all of them: with the
    # recipe's 2 workers the ratio also holds the lost parallelism, with 1 only the overhead.
    parser.add_argument("--workers", type=int, help="run.workers (default: the recipe's)")
    args = parser.parse_args()

    from prefect.testing.utilities import prefect_test_harness

    from gen4gen.flows.generate import run_generate
    from gen4gen.infra import progress
    from gen4gen.infra.config import load_config

    config = load_config(args.config)
    samples, canvas = (1, 128) if args.tiny else (args.samples, config.canvas)
    comps = config.compositions[:3] if args.tiny else config.compositions
    config = config.model_validate(
        config.model_dump() | {"canvas": canvas, "compositions": [c.model_dump() | {"samples": samples} for c in comps]}
    )
    if args.workers:
        config = config.model_copy(update={"run": config.run.model_copy(update={"workers": args.workers})})
    n = len(config.compositions)
    changed = config.compositions[0]
    edited = config.model_validate(
        config.model_dump()
        | {"compositions": [c.model_dump() | ({"scenes": ["a garden at dusk"]} if c.id == changed.id else {}) for c in config.compositions]}
    )
    calls: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=120):
        run_generate(config.model_validate(config.model_dump() | {"compositions": [config.compositions[0].model_dump() | {"samples": 1}]}), f"{tmp}/warm")
        start = time.perf_counter()
        run_generate(config, f"{tmp}/out")
        full = time.perf_counter() - start
        stop = progress.listen_computed(lambda comp, stage, k: calls.append((comp, stage)))
        start = time.perf_counter()
        run_generate(edited, f"{tmp}/out")
        rerun = time.perf_counter() - start
        stop()
        logging.disable(logging.CRITICAL)  # the test server's shutdown logs a cancelled flush
    logging.disable(logging.NOTSET)

    print(f"recipe: {n} compositions x {samples} samples, canvas {canvas}, {config.run.workers} workers; "
          f"changed: {changed.id}")
    print(f"{'run':36s} {'wall s':>8s}")
    print(f"{'full run':36s} {full:8.2f}")
    print(f"{'rerun, one composition changed':36s} {rerun:8.2f}")
    print(f"compositions whose stages ran again: {sorted({c for c, _ in calls})}")
    print(f"rerun / full: {rerun / full:.3f} (goal <= 1/N + 0.05 = {1 / n + 0.05:.3f})")


if __name__ == "__main__":
    main()
