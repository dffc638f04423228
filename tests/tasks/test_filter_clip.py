"""Tier 2: the 'clip' filter backend (OWL-ViT + CLIP, tiny random models) on real stage
outputs: thresholds decide, the reasons say why, the measures are kept."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from conftest import small_recipe
from gen4gen.infra.records import Concept, DatasetConfig, FilterConfig
from gen4gen.tasks.caption import CAPTION
from gen4gen.tasks.composite import COMPOSITE
from gen4gen.tasks.filter import FILTER
from gen4gen.tasks.pipeline import check_backends, jobs, own_cutouts
from gen4gen.tasks.plan import plan_composition
from gen4gen.tasks.repaint import REPAINT
from gen4gen.tasks.segment import segment_concept
from gen4gen.tasks.stage import run_samples


@pytest.fixture(scope="module")
def captioned(tmp_path_factory):
    """Samples up to the filter (4 samples over 2 compositions, 128 px canvas)."""
    tmp = tmp_path_factory.mktemp("filter-clip")
    config = DatasetConfig.model_validate(small_recipe(tmp, samples=2, canvas=128))
    out = config.out
    cutouts = {c.id: segment_concept(c, out, config.stages.segment) for c in config.concepts}
    samples = {}
    for cid, job in jobs(config, out, cutouts).items():
        s = plan_composition(job, own_cutouts(job, cutouts))
        for stage in (COMPOSITE, REPAINT, CAPTION):
            s = run_samples(stage, s, job)
        samples[cid] = s
    return config, out, samples, cutouts


def filter_with(captioned, limits: FilterConfig, concepts=None):
    """The filter stage on every composition's captioned samples, recomputed (not read back)."""
    config, out, samples, cutouts = captioned
    update = {"stages": config.stages.model_copy(update={"filter": limits})}
    if concepts is not None:
        update["concepts"] = concepts
    changed = config.model_copy(update=update)
    return [s for cid, job in jobs(changed, out, cutouts, refresh=True).items() for s in run_samples(FILTER, samples[cid], job)]


def clip_limits(tiny_vision, **kw) -> FilterConfig:
    # The rules off (every limit at its loosest) so that only the model checks decide.
    loose = dict(max_occlusion=1, min_visible_area=0, min_image_std=0, max_flat_share=1, max_hole_share=1)
    return FilterConfig(backend="clip", vision=tiny_vision, **{**loose, **kw})


def run(captioned, limits):
    return filter_with(captioned, limits)


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
    assert all("detect.chelsea" not in s.measures for group in captioned[2].values() for s in group)


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
    config = captioned[0]
    concepts = [c if c.id != "coffee" else Concept(id="coffee", category="mug", token="<coffee>",
                                                     photos=["/no/such/photo.png"]) for c in config.concepts]
    result = filter_with(captioned, clip_limits(tiny_vision, detect_threshold=0.0, min_similarity=-1.0), concepts)
    assert all(s.status == "failed" and "no_source_photos" in codes(s) for s in result)


def test_config_errors(captioned, tiny_vision):
    config = captioned[0]
    with pytest.raises(ValueError, match="stages.filter.backend: unknown backend 'owl'"):
        check_backends(config.model_copy(update={"stages": config.stages.model_copy(update={"filter": FilterConfig(backend="owl")})}))
    with pytest.raises(ValidationError, match=r"unknown keys \['clipp'\]"):
        FilterConfig(backend="clip", vision={"clipp": {}})
