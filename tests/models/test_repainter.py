"""The offline repainter: objects stay exact, the scene is painted, shadows, determinism."""

import numpy as np
import pytest

from gen4gen.models.repaint.repainter import OfflineRepainter
from gen4gen.models.scenes import SCENES, scene

SIZE = 256


def _objects(size: int = SIZE, seed: int = 0):
    """A composite with two soft-edged elliptical objects on black, and their boxes."""
    rng = np.random.default_rng(seed)
    composite = np.zeros((size, size, 3), np.uint8)
    mask = np.zeros((size, size), np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    boxes = [(20, 150, 80, 70), (140, 120, 90, 110)]
    for x, y, w, h in boxes:
        cx, cy = x + w / 2, y + h / 2
        r = np.sqrt(((xx - cx) / (w / 2)) ** 2 + ((yy - cy) / (h / 2)) ** 2)
        m = np.clip((1.0 - r) / 0.15, 0.0, 1.0).astype(np.float32)  # solid core, soft rim
        inside = m > 0
        composite[inside] = rng.integers(0, 256, (int(inside.sum()), 3), dtype=np.uint8)
        mask = np.maximum(mask, m)
    return composite, mask, boxes


def test_output_shape_and_dtype():
    composite, mask, boxes = _objects()
    out = OfflineRepainter().repaint(composite, mask, "in a garden", 0, boxes)
    assert out.shape == composite.shape
    assert out.dtype == np.uint8


@pytest.mark.parametrize("text", sorted(SCENES))
def test_object_pixels_stay_exact_and_background_has_no_holes(text):
    composite, mask, boxes = _objects()
    out = OfflineRepainter().repaint(composite, mask, text, 3, boxes)
    solid = mask == 1.0
    assert solid.sum() > 1000
    np.testing.assert_array_equal(out[solid], composite[solid])
    # The composite is black outside the objects; none of that may show through.
    background = mask == 0.0
    black = (out[background] < 10).all(axis=1)
    assert black.mean() < 0.001, f"{text}: {black.mean():.4f} of the background is black"


def test_same_call_is_byte_identical_and_seeds_differ():
    composite, mask, boxes = _objects()
    r = OfflineRepainter()
    a = r.repaint(composite, mask, "on a city street", 11, boxes)
    b = r.repaint(composite, mask, "on a city street", 11, boxes)
    c = r.repaint(composite, mask, "on a city street", 12, boxes)
    assert a.tobytes() == b.tobytes()
    background = mask == 0.0
    assert np.abs(a[background].astype(int) - c[background].astype(int)).mean() > 2.0


@pytest.mark.parametrize("text", sorted(SCENES))
def test_ground_differs_in_colour_from_upper_part(text):
    empty = np.zeros((SIZE, SIZE), np.float32)
    composite = np.zeros((SIZE, SIZE, 3), np.uint8)
    out = OfflineRepainter().repaint(composite, empty, text, 5, []).astype(np.float64)
    hy = scene(text).horizon * SIZE
    margin = 0.12 * SIZE  # beyond the horizon's jitter and the horizon details
    upper = out[: int(hy - margin)].reshape(-1, 3).mean(axis=0)
    ground = out[int(hy + margin) :].reshape(-1, 3).mean(axis=0)
    assert np.linalg.norm(upper - ground) > 25, f"{text}: upper {upper.round()} ground {ground.round()}"


@pytest.mark.parametrize("text", ["in an office", "in a garden"])
def test_contact_shadow_darkens_the_ground_under_a_box(text):
    empty = np.zeros((SIZE, SIZE), np.float32)
    composite = np.zeros((SIZE, SIZE, 3), np.uint8)
    x, y, w, h = 30, 140, 80, 70
    bottom = y + h
    out = OfflineRepainter(noise=0.0).repaint(composite, empty, text, 2, [(x, y, w, h)])
    lum = out.astype(np.float64).mean(axis=2)
    rows = slice(bottom + 1, bottom + 4)
    under = lum[rows, x + w // 4 : x + 3 * w // 4].mean()
    far = lum[rows, 200:250].mean()  # same rows, well clear of the shadow
    assert under < 0.85 * far, f"{text}: under the box {under:.1f}, far from it {far:.1f}"
    unshaded = OfflineRepainter(noise=0.0, shadow=0.0).repaint(composite, empty, text, 2, [(x, y, w, h)])
    assert under < unshaded.astype(np.float64).mean(axis=2)[rows, x + w // 4 : x + 3 * w // 4].mean() - 10


def test_mismatched_shapes_raise_naming_the_shapes():
    composite = np.zeros((64, 64, 3), np.uint8)
    mask = np.zeros((64, 32), np.float32)
    with pytest.raises(ValueError, match=r"\(64, 32\).*\(64, 64, 3\)"):
        OfflineRepainter().repaint(composite, mask, "in a garden", 0, [])


@pytest.mark.parametrize(
    "composite, mask",
    [
        (np.zeros((64, 64, 3), np.float32), np.zeros((64, 64), np.float32)),  # composite not uint8
        (np.zeros((64, 64), np.uint8), np.zeros((64, 64), np.float32)),  # composite not HxWx3
        (np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), np.uint8)),  # mask not float
        (np.zeros((64, 64, 3), np.uint8), np.full((64, 64), 2.0, np.float32)),  # mask beyond 1
    ],
)
def test_wrong_inputs_raise_value_error(composite, mask):
    with pytest.raises(ValueError):
        OfflineRepainter().repaint(composite, mask, "in a garden", 0, [])


def test_unknown_scene_text_gets_a_painted_background():
    composite, mask, boxes = _objects()
    r = OfflineRepainter()
    out = r.repaint(composite, mask, "on the surface of a frozen lake at dusk", 4, boxes)
    again = r.repaint(composite, mask, "on the surface of a frozen lake at dusk", 4, boxes)
    assert out.tobytes() == again.tobytes()
    solid = mask == 1.0
    np.testing.assert_array_equal(out[solid], composite[solid])
    background = out[mask == 0.0].astype(np.float64)
    assert (background < 10).all(axis=1).mean() < 0.001
    assert background.std() > 5  # a scene, not a flat fill


def test_soft_edges_blend_object_and_background():
    composite, mask, boxes = _objects()
    composite[:] = 255  # white objects: any blend with the scene pulls the rim below 255
    out = OfflineRepainter().repaint(composite, mask, "in a living room", 1, boxes)
    rim = (mask > 0.2) & (mask < 0.8)
    assert rim.sum() > 50
    assert out[rim].mean() < 250
    assert out[rim].mean() > out[mask == 0.0].mean()


def test_premultiplied_composite_rims_are_not_darkened_twice():
    composite, mask, boxes = _objects()
    # As the composite stage pastes over black: rims hold mask * colour.
    composite = (np.full(composite.shape, 220.0) * mask[..., None]).astype(np.uint8)
    straight = OfflineRepainter().repaint(composite, mask, "in an office", 1, boxes)
    premult = OfflineRepainter(premultiplied=True).repaint(composite, mask, "in an office", 1, boxes)
    solid = mask == 1.0
    np.testing.assert_array_equal(premult[solid], composite[solid])
    rim = (mask > 0.2) & (mask < 0.8)
    assert premult[rim].mean() > straight[rim].mean() + 10
