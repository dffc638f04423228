"""Tier 1: compositing pastes objects where planned, in overlap order, and measures cover."""

from __future__ import annotations

import numpy as np
import pytest

from gen4gen.tasks.composite import compose, fit_into_box, paste_order
from gen4gen.infra.records import Box


def solid(colour, h=40, w=20):
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[:] = colour
    return rgb, np.ones((h, w), np.float32)


def test_fit_keeps_aspect_and_stands_on_the_box_bottom():
    rgb, mask = solid((255, 0, 0), h=40, w=20)
    out_rgb, out_mask, x, y = fit_into_box(rgb, mask, Box(concept="a", x=100, y=50, w=100, h=100))
    assert out_mask.shape == (100, 50)  # longer side fills the box, aspect 1:2 kept
    assert (x, y) == (125, 50)  # centred horizontally, bottom on the box's bottom edge
    wide_rgb, wide_mask = solid((0, 255, 0), h=10, w=40)
    _, m, x, y = fit_into_box(wide_rgb, wide_mask, Box(concept="b", x=0, y=0, w=80, h=80))
    assert m.shape == (20, 80) and y + m.shape[0] == 80


def test_paste_order_most_overlapped_first():
    a = Box(concept="a", x=0, y=0, w=100, h=100)
    b = Box(concept="b", x=50, y=0, w=100, h=100)  # overlaps a and c
    c = Box(concept="c", x=120, y=0, w=100, h=100)
    d = Box(concept="d", x=400, y=0, w=10, h=10)  # overlaps nothing
    order = paste_order([a, b, c, d])
    assert order[0] == 1 and order[-1] == 3


def test_compose_pixels_union_and_measures():
    red, red_mask = solid((255, 0, 0), 50, 50)
    blue, blue_mask = solid((0, 0, 255), 50, 50)
    a = Box(concept="red", x=0, y=0, w=50, h=50)
    b = Box(concept="blue", x=25, y=0, w=50, h=50)  # covers the right half of red
    image, union, measures = compose(100, [(a, red, red_mask), (b, blue, blue_mask)])
    assert image.dtype == np.uint8 and image.shape == (100, 100, 3)
    # Equal overlap: stable order, red first, so blue is on top where they meet.
    assert tuple(image[10, 10]) == (255, 0, 0)
    assert tuple(image[10, 40]) == (0, 0, 255)
    assert tuple(image[80, 80]) == (0, 0, 0)  # nothing pasted: the repaint fills it
    assert union[10, 10] == 1 and union[80, 80] == 0
    assert measures["visible.blue"] == 1.0
    assert measures["visible.red"] == pytest.approx(0.5)
    assert measures["area.red"] == pytest.approx(0.5) and measures["area.blue"] == 1.0


def test_soft_edges_blend():
    rgb, mask = solid((200, 200, 200), 20, 20)
    mask[:, :10] = 0.5
    image, union, _ = compose(20, [(Box(concept="a", x=0, y=0, w=20, h=20), rgb, mask)])
    # Straight colour: the edge keeps the object's colour; the mask carries the softness, its
    # faintest tenth let go (clean_edges: no halo of the old background).
    assert tuple(image[5, 5]) == (200, 200, 200) and union[5, 5] == pytest.approx((0.5 - 0.1) / 0.9, abs=1e-6)


def test_overlapping_soft_objects_cover_like_paint():
    red, m1 = solid((255, 0, 0), 10, 10)
    blue, m2 = solid((0, 0, 255), 10, 10)
    m1[:] = 0.5
    m2[:] = 0.5
    box = Box(concept="a", x=0, y=0, w=10, h=10)
    image, union, _ = compose(10, [(box, red, m1), (box.model_copy(update={"concept": "b"}), blue, m2)])
    assert union[0, 0] == pytest.approx(0.75)  # 1 - (1 - 0.5)(1 - 0.5)
    # Blue over red, each half transparent: a third red, two thirds blue, straight colour.
    assert tuple(image[0, 0]) == (85, 0, 170)
