"""Tier 2: the 'clip' filter backend (OWL-ViT + CLIP, tiny random models) on real stage
outputs: thresholds decide, the reasons say why, the measures are kept."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from conftest import small_recipe
from gen4gen.tasks.caption import caption_samples
from gen4gen.tasks.composite import composite_samples
from gen4gen.tasks.filter import filter_samples
from gen4gen.tasks.plan import plan_dataset
from gen4gen.infra.records import Concept, DatasetConfig, FilterConfig
from gen4gen.tasks.repaint import repaint_samples
from gen4gen.tasks.segment import cutouts_by_photo, segment_concept


@pytest.fixture(scope="module")
def captioned(tmp_path_factory):
    """Samples up to the filter (4 samples over 2 compositions, 128 px canvas)."""
    tmp = tmp_path_factory.mktemp("filter-clip")
    config = DatasetConfig.model_validate(small_recipe(tmp, samples=2, canvas=128))
    out = config.out
    cutouts = {c.id: segment_concept(c, out, config.stages.segment) for c in config.concepts}
    planned = plan_dataset(config, cutouts)
    samples = []
    for comp in config.compositions:
        s = composite_samples(planned[comp.id], cutouts_by_photo(cutouts, comp.concepts), out)
        samples += caption_samples(repaint_samples(s, out, config.stages.repaint), config)
    return config, out, samples


def clip_limits(tiny_vision, **kw) -> FilterConfig:
    # The rules off (every limit at its loosest) so that only the model checks decide.
    loose = dict(max_occlusion=1, min_visible_area=0, min_image_std=0, max_flat_share=1, max_hole_share=1)
    return FilterConfig(backend="clip", vision=tiny_vision, **{**loose, **kw})


def run(captioned, limits):
    config, out, samples = captioned
    return filter_samples(samples, out, limits, config.concepts)


def measured(samples, prefix):
    return [v for s in samples for k, v in s.measures.items() if k.startswith(prefix)]


def codes(sample):
    return [r.code for r in sample.reasons]


def test_loose_thresholds_keep_everything_and_record_measures(captioned, tiny_vision):
    out = run(captioned, clip_limits(tiny_vision, detect_threshold=0.0, min_similarity=-1.0))
    assert [s.status for s in out] == ["kept"] * 4
    for s in out:
        for c in s.concepts:
            assert 0.0 < s.measures[f"detect.{c}"] <= 1.0
            assert -1.0 <= s.measures[f"similarity.{c}"] <= s.measures[f"best_similarity.{c}"] + 1e-9
        assert s.measures["cp_clip"] == pytest.approx(
            sum(s.measures[f"best_similarity.{c}"] for c in s.concepts) / len(s.concepts), abs=1e-5)
        assert -1.0 <= s.measures["ti_clip"] <= 1.0
    # the inputs are not changed in place (thread-pool runs share them)
    assert all("detect.chelsea" not in s.measures for s in captioned[2])


def test_detection_threshold_drops_with_reasons(captioned, tiny_vision):
    first = run(captioned, clip_limits(tiny_vision, detect_threshold=0.0, min_similarity=-1.0))
    scores = measured(first, "detect.")
    threshold = float(np.median(scores))
    out = run(captioned, clip_limits(tiny_vision, detect_threshold=threshold, min_similarity=-1.0))
    missed = [(s, r) for s in out for r in s.reasons if r.code == "not_detected"]
    assert 0 < len(missed) < len(scores)  # both outcomes
    for s, r in missed:
        cid = r.detail.split(":")[0]
        assert s.status == "dropped" and r.stage == "filter"
        assert s.measures[f"detect.{cid}"] <= threshold
        assert f"{s.measures[f'detect.{cid}']:.3f} <= {threshold}" in r.detail
    for s in out:
        if s.status == "kept":
            assert all(s.measures[f"detect.{c}"] > threshold for c in s.concepts)


def test_similarity_threshold_drops_with_reasons(captioned, tiny_vision):
    first = run(captioned, clip_limits(tiny_vision, detect_threshold=0.0, min_similarity=-1.0))
    sims = measured(first, "similarity.")
    floor = float(np.median(sims))
    out = run(captioned, clip_limits(tiny_vision, detect_threshold=0.0, min_similarity=floor))
    low = [(s, r) for s in out for r in s.reasons if r.code == "low_similarity"]
    assert 0 < len(low) < len(sims)
    for s, r in low:
        cid = r.detail.split(":")[0]
        assert s.measures[f"similarity.{cid}"] < floor
        assert "similarity to its source photos" in r.detail
    kept = [s for s in out if s.status == "kept"]
    assert all(s.measures[f"similarity.{c}"] >= floor for s in kept for c in s.concepts)


def test_rules_still_apply(captioned, tiny_vision):
    limits = FilterConfig(backend="clip", vision=tiny_vision, detect_threshold=0.0, min_similarity=-1.0,
                          min_image_std=1000.0)  # no image has this much contrast
    out = run(captioned, limits)
    assert all(s.status == "dropped" and "low_contrast" in codes(s) for s in out)
    assert all("detect.chelsea" in s.measures for s in out if "chelsea" in s.concepts)


def test_unreadable_source_photos_fail_the_sample(captioned, tiny_vision):
    config, out, samples = captioned
    concepts = [c if c.id != "coffee" else Concept(id="coffee", category="mug", token="<coffee>",
                                                     photos=["/no/such/photo.png"]) for c in config.concepts]
    result = filter_samples(samples, out, clip_limits(tiny_vision, detect_threshold=0.0, min_similarity=-1.0), concepts)
    assert all(s.status == "failed" and "no_source_photos" in codes(s) for s in result)


def test_config_errors(captioned, tiny_vision):
    config, out, samples = captioned
    with pytest.raises(ValueError, match="needs the recipe's concepts"):
        filter_samples(samples, out, clip_limits(tiny_vision))
    with pytest.raises(ValidationError, match="unknown backend 'owl'"):
        FilterConfig(backend="owl")
    with pytest.raises(ValidationError, match=r"unknown keys \['clipp'\]"):
        FilterConfig(backend="clip", vision={"clipp": {}})
