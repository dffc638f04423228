"""Rounds against one pass: what a target's top-up rounds cost over a single pass of as many samples.

    python benchmarks/rounds.py [--tiny] [--config configs/demo.yaml] [--keep 20] [--drop 0.6]
                                [--compositions 3] [--canvas 256]

A judge that drops a known share (`--drop`, spread evenly over the sample indices, after the
rules) gives a yield the first round cannot know. Run A asks each composition for `keep`
kept images (rounds: plan, stages, tally, until reached); run B plans the same number of
samples per composition as A ended with, in one pass (`samples: N`, no target). Both into
fresh folders under one local Prefect server, after a warm-up run. Printed side by side:
wall time, samples, rounds, seconds per sample and the stages' own seconds (summed over
samples); the difference is what rounds add (more task runs, the tallies, waiting for the
slowest composition of each round). Goal: rounds / one pass <= 1.25 at 2-3 rounds.
`--tiny` (canvas 64, 2 compositions, keep 6) is for the smoke run.
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
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

# benchmarks/smoke.py (make benchmark-smoke): the smallest mode, and the line with the figure
SMOKE = ["--tiny"]
HEADLINE = r"^rounds / one pass: "


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    parser.add_argument("--keep", type=int, default=20, help="kept images asked per composition")
    parser.add_argument("--drop", type=float, default=0.6,
                        help="share of samples the judge drops (the first round plans for 0.5)")
    parser.add_argument("--compositions", type=int, default=3)
    parser.add_argument("--canvas", type=int, default=256)
    parser.add_argument("--tiny", action="store_true", help="canvas 64, 2 compositions, keep 6")
    args = parser.parse_args()
    if args.tiny:
        args.keep, args.compositions, args.canvas = 6, 2, 64

    from prefect.testing.utilities import prefect_test_harness

    from gen4gen.flows.generate import run_generate
    from gen4gen.infra.config import load_config
    from gen4gen.models import registry

    from _share_judge import share_judge  # a module of its own: a backend's code version hashes its module

    registry.register("filter", "share")(share_judge(args.drop))
    base = load_config(args.config)
    comps = [c.model_dump(exclude={"samples", "keep", "max_samples"}) for c in base.compositions[: args.compositions]]
    raw = base.model_dump() | {"canvas": args.canvas, "stages": base.stages.model_dump() | {
        "filter": base.stages.filter.model_dump() | {"backend": "share"}}}
    targeted = base.model_validate(raw | {"compositions": [c | {"keep": args.keep} for c in comps]})

    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=120):
        warm = base.model_validate(raw | {"compositions": [comps[0] | {"samples": 1}]})
        run_generate(warm, f"{tmp}/warm")
        start = time.perf_counter()
        a = run_generate(targeted, f"{tmp}/rounds")
        rounds_s = time.perf_counter() - start
        single = base.model_validate(raw | {"compositions": [
            c | {"samples": st.tried} for c, st in zip(comps, a.compositions)]})
        start = time.perf_counter()
        b = run_generate(single, f"{tmp}/single")
        single_s = time.perf_counter() - start
        logging.disable(logging.CRITICAL)  # the test server's shutdown logs a cancelled flush
    logging.disable(logging.NOTSET)

    def stage_s(m) -> float:
        return sum(sum(st.seconds.values()) for st in m.compositions)

    n_a, n_b = sum(st.tried for st in a.compositions), sum(st.tried for st in b.compositions)
    print(f"recipe: {len(comps)} compositions, keep {args.keep} each, judge drops {args.drop:.0%}, "
          f"canvas {args.canvas}, {targeted.run.workers} workers")
    print(f"{'':24s} {'wall s':>8s} {'samples':>8s} {'rounds':>7s} {'kept':>6s} {'s/sample':>9s} {'stages s':>9s}")
    for name, m, wall in (("rounds (keep)", a, rounds_s), ("one pass (samples)", b, single_s)):
        n = sum(st.tried for st in m.compositions)
        print(f"{name:24s} {wall:8.2f} {n:8d} {max(st.rounds for st in m.compositions):7d} {m.kept:6d} "
              f"{wall / n:9.3f} {stage_s(m):9.2f}")
    print(f"per composition (rounds): " + ", ".join(
        f"{st.composition} {st.kept}/{st.target} in {st.rounds} rounds of {st.tried}" for st in a.compositions))
    assert n_a == n_b, "the single pass plans as many samples as the rounds did"
    note = "; --tiny: each round's fixed task start-up is most of it" if args.tiny else ""
    print(f"rounds / one pass: {rounds_s / single_s:.3f} (wall; goal <= 1.25 at 2-3 rounds{note})")


if __name__ == "__main__":
    main()
