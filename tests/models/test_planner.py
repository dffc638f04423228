"""Tier 1: the offline planner's layouts follow the paper's rules."""

from __future__ import annotations

import itertools

import pytest

from gen4gen.models.planner import MIN_SIDE_DIVISOR, OfflinePlanner, PlannedObject, size_ratios
from gen4gen.models.scenes import SCENES, scene, scenes_for
from gen4gen.infra.records import box_iou

OBJECTS = [
    PlannedObject("grace", "person", 0.6),
    PlannedObject("moto", "motorcycle", 1.5),
    PlannedObject("chelsea", "cat", 1.1),
    PlannedObject("coffee", "mug", 1.05),
    PlannedObject("rocket", "rocket", 0.3),
]


def test_size_ratios_span_point_four_to_one():
    r = size_ratios(["person", "cat", "mug"])
    assert r[0] == pytest.approx(1.0) and r[2] == pytest.approx(0.4)
    assert 0.4 < r[1] < 1.0
    assert size_ratios(["cat", "cat"]) == [1.0, 1.0]


@pytest.mark.parametrize("n", [2, 3, 4, 5])
@pytest.mark.parametrize("seed", range(6))
def test_layouts_keep_every_rule(n, seed):
    objects = OBJECTS[:n]
    canvas, max_iou = 1024, 0.15
    boxes = OfflinePlanner().layout(objects, canvas, "in a garden", max_iou, seed)
    assert len(boxes) == n
    for x, y, w, h in boxes:
        assert x >= 0 and y >= 0 and x + w <= canvas and y + h <= canvas and w > 0 and h > 0
    for a, b in itertools.combinations(boxes, 2):
        assert box_iou(a, b) <= max_iou
    # Each box keeps its object's aspect ratio (to rounding).
    for (x, y, w, h), o in zip(boxes, objects):
        assert w / h == pytest.approx(o.aspect, rel=0.05)
    # The paper's minimum size: the smallest box covers at least (H/d)^2 ... unless the
    # layout had to shrink to fit, which never goes below half of that.
    smallest = min(w * h for _, _, w, h in boxes)
    assert smallest >= 0.5 * (canvas / MIN_SIDE_DIVISOR[n]) ** 2
    # Objects stand on the ground: every bottom edge lies below the scene's horizon.
    horizon = scene("in a garden").horizon * canvas
    assert all(y + h > horizon for _, y, _, h in boxes)


def test_same_seed_same_layout_other_seed_other_layout():
    p = OfflinePlanner()
    a = p.layout(OBJECTS[:3], 1024, "in a garden", 0.15, 7)
    assert a == p.layout(OBJECTS[:3], 1024, "in a garden", 0.15, 7)
    assert a != p.layout(OBJECTS[:3], 1024, "in a garden", 0.15, 8)


def test_larger_real_world_objects_get_larger_boxes():
    boxes = OfflinePlanner().layout(OBJECTS[:4], 1024, "in a garden", 0.15, 3)
    heights = {o.concept: h for o, (_, _, _, h) in zip(OBJECTS, boxes)}
    assert heights["grace"] > heights["chelsea"] > heights["coffee"]


def test_scenes_follow_categories():
    assert scenes_for(["cat", "mug"])[0] in ("in a living room", "on a kitchen table")
    assert scenes_for(["rocket", "person"])  # never empty
    assert scene("on the moon").text == "on the moon"  # unknown text: a generic look
    assert all(0 < s.horizon < 1 for s in SCENES.values())
