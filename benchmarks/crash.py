"""Crash-resume: kill `gen4gen generate` with SIGKILL at seeded random moments, rerun until
it finishes, and check that nothing was lost or doubled.

    python benchmarks/crash.py [--trials 20] [--seed 0] [--samples 3] [--canvas 256]

Each trial starts from a folder holding an older published version, kills the run (and its
temporary Prefect server: the whole process group) at a random moment, checks the folder
is readable as a whole dataset at that moment, reruns to completion, verifies the dataset
against its manifest and compares it with an uninterrupted run's. Prints one line a trial
and the number of recoveries.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# benchmarks/smoke.py (make benchmark-smoke): the smallest mode, and the line with the figure
SMOKE = ["--trials", "1", "--samples", "1", "--canvas", "128", "--kill-within", "0.5"]
HEADLINE = r" runs killed; \d+ of \d+ recovered"


def recipe(samples: int, out: Path, canvas: int = 256) -> dict:
    photos = {"chelsea": ("cat", "chelsea.png"), "coffee": ("mug", "coffee.png"), "rocket": ("rocket", "rocket.jpg")}
    return {
        "name": "crash",
        "canvas": canvas,
        "concepts": [
            {"id": cid, "category": cat, "token": f"<{cid}>", "photos": [f"pkgdata://skimage/data/{f}"]}
            for cid, (cat, f) in photos.items()
        ],
        "compositions": [
            {"id": "cat-mug", "concepts": ["chelsea", "coffee"], "samples": samples},
            {"id": "cat-mug-rocket", "concepts": ["chelsea", "coffee", "rocket"], "samples": samples},
            {"id": "rocket-mug", "concepts": ["rocket", "coffee"], "samples": samples},
        ],
        "run": {"out": str(out), "workers": 2, "retries": 1, "retry_delay_seconds": 0},
    }


def older(raw: dict, path: Path) -> None:
    """Publish the recipe `raw` (written to `path`) as `gen4gen generate` would, without Prefect."""
    from gen4gen.infra.config import load_config
    from gen4gen.tasks.publishing.ownership import claim
    from gen4gen.tasks.pipeline import run_local

    path.write_text(yaml.safe_dump(raw))
    config = load_config(str(path))
    claim(config.out, config, str(path))
    assert run_local(config)[0] is not None


def run(path: Path, out: Path, env: dict, kill_after: float | None) -> tuple[bool, float]:
    """Run the CLI; returns (finished, seconds). Kills the process group after kill_after."""
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gen4gen.flows.cli", "generate", str(path), "--out", str(out)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        code = proc.wait(timeout=kill_after)
        return code == 0, time.monotonic() - start
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return False, time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--canvas", type=int, default=256)
    parser.add_argument("--kill-within", type=float, default=0.9,
                        help="kill in [1 s, this share of the uninterrupted run] (0.5: one trial is surely killed)")
    args = parser.parse_args()
    from gen4gen.tasks.publishing.verify import fingerprint, problems

    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "PREFECT_HOME": str(tmp / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        env.pop("PREFECT_API_URL", None)
        path = tmp / "recipe.yaml"
        # An older version, published once and copied into each folder: a reader must find a
        # whole dataset (the old one or the new one) whenever the kill lands. Published in this
        # process (claimed as the CLI claims, the same publish code, no Prefect server to start).
        template = tmp / "older-version"
        older(recipe(1, template, args.canvas), tmp / "old.yaml")
        ref_out = tmp / "reference"
        shutil.copytree(template, ref_out)
        path.write_text(yaml.safe_dump(recipe(args.samples, ref_out, args.canvas)))
        ok, full = run(path, ref_out, env, None)
        assert ok and not problems(str(ref_out)), "the uninterrupted run failed"
        reference = fingerprint(str(ref_out))
        # Kill within the run's own duration, so that every trial is really killed.
        print(f"uninterrupted run: {full:.1f} s; killing at random moments in [1, {args.kill_within * full:.1f}] s")
        recovered = kills = 0
        for trial in range(args.trials):
            out = tmp / f"trial-{trial}"
            shutil.copytree(template, out)  # an older version is already published there
            moment = rng.uniform(1.0, args.kill_within * full)
            finished, _ = run(path, out, env, moment)
            killed = not finished
            torn = problems(str(out))  # what a reader sees right after the kill
            reruns = 0
            while not finished and reruns < 5:
                finished, _ = run(path, out, env, None)
                reruns += 1
            whole = finished and not problems(str(out)) and fingerprint(str(out)) == reference
            recovered += bool(whole and not torn and killed)
            kills += killed
            print(
                f"trial {trial:2d}: {'killed' if killed else 'finished before the kill'} at {moment:5.1f} s, "
                f"reader saw {'a whole dataset' if not torn else torn}, "
                f"{reruns} rerun(s), {'equal to the uninterrupted run' if whole else 'DIFFERENT'}"
            )
        print(f"{kills} of {args.trials} runs killed; {recovered} of {kills} recovered with nothing lost or doubled")


if __name__ == "__main__":
    main()
