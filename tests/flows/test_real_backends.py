"""Tier 3: `gen4gen generate` with every stage on a real backend, as a user's config sets it.

SAM cuts the objects out, SDXL inpainting + refiner repaints the background, LLaVA writes
the captions, OWL-ViT + CLIP filter the results: tiny random models of the real classes,
saved in a temporary folder and named in the recipe exactly as real weights would be. The
published dataset must have the same shape as the offline run's (same files, same columns,
loadable with `datasets`), which is what training and evaluation read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, small_recipe

pytest.importorskip("diffusers")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> dict:
    from tests.tiny.llava import tiny_llava
    from tests.tiny.sam import tiny_sam
    from tests.tiny.sdxl import tiny_sdxl_inpaint
    from tests.tiny.vision import tiny_clip, tiny_owlvit

    root = tmp_path_factory.mktemp("weights")
    return {
        "sam": tiny_sam(root / "sam"),
        "sdxl": str(tiny_sdxl_inpaint(root / "sdxl", refiners={root / "refiner": 10})),
        "refiner": str(root / "refiner"),
        "llava": str(tiny_llava(root / "llava")),
        "clip": tiny_clip(root / "clip"),
        "owlvit": str(tiny_owlvit(root / "owlvit")),
    }


def _recipe(tmp_path: Path, stages: dict | None) -> Path:
    raw = small_recipe(tmp_path, samples=2, canvas=96)
    raw["compositions"] = raw["compositions"][:1]
    if stages:
        raw["stages"] = stages
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _generate(recipe: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny models: one thread is fastest
    return subprocess.run([sys.executable, "-m", "gen4gen.flows.cli", "generate", str(recipe), "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _shape(out: Path) -> tuple[set[str], set[str]]:
    """The published dataset's top-level entries and its metadata columns."""
    top = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    columns = set().union(*(json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()))
    return top, columns


def test_generate_on_real_backends_publishes_like_the_offline_run(tiny_weights, tmp_path):
    real = {
        "segment": {"backend": "sam", "options": tiny_weights["sam"]},
        "repaint": {"backend": "sdxl", "options": {"model": tiny_weights["sdxl"], "refiner": tiny_weights["refiner"],
                                                    "size": 64, "steps": 4, "batch_size": 2}},
        "caption": {"backend": "llava", "options": {"model": tiny_weights["llava"], "batch_size": 2, "max_new_tokens": 6}},
        # Random weights: thresholds every detection passes, and random SAM masks (which the
        # cut-out checks flag) kept, so the samples are kept and published. Random masks are
        # speckle: pulled in by a few pixels (tasks/composite.py: main_body) little of them is
        # left, so no visible-area floor either.
        "filter": {"backend": "clip", "detect_threshold": 0.0, "min_similarity": -1.0, "drop_flagged_cutouts": False,
                   "min_visible_area": 0.0,
                   "vision": {"clip": tiny_weights["clip"], "owlvit": {"model": tiny_weights["owlvit"]}}},
    }
    result = _generate(_recipe(tmp_path / "real", real), tmp_path / "real-out")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    offline = _generate(_recipe(tmp_path / "offline", None), tmp_path / "offline-out")
    assert offline.returncode == 0, offline.stderr[-3000:]

    manifest = json.loads((tmp_path / "real-out" / "manifest.json").read_text())
    assert manifest["planned"] == 2 and manifest["kept"] >= 1, manifest
    assert _shape(tmp_path / "real-out") == _shape(tmp_path / "offline-out")

    # Every stage really ran on its real backend, and left its mark in the samples.
    samples = [json.loads(line) for f in (tmp_path / "real-out").glob("*/samples-*.jsonl")
               for line in f.read_text().splitlines()]
    assert len(samples) == 2
    for s in samples:
        assert {"detect.chelsea", "similarity.coffee", "cp_clip"} <= set(s["measures"]), s["measures"]
        assert "<chelsea>" in s["caption"] and "<coffee>" in s["caption"]
        # Random SAM masks are noise: the checks flag them, noted rather than dropped here.
        assert any(n["code"].startswith("cutout_") for n in s["notes"]), s["notes"]
    segment_cache = list((tmp_path / "real-out" / ".cache" / "segment").iterdir())
    assert [p.name.split("-")[0] for p in segment_cache] == ["sam"]

    from datasets import load_dataset

    train = load_dataset("imagefolder", data_dir=str(tmp_path / "real-out"))["train"]
    assert len(train) == manifest["kept"] and train[0]["image"].size == (96, 96)

    verified = subprocess.run([sys.executable, "-m", "gen4gen.flows.cli", "verify", str(tmp_path / "real-out")],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
    assert verified.returncode == 0, verified.stdout + verified.stderr
