"""The SAM segmenter: a tiny SAM of segment-anything's real classes, saved as a checkpoint
and loaded back through the backend (and the registry, and the segment stage)."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data

pytest.importorskip("segment_anything")

from gen4gen.models import registry  # noqa: E402
from gen4gen.models.segment.sam import SamSegmenter  # noqa: E402
from gen4gen.infra.records import Concept, StageConfig  # noqa: E402
from gen4gen.tasks.segment import segment_concept  # noqa: E402
from tests.tiny.sam import tiny_sam  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sam_options(tmp_path_factory):
    return tiny_sam(tmp_path_factory.mktemp("sam"))


def _photos():
    return [skimage.data.coffee()[::4, ::4].copy(), skimage.data.chelsea()[::4, ::4].copy(),
            skimage.data.rocket()[::4, ::4].copy()]


def test_masks_have_the_photo_shape_and_soft_values_in_range(sam_options):
    seg = SamSegmenter(**sam_options)
    for photo, mask in zip(_photos(), seg.segment_batch([(p, None) for p in _photos()])):
        assert mask.shape == photo.shape[:2] and mask.dtype == np.float32
        assert 0.0 <= mask.min() and mask.max() <= 1.0
        # Solid, empty and soft parts: a soft alpha, not a thresholded mask.
        assert (mask == 1).any() and (mask == 0).any() and ((mask > 0.05) & (mask < 0.95)).any()


def test_best_mask_by_iou_matches_segment_anythings_own_predictor(sam_options):
    """Our batched path (one encoder pass for several photos, our prompts) gives what
    SamPredictor gives for the same prompts, best of three by predicted IoU."""
    from segment_anything import SamPredictor

    seg = SamSegmenter(**sam_options)
    photos = _photos()
    ours = seg.segment_batch([(p, None) for p in photos])
    predictor = SamPredictor(seg.sam)
    for photo, mine in zip(photos, ours):
        predictor.set_image(photo)
        box, point = seg._first_prompt(photo.shape[:2])
        logits, iou, _ = predictor.predict(point_coords=point[None], point_labels=np.array([1]), box=box,
                                           multimask_output=True, return_logits=True)
        expected = seg._soft(logits[int(np.argmax(iou))].astype(np.float32))
        np.testing.assert_allclose(mine, expected, atol=1e-4)


def test_batch_equals_one_photo_at_a_time(sam_options):
    photos = _photos()
    batched = SamSegmenter(**sam_options, batch_size=3).segment_batch([(p, None) for p in photos])
    single = SamSegmenter(**sam_options, batch_size=1)
    for photo, mask in zip(photos, batched):
        np.testing.assert_allclose(mask, single.segment(photo), atol=1e-4)


def test_rounds_refine_the_previous_cutout_and_the_best_round_is_kept(sam_options):
    seg = SamSegmenter(**sam_options, rounds=3)
    photos = _photos()
    per_photo = seg.rounds_batch(photos)
    kept = seg.segment_batch([(p, None) for p in photos])
    for rounds, mask in zip(per_photo, kept):
        assert len(rounds) == 3
        for (prev, _), (cur, _) in zip(rounds, rounds[1:]):
            assert not (cur[prev == 0] > 0).any()  # later rounds only cut away
        scores = [s for _, s in rounds]
        best = max(range(3), key=lambda r: (scores[r], r))
        np.testing.assert_array_equal(mask, rounds[best][0])
    # Round 2 saw a different image (the cut-out), so it answered differently.
    assert any(not np.array_equal(r[0][0], r[1][0]) for r in per_photo)
    # One round = the first round of three (batched with other photos: float rounding).
    np.testing.assert_allclose(SamSegmenter(**sam_options).segment(photos[0]), per_photo[0][0][0], atol=1e-4)


def test_a_real_transparency_is_the_mask(sam_options):
    rgb = _photos()[0]
    alpha = np.zeros(rgb.shape[:2], np.float32)
    alpha[20:80, 30:120] = 1.0
    alpha[19, 30:120] = 0.5
    np.testing.assert_array_equal(SamSegmenter(**sam_options).segment(rgb, alpha), alpha)


def test_softness_zero_gives_a_hard_mask(sam_options):
    mask = SamSegmenter(**sam_options, softness=0).segment(_photos()[1])
    assert set(np.unique(mask)) <= {0.0, 1.0}


@pytest.mark.parametrize(
    "change, named",
    [
        ({"rounds": 0}, "'rounds'"),
        ({"roundz": 2}, "'roundz' is unknown"),
        ({"model_type": "vit_x"}, "'model_type'"),
        ({"encoder": {"embed_dim": 32, "heads": 2}}, "'encoder.heads' is unknown"),
        ({"box_margin": 0.7}, "'box_margin'"),
    ],
)
def test_bad_options_raise_naming_the_option(sam_options, change, named):
    with pytest.raises(ValueError, match=named):
        SamSegmenter(**{**sam_options, **change})


def test_checkpoint_of_another_size_says_to_set_encoder(sam_options):
    wrong = {k: v for k, v in sam_options.items() if k != "encoder"}
    with pytest.raises(ValueError, match="does not fit model_type 'vit_b'.*option 'encoder'"):
        SamSegmenter(**wrong)


def test_missing_checkpoint_and_hub_id_without_file_are_named(sam_options, tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        SamSegmenter(**{**sam_options, "checkpoint": str(tmp_path / "nope.pth")})
    with pytest.raises(ValueError, match="checkpoint_file"):
        SamSegmenter(**{**sam_options, "checkpoint": "facebook/some-sam"})


def test_segment_stage_loads_sam_once_and_caches_masks(sam_options, tmp_path):
    """The stage, through the registry: masks written, a second run reads the cache and
    the model is built once per process."""
    from PIL import Image

    photos = []
    for i, arr in enumerate(_photos()[:2]):
        path = tmp_path / f"p{i}.png"
        Image.fromarray(arr).save(path)
        photos.append(str(path))
    concept = Concept(id="thing", category="mug", token="<thing>", photos=photos)
    stage = StageConfig(backend="sam", options=sam_options)
    out = str(tmp_path / "out")
    first = segment_concept(concept, out, stage)
    assert [c.photo for c in first] == photos
    for cut in first:
        assert cut.error is None and cut.mask and cut.bbox
        assert (tmp_path / "out" / cut.mask).exists()
    model = registry.load("segment", "sam", sam_options)
    assert segment_concept(concept, out, stage) == first
    assert registry.load("segment", "sam", sam_options) is model
    assert sum(1 for f, b, _ in registry.loaded() if (f, b) == ("segment", "sam")) == 1
