"""The offline segmenter on synthetic photos with a known answer and on real sample photos."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data

from gen4gen.models.segment.segmenter import OfflineSegmenter


def _disc_photo(h: int = 240, w: int = 320, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A red disc on a blocky, noisy background: (photo, true disc mask)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (-(-h // 8), -(-w // 8), 3)).astype(np.float64)
    blocky = np.kron(blocks, np.ones((8, 8, 1)))[:h, :w]
    background = blocky * 0.5 + 60 + rng.normal(0, 10, (h, w, 3))
    yy, xx = np.mgrid[0:h, 0:w]
    disc = (xx - 0.53 * w) ** 2 + (yy - 0.46 * h) ** 2 < (0.29 * h) ** 2
    photo = background.copy()
    photo[disc] = np.array([220.0, 40.0, 40.0]) + rng.normal(0, 8, (int(disc.sum()), 3))
    return np.clip(photo, 0, 255).astype(np.uint8), disc


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    """Mask-weighted centroid as shares of width and height."""
    h, w = mask.shape
    yy, xx = np.mgrid[0:h, 0:w]
    total = float(mask.sum())
    return float((mask * xx).sum() / total / w), float((mask * yy).sum() / total / h)


def test_disc_on_noisy_background_is_found():
    photo, disc = _disc_photo()
    mask = OfflineSegmenter().segment(photo)
    assert _iou(mask > 0.5, disc) > 0.85


def test_output_shape_dtype_range_and_soft_edge():
    photo, disc = _disc_photo(300, 500)
    mask = OfflineSegmenter(work_size=256).segment(photo)
    assert mask.shape == (300, 500)
    assert mask.dtype == np.float32
    assert mask.min() >= 0.0 and mask.max() <= 1.0
    assert mask[disc].mean() > 0.9 and mask[~disc].mean() < 0.1
    # Feathered: the outline has values strictly between 0 and 1.
    assert ((mask > 0.05) & (mask < 0.95)).any()


def test_large_photo_is_processed_at_work_size_and_returned_full_size():
    photo, disc = _disc_photo(900, 1200, seed=3)
    mask = OfflineSegmenter(work_size=384).segment(photo)
    assert mask.shape == (900, 1200)
    assert _iou(mask > 0.5, disc) > 0.85


def test_deterministic():
    photo = skimage.data.coffee()
    seg = OfflineSegmenter()
    first = seg.segment(photo)
    second = seg.segment(photo)
    third = OfflineSegmenter().segment(photo)
    assert first.tobytes() == second.tobytes() == third.tobytes()


@pytest.mark.parametrize("noise", [0.0, 1.5])
def test_uniform_or_nearly_uniform_photo_gives_empty_mask(noise):
    rng = np.random.default_rng(1)
    photo = np.clip(np.full((200, 260, 3), (90.0, 140.0, 200.0)) + rng.normal(0, noise, (200, 260, 3)), 0, 255)
    mask = OfflineSegmenter().segment(photo.astype(np.uint8))
    assert mask.shape == (200, 260) and mask.dtype == np.float32
    assert float(mask.sum()) < 1e-3 * mask.size


def test_alpha_channel_is_used_as_mask():
    photo, disc = _disc_photo()
    # A cut-out whose alpha covers a square where the photo shows a disc: the answer
    # must follow the alpha, not the pixels.
    alpha = np.zeros(disc.shape, np.float32)
    alpha[60:180, 40:140] = 1.0
    alpha[59, 40:140] = 0.5  # a soft edge row, kept as is
    alpha[5, 300] = 1.0  # a lone speck, cleaned away
    mask = OfflineSegmenter().segment(photo, alpha)
    assert mask.shape == alpha.shape and mask.dtype == np.float32
    assert np.array_equal(mask[60:180, 40:140], alpha[60:180, 40:140])
    assert mask[59, 40:140].tolist() == [0.5] * 100
    assert mask[5, 300] == 0.0
    assert mask[disc & (alpha == 0)].max() == 0.0


def test_fully_transparent_alpha_gives_empty_mask():
    photo, _ = _disc_photo()
    mask = OfflineSegmenter().segment(photo, np.zeros(photo.shape[:2], np.float32))
    assert float(mask.sum()) == 0.0


def test_batch_matches_single_calls():
    photo, _ = _disc_photo()
    alpha = np.zeros(photo.shape[:2], np.float32)
    alpha[50:100, 50:100] = 1.0
    seg = OfflineSegmenter()
    out = seg.segment_batch([(photo, None), (photo, alpha)])
    assert len(out) == 2
    assert out[0].tobytes() == seg.segment(photo).tobytes()
    assert out[1].tobytes() == seg.segment(photo, alpha).tobytes()


@pytest.mark.parametrize("name", ["chelsea", "coffee"])
def test_sample_photo_mask_is_plausible(name):
    photo = getattr(skimage.data, name)()
    mask = OfflineSegmenter().segment(photo)
    share = float(mask.mean())
    assert 0.15 <= share <= 0.90, share
    cx, cy = _centroid(mask)
    assert abs(cx - 0.5) < 0.15 and abs(cy - 0.5) < 0.15, (cx, cy)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((64, 64), np.uint8),
        np.zeros((64, 64, 4), np.uint8),
        np.zeros((64, 64, 3), np.float32),
    ],
)
def test_bad_photo_raises_value_error_naming_the_shape(bad):
    with pytest.raises(ValueError, match=r"shape \(64, 64"):
        OfflineSegmenter().segment(bad)


def test_bad_alpha_raises_value_error():
    photo, _ = _disc_photo()
    with pytest.raises(ValueError, match="shape"):
        OfflineSegmenter().segment(photo, np.ones((10, 10), np.float32))


# ---------------------------------------------------------------- category priors


def _grace_hopper() -> np.ndarray:
    import matplotlib.cbook
    from PIL import Image

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB"))


def test_person_prior_keeps_the_astronauts_head_and_leaves_out_the_flag():
    photo = skimage.data.astronaut()  # 512x512; face and hair lie in rows 15-190, cols 150-300
    plain = OfflineSegmenter().segment(photo)
    mask = OfflineSegmenter().segment(photo, category="person")
    head = (slice(60, 200), slice(170, 300))
    hair = (slice(20, 60), slice(170, 280))
    flag = (slice(0, 250), slice(0, 60))  # the US flag at the far left, beside the head
    suit = (slice(300, 500), slice(60, 250))
    assert plain[head].mean() < 0.2  # what the prior is for: without it the head is lost
    assert mask[head].mean() > 0.6, mask[head].mean()
    assert mask[hair].mean() > 0.5, mask[hair].mean()
    assert mask[flag].mean() < 0.15, mask[flag].mean()
    assert mask[suit].mean() > 0.9, mask[suit].mean()


def test_person_prior_keeps_grace_hoppers_face_hat_and_uniform():
    photo = _grace_hopper()  # 600x512
    mask = OfflineSegmenter().segment(photo, category="woman")
    face = (slice(150, 300), slice(190, 330))
    hat = (slice(30, 130), slice(170, 350))
    uniform = (slice(450, 600), slice(50, 450))
    sky = (slice(0, 300), slice(420, 512))
    assert mask[face].mean() > 0.8, mask[face].mean()
    assert mask[hat].mean() > 0.5, mask[hat].mean()
    assert mask[uniform].mean() > 0.5, mask[uniform].mean()
    assert mask[sky].mean() < 0.1, mask[sky].mean()


@pytest.mark.parametrize("name", ["chelsea", "coffee", "rocket"])
def test_no_or_unknown_category_keeps_the_plain_behaviour(name):
    photo = getattr(skimage.data, name)()
    seg = OfflineSegmenter()
    plain = seg.segment(photo)
    assert seg.segment(photo, category=None).tobytes() == plain.tobytes()
    assert seg.segment(photo, None, "teapot").tobytes() == plain.tobytes()


def test_person_category_without_a_face_falls_back_to_the_plain_seeds():
    photo, disc = _disc_photo()
    seg = OfflineSegmenter()
    assert seg.segment(photo, category="person").tobytes() == seg.segment(photo).tobytes()


def test_person_prior_is_deterministic():
    photo = skimage.data.astronaut()
    first = OfflineSegmenter().segment(photo, category="astronaut")
    second = OfflineSegmenter().segment(photo, category="astronaut")
    assert first.tobytes() == second.tobytes()


def test_vehicle_prior_finds_more_of_the_motorcycle():
    photo = skimage.data.stereo_motorcycle()[0]  # 500x741, a motorcycle in a cluttered garage
    seg = OfflineSegmenter()
    plain = seg.segment(photo)
    mask = seg.segment(photo, category="motorcycle")
    engine = (slice(250, 350), slice(320, 480))
    floor = (slice(430, 500), slice(0, 741))
    assert plain[engine].mean() < 0.3
    assert mask[engine].mean() > 0.7, mask[engine].mean()
    assert mask[floor].mean() < 0.1, mask[floor].mean()


def test_batch_passes_categories_and_old_calls_still_work():
    photo = skimage.data.astronaut()
    seg = OfflineSegmenter()
    out = seg.segment_batch([(photo, None), (photo, None)], categories=["person", None])
    assert out[0].tobytes() == seg.segment(photo, category="person").tobytes()
    assert out[1].tobytes() == seg.segment(photo).tobytes()
    assert seg.segment_batch([(photo, None)])[0].tobytes() == out[1].tobytes()
    with pytest.raises(ValueError, match="categories"):
        seg.segment_batch([(photo, None)], categories=["person", "cat"])
