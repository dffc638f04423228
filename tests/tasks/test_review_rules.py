"""Tier 1: people's ratings drop kept samples, never revive dropped ones, and are recorded."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from gen4gen.infra.records import Box, DatasetConfig, LayoutPlan, Reason, ReviewConfig, Sample
from gen4gen.tasks.views.review import RATING, apply_decisions, decisions_for, summary, unknown_ids


def sample(index: int, status: str = "kept", reasons: list[Reason] | None = None) -> Sample:
    plan = LayoutPlan(
        composition="cat-mug", index=index, canvas=64, scene="a kitchen", seed=index,
        boxes=[Box(concept="cat", x=0, y=0, w=10, h=10)], photos={"cat": "file:///cat.png"},
    )
    return Sample(
        id=f"{index:05d}-abc", composition="cat-mug", concepts=["cat"], tokens=["<cat>"], plan=plan,
        status=status, reasons=reasons or [],
    )


def test_a_kept_sample_rated_below_min_rating_is_dropped_with_reason_human():
    low, high, edge = sample(0), sample(1), sample(2)
    out = apply_decisions([low, high, edge], {low.id: 2, high.id: 5, edge.id: 4}, min_rating=4)
    assert [s.status for s in out] == ["dropped", "kept", "kept"]
    assert out[0].reasons == [Reason(code="human", stage="review", detail="rated 2 < 4")]
    assert out[1].reasons == [] and out[2].reasons == []
    assert [s.measures[RATING] for s in out] == [2.0, 5.0, 4.0]
    # The inputs are another task's results: they are not changed in place.
    assert low.status == "kept" and RATING not in low.measures


def test_a_rating_never_brings_back_a_dropped_or_failed_sample():
    occluded = Reason(code="occluded", stage="filter", detail="cat: 60% hidden > 40%")
    broken = Reason(code="bad_input", stage="composite", detail="cat.png: truncated")
    dropped, failed = sample(0, "dropped", [occluded]), sample(1, "failed", [broken])
    out = apply_decisions([dropped, failed], {dropped.id: 5, failed.id: 1})
    assert [(s.status, s.reasons) for s in out] == [("dropped", [occluded]), ("failed", [broken])]
    # The disagreement stays visible in the record.
    assert out[0].measures[RATING] == 5.0


def test_unrated_samples_keep_their_verdict_and_a_second_review_changes_nothing():
    rated, unrated = sample(0), sample(1)
    once = apply_decisions([rated, unrated], {rated.id: 1}, min_rating=3)
    assert [s.status for s in once] == ["dropped", "kept"] and RATING not in once[1].measures
    twice = apply_decisions(once, {rated.id: 1}, min_rating=3)
    assert [s.model_dump() for s in twice] == [s.model_dump() for s in once]
    assert "rated 1 < 3" in twice[0].reasons[0].detail and len(twice[0].reasons) == 1


def test_ids_naming_no_sample_are_reported_not_ignored():
    a, b = sample(0), sample(1)
    decisions = {a.id: 2, "99999-gone": 5, "00042-other": 1}
    assert unknown_ids([a, b], decisions) == ["00042-other", "99999-gone"]
    assert decisions_for([a, b], decisions) == {a.id: 2}
    line = summary(apply_decisions([a, b], decisions), unknown_ids([a, b], decisions))
    assert line.startswith("review: 1 samples rated, 1 kept samples dropped by people")
    assert "2 rated ids name no sample of this run" in line and "99999-gone" in line


def test_ratings_out_of_range_are_refused_naming_the_sample():
    a = sample(0)
    with pytest.raises(ValueError, match=r"rating 7 for sample '00000-abc'"):
        apply_decisions([a], {a.id: 7})
    with pytest.raises(ValueError, match="min_rating"):
        apply_decisions([a], {}, min_rating=0)


def test_review_config_defaults_and_errors_name_the_field():
    assert ReviewConfig() == ReviewConfig(mode="off", decisions=None, min_rating=4, timeout_seconds=3600)
    with pytest.raises(ValidationError, match="decisions: mode 'file' needs"):
        ReviewConfig(mode="file")
    for bad in (0, 6):
        with pytest.raises(ValidationError) as err:
            ReviewConfig(min_rating=bad)
        assert err.value.errors()[0]["loc"] == ("min_rating",)
    assert ReviewConfig.model_validate(yaml.safe_load("mode: off")).mode == "off"  # YAML reads off as false
    with pytest.raises(ValidationError) as err:
        ReviewConfig(mode="later")
    assert err.value.errors()[0]["loc"] == ("mode",)


def test_relative_decisions_paths_are_relative_to_the_recipe(tmp_path):
    from gen4gen.infra.config import load_config

    recipe = tmp_path / "recipes" / "r.yaml"
    recipe.parent.mkdir()
    recipe.write_text(
        "name: r\nconcepts:\n"
        "  - {id: a, category: cat, token: '<a>', photos: ['pkgdata://skimage/data/chelsea.png']}\n"
        "  - {id: b, category: mug, token: '<b>', photos: ['pkgdata://skimage/data/coffee.png']}\n"
        "compositions: [{id: a-b, concepts: [a, b]}]\n"
        "review: {mode: file, decisions: ratings.csv, min_rating: 5}\n"
    )
    config = load_config(str(recipe))
    assert isinstance(config, DatasetConfig)
    assert config.review.decisions == f"file://{tmp_path}/recipes/ratings.csv"
    assert config.review.min_rating == 5
