"""Tier 3: a recipe whose filter uses the 'clip' backend runs through the generate flow."""

from __future__ import annotations

import pytest

from conftest import run_recipe, small_recipe
from gen4gen.tasks.publishing.publish import read_manifest, read_shard

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_recipe_with_clip_filter(tmp_path, tiny_vision):
    raw = small_recipe(tmp_path, samples=1, canvas=128)
    raw["compositions"] = raw["compositions"][:1]
    # Everything detected; a similarity floor no random crop reaches: every sample that
    # passed the rules is dropped by the model check, with its measures recorded.
    raw["stages"] = {"filter": {"backend": "clip", "vision": tiny_vision, "detect_threshold": 0.0, "min_similarity": 0.9999}}
    manifest = run_recipe(raw)
    assert manifest.planned == 1 and manifest.kept == 0
    (stats,) = read_manifest(manifest.uri).compositions
    (sample,) = read_shard(manifest.uri, stats)
    assert sample.status == "dropped"
    assert "low_similarity" in [r.code for r in sample.reasons]
    for c in sample.concepts:
        assert 0 < sample.measures[f"detect.{c}"] <= 1 and sample.measures[f"similarity.{c}"] < 0.9999
    assert "cp_clip" in sample.measures and "ti_clip" in sample.measures
