"""CP-CLIP / TI-CLIP against cases worked out by hand, and their properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gen4gen.models.score.metrics import best_match, bootstrap, cp_clip, similarities, ti_clip

E1, E2, E3 = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]


def test_identical_features_give_one():
    assert cp_clip({"a": E1, "b": E2}, {"a": [E1], "b": [E2]}) == pytest.approx(1.0)
    assert ti_clip([3.0, 4.0], [3.0, 4.0]) == pytest.approx(1.0)


def test_features_are_normalised_here():
    # |(3,4)| = 5: cos((3,4), (1,0)) = 0.6 whatever the lengths.
    assert ti_clip([3.0, 4.0], [10.0, 0.0]) == pytest.approx(0.6)
    assert cp_clip({"a": [30.0, 40.0, 0.0]}, {"a": [[2.0, 0.0, 0.0]]}) == pytest.approx(0.6)


def test_mean_over_source_photos():
    # crop (1,0,0); sources (1,0,0) and (0,1,0): cosines 1 and 0 -> S = 0.5
    assert similarities(E1, {"a": [E1, E2]}) == {"a": pytest.approx(0.5)}
    assert cp_clip({"a": E1}, {"a": [E1, E2]}) == pytest.approx(0.5)


def test_missing_concept_lowers_by_exactly_its_share():
    sources = {"a": [E1], "b": [E2], "c": [E3]}
    full = cp_clip({"a": E1, "b": E2, "c": E3}, sources)
    one_missing = cp_clip({"a": E1, "b": None, "c": E3}, sources)
    assert full == pytest.approx(1.0)
    assert one_missing == pytest.approx(2 / 3)
    assert full - one_missing == pytest.approx(1 / 3)
    assert cp_clip({"a": None, "b": None, "c": None}, sources) == 0.0


def test_crop_closer_to_another_concept_takes_its_similarity():
    # Crop labelled "a" looks exactly like b's photos: S_a,a = 0, S_a,b = 1 -> S_a = 1.
    sources = {"a": [E1], "b": [E2]}
    assert best_match(E2, sources) == ("b", pytest.approx(1.0))
    assert cp_clip({"a": E2, "b": None}, sources) == pytest.approx(0.5)
    # a 60/80 crop: cos with a = 0.6, with b = 0.8 -> takes 0.8
    crop = [0.6, 0.8, 0.0]
    assert cp_clip({"a": crop, "b": E2}, sources) == pytest.approx((0.8 + 1.0) / 2)


def test_worked_example_with_two_photos_each():
    # a's photos: (1,0,0), (0,0,1); b's: (0,1,0), (0,1,0)
    # crop_a = (1,1,0)/√2: S_aa = (1/√2 + 0)/2, S_ab = 1/√2  -> S_a = 1/√2
    # crop_b = (0,0,1):   S_ba = (0 + 1)/2 = 0.5, S_bb = 0    -> S_b = 0.5
    sources = {"a": [E1, E3], "b": [E2, E2]}
    r = 1 / math.sqrt(2)
    assert cp_clip({"a": [1.0, 1.0, 0.0], "b": E3}, sources) == pytest.approx((r + 0.5) / 2)


def test_negative_cosines_are_kept_raw():
    assert ti_clip([1.0, 0.0], [-1.0, 0.0]) == pytest.approx(-1.0)
    assert cp_clip({"a": [-1.0, 0.0]}, {"a": [[1.0, 0.0]]}) == pytest.approx(-1.0)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: ti_clip([1.0, 0.0], [1.0, 0.0, 0.0]), "dimension"),
        (lambda: ti_clip([float("nan"), 1.0], [1.0, 0.0]), "NaN"),
        (lambda: ti_clip([0.0, 0.0], [1.0, 0.0]), "all zeros"),
        (lambda: cp_clip({"a": E1}, {"a": []}), "no source photo"),
        (lambda: cp_clip({"a": None}, {"a": []}), "no source photo"),
        (lambda: cp_clip({"a": E1}, {"b": [E1]}), "no source photos for concept"),
        (lambda: cp_clip({"a": [1.0, 0.0]}, {"a": [E1]}), "dimension"),
        (lambda: cp_clip({"a": E1}, {"a": [E1, [1.0, 0.0]]}), "different dimensions"),
        (lambda: cp_clip({"a": E1}, {"a": [[np.nan, 0, 0]]}), "NaN"),
        (lambda: cp_clip({}, {"a": [E1]}), "no concepts"),
        (lambda: cp_clip({"a": [[1.0, 0.0]]}, {"a": [E1]}), "1-D"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --------------------------------------------------------------------------- properties

DIM = 4
finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False)
vec = st.lists(finite, min_size=DIM, max_size=DIM).filter(lambda v: np.linalg.norm(v) > 1e-3)


@st.composite
def images(draw):
    n = draw(st.integers(1, 5))
    labels = [f"c{k}" for k in range(n)]
    sources = {c: draw(st.lists(vec, min_size=1, max_size=3)) for c in labels}
    crops = {c: draw(st.one_of(st.none(), vec)) for c in labels}
    return crops, sources


@settings(max_examples=60, deadline=None)
@given(images())
def test_cp_clip_bounds(case):
    crops, sources = case
    detected = sum(v is not None for v in crops.values())
    s = cp_clip(crops, sources)
    assert -detected / len(crops) - 1e-9 <= s <= detected / len(crops) + 1e-9


@settings(max_examples=60, deadline=None)
@given(images(), st.floats(0.01, 100))
def test_cp_clip_scale_invariant(case, k):
    crops, sources = case
    scaled_crops = {c: None if v is None else [k * x for x in v] for c, v in crops.items()}
    scaled_sources = {c: [[k * x for x in v] for v in vs] for c, vs in sources.items()}
    assert cp_clip(scaled_crops, scaled_sources) == pytest.approx(cp_clip(crops, sources), abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(images(), st.randoms(use_true_random=False))
def test_cp_clip_permutation_invariant(case, rnd):
    crops, sources = case
    labels = list(crops)
    rnd.shuffle(labels)
    shuffled_crops = {c: crops[c] for c in labels}
    shuffled_sources = {c: rnd.sample(sources[c], len(sources[c])) for c in reversed(labels)}
    assert cp_clip(shuffled_crops, shuffled_sources) == pytest.approx(cp_clip(crops, sources), abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(images())
def test_each_detection_adds_exactly_its_share(case):
    # Forgetting one detection removes exactly S_i / |O'|.
    crops, sources = case
    for c, v in crops.items():
        if v is None:
            continue
        _, s_i = best_match(v, sources)
        fewer = dict(crops, **{c: None})
        assert cp_clip(crops, sources) - cp_clip(fewer, sources) == pytest.approx(s_i / len(crops), abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(vec, vec, st.floats(0.01, 100))
def test_ti_clip_symmetric_bounded_scale_invariant(a, b, k):
    t = ti_clip(a, b)
    assert -1.0 <= t <= 1.0
    assert t == pytest.approx(ti_clip(b, a))
    assert t == pytest.approx(ti_clip([k * x for x in a], b), abs=1e-9)


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_is_seeded_and_contains_the_mean():
    values = [0.1, 0.4, 0.35, 0.5, 0.2, 0.45, 0.3]
    a, b = bootstrap(values, seed=3), bootstrap(values, seed=3)
    assert a == b
    assert a["mean"] == pytest.approx(np.mean(values))
    assert a["low"] < a["mean"] < a["high"]
    assert min(values) <= a["low"] and a["high"] <= max(values)
    assert a["n"] == 7
    assert bootstrap(values, seed=4) != a  # another seed, another resampling


def test_bootstrap_narrows_with_more_data():
    rng = np.random.default_rng(0)
    small = bootstrap(rng.normal(0.4, 0.1, 20), seed=0)
    large = bootstrap(rng.normal(0.4, 0.1, 2000), seed=0)
    assert large["high"] - large["low"] < (small["high"] - small["low"]) / 4


def test_bootstrap_single_value_and_bad_input():
    assert bootstrap([0.3]) == {"mean": 0.3, "low": 0.3, "high": 0.3, "n": 1}
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap([])
    with pytest.raises(ValueError, match="NaN"):
        bootstrap([0.1, float("nan")])
