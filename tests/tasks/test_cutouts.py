"""Tier 1: the cut-out checks on drawn masks, each failure and the odd one out."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from gen4gen.infra.records import Cutout
from gen4gen.tasks.cutouts import check_concept, measure, measures_of, odd_ones, photo_flags

H, W = 300, 400


def photo(colour=(200, 60, 40)) -> np.ndarray:
    rgb = np.full((H, W, 3), 235, np.uint8)
    rgb[60:240, 120:280] = colour
    return rgb


def blob(x0=120, y0=60, x1=280, y1=240) -> np.ndarray:
    m = np.zeros((H, W), np.float32)
    cv2.ellipse(m, ((x0 + x1) // 2, (y0 + y1) // 2), ((x1 - x0) // 2, (y1 - y0) // 2), 0, 0, 360, 1.0, -1)
    return m


def codes(mask, rgb=None) -> list[str]:
    return [f.code for f in photo_flags(measure(mask, photo() if rgb is None else rgb))]


def test_a_centred_object_passes():
    assert codes(blob()) == []


def test_empty_and_whole_masks_are_flagged():
    assert codes(np.zeros((H, W), np.float32)) == ["cutout_empty"]
    tiny = np.zeros((H, W), np.float32)
    tiny[100:105, 100:105] = 1
    assert codes(tiny) == ["cutout_empty"]
    whole = np.ones((H, W), np.float32)
    whole[:5, :5] = 0
    assert "cutout_whole" in codes(whole)


@pytest.mark.parametrize("side", ["top", "bottom", "left", "right"])
def test_a_mask_along_a_frame_edge_is_flagged_on_every_side(side):
    m = blob()
    band = {"top": (slice(0, 60), slice(None)), "bottom": (slice(H - 60, H), slice(None)),
            "left": (slice(None), slice(0, 80)), "right": (slice(None), slice(W - 80, W))}[side]
    m[band] = 1.0  # a floor, a wall, a sofa: background that came with the object
    found = photo_flags(measure(m, photo()))
    frame = [f for f in found if f.code == "cutout_frame"]
    assert frame and side in frame[0].detail


def test_an_object_cut_off_by_a_little_of_the_edge_passes():
    m = blob(150, 100, 250, 300)  # touches the bottom edge over a short stretch only
    assert "cutout_frame" not in codes(m)


def test_large_separate_parts_are_flagged_small_specks_are_not():
    two = blob(20, 60, 170, 240) + blob(230, 60, 380, 240)
    assert "cutout_pieces" in codes(np.clip(two, 0, 1))
    speck = blob()
    speck[10:14, 10:14] = 1.0
    assert "cutout_pieces" not in codes(speck)


def _cut(i: int, mask: np.ndarray, rgb: np.ndarray) -> Cutout:
    return Cutout(photo=f"p{i}.jpg", mask=f"m{i}.png", bbox=(0, 0, 10, 10), coverage=float(mask.mean()),
                  measures=measures_of(mask, rgb))


def test_the_odd_photo_of_a_concept_is_flagged():
    # Three views of a red object; the fourth "photo" is a wide grey thing (a person wearing it).
    views = [_cut(i, blob(120 + 5 * i, 60, 280 - 5 * i, 240), photo()) for i in range(3)]
    odd_rgb = np.full((H, W, 3), 235, np.uint8)
    odd_rgb[20:290, 20:380] = (60, 60, 70)
    odd = _cut(3, blob(20, 20, 380, 290), odd_rgb)
    checked = check_concept(views + [odd])
    assert [c.photo for c in checked if any(f.code == "cutout_odd" for f in c.flags)] == ["p3.jpg"]
    assert all(not c.flags for c in checked[:3])


def test_varied_photos_are_not_odd_and_two_photos_cannot_tell():
    varied = [measure(blob(100 + 20 * i, 50 + 10 * i, 300 - 10 * i, 250 - 10 * i), photo((200 - 30 * i, 60, 40)))
              for i in range(3)]
    assert odd_ones(varied) == {}
    a, b = measure(blob(), photo()), measure(blob(20, 20, 380, 290), photo((10, 200, 10)))
    assert odd_ones([a, b]) == {}


def test_unusable_cut_outs_keep_no_flags_and_are_not_compared():
    empty = Cutout(photo="e.jpg", error={"code": "empty_mask", "stage": "segment", "detail": "none"})
    views = [_cut(i, blob(), photo()) for i in range(2)]
    checked = check_concept(views + [empty])
    assert [c.flags for c in checked] == [[], [], []]


def test_a_portrait_cut_off_by_the_bottom_edge_passes_for_a_person_only():
    m = blob(100, 60, 300, 240)
    m[150:, 60:340] = 1.0  # shoulders down to the bottom edge
    measures = measure(m, photo())
    assert "cutout_frame" in [f.code for f in photo_flags(measures, "dog")]
    assert photo_flags(measures, "woman") == []
