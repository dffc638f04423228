"""Tier 1: the rule filter drops what it should, with reasons that say why."""

from __future__ import annotations

import numpy as np

from gen4gen.infra.records import FilterConfig
from gen4gen.models.score import judge

LIMITS = FilterConfig()


def image_reasons(image, mask, limits: FilterConfig):
    return judge.image_reasons(image, mask, limits.min_image_std, limits.max_flat_share, limits.max_hole_share)


def object_reasons(measures, concepts, limits: FilterConfig):
    return judge.object_reasons(measures, concepts, limits.max_occlusion, limits.min_visible_area)


def textured(seed=0, size=64):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_a_good_image_passes():
    assert image_reasons(textured(), np.zeros((64, 64), np.float32), LIMITS) == []
    measures = {"visible.a": 0.9, "area.a": 0.5, "visible.b": 1.0, "area.b": 0.3}
    assert object_reasons(measures, ["a", "b"], LIMITS) == []


def test_occluded_and_small_objects():
    measures = {"visible.a": 0.3, "area.a": 0.5, "visible.b": 1.0, "area.b": 0.05}
    reasons = object_reasons(measures, ["a", "b"], LIMITS)
    assert [(r.code, r.detail.split(":")[0]) for r in reasons] == [("occluded", "a"), ("too_small", "b")]
    assert "70% hidden > 40%" in reasons[0].detail


def test_missing_measure_counts_as_invisible():
    codes = {r.code for r in object_reasons({}, ["ghost"], LIMITS)}
    assert codes == {"occluded", "too_small"}


def test_flat_low_contrast_image():
    flat = np.full((64, 64, 3), 120, np.uint8)
    codes = {r.code for r in image_reasons(flat, np.zeros((64, 64), np.float32), LIMITS)}
    assert codes == {"low_contrast", "flat"}


def test_black_hole_in_the_background_but_not_a_black_object():
    image = textured(1)
    image[:20, :20] = 0  # 10% of the image black
    mask = np.zeros((64, 64), np.float32)
    assert [r.code for r in image_reasons(image, mask, LIMITS)] == ["holes"]
    mask[:20, :20] = 1.0  # the black patch is an object (a black cat): fine
    assert image_reasons(image, mask, LIMITS) == []
