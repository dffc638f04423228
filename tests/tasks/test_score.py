"""Tier 2: scoring images with tiny OWL-ViT and CLIP loaded through the real code."""

from __future__ import annotations

import numpy as np
import pytest

from gen4gen.infra.storage import read_photo, read_rgb
from gen4gen.models import registry
from gen4gen.models.score import metrics
from gen4gen.models.score.score import FeatureCache, feature_cache, scene_text, score_images, source_features

CAT = {"id": "chelsea", "category": "cat", "token": "<chelsea>"}
MUG = {"id": "coffee", "category": "mug", "token": "<coffee>"}
ROCKET = {"id": "rocket", "category": "rocket", "token": "<rocket>"}
SOURCES = {
    "chelsea": ["pkgdata://skimage/data/chelsea.png"],
    "coffee": ["pkgdata://skimage/data/coffee.png"],
    "rocket": ["pkgdata://skimage/data/rocket.jpg", "pkgdata://skimage/data/astronaut.png"],
}
PROMPT = "a photo of <chelsea> cat and <coffee> mug on a kitchen table"


def _scene(seed: int) -> np.ndarray:
    """A 96x96 image holding a cat patch and a mug patch on noise."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    image[8:56, 4:52] = read_rgb("pkgdata://skimage/data/chelsea.png")[100:292:4, 150:342:4]
    image[48:92, 50:94] = read_rgb("pkgdata://skimage/data/coffee.png")[50:402:8, 100:452:8]
    return image


@pytest.fixture
def options(tiny_vision, tmp_path):
    return {"clip": tiny_vision["clip"], "owlvit": {**tiny_vision["owlvit"], "threshold": 0.0},
            "feature_cache": str(tmp_path / "features")}


@pytest.mark.parametrize(
    "prompt, expected",
    [
        (PROMPT, "a photo of cat and mug on a kitchen table"),
        ("<chelsea> cat , <coffee> mug, and <rocket> rocket in a garden.", "cat, mug, and rocket in a garden."),
        ("<cat-mug> a photo of <chelsea> and <coffee>, on a beach", "a photo of and, on a beach"),
        ("<chelsea>", ""),
        ("a (<chelsea>) cat", "a cat"),
    ],
)
def test_scene_text(prompt, expected):
    assert scene_text(prompt, ["<chelsea>", "<coffee>", "<rocket>"]) == expected


def test_scores_agree_with_the_metrics_on_the_models_features(options):
    image = _scene(0)
    (score,) = score_images([image], [[CAT, MUG]], [PROMPT], SOURCES, options)
    assert score.text == "a photo of cat and mug on a kitchen table"
    assert set(score.concepts) == {"chelsea", "coffee"}
    clip = registry.load("vision", "clip", options["clip"])
    owl = registry.load("vision", "owlvit", options["owlvit"])
    # TI-CLIP recomputed from the model directly.
    expected_ti = metrics.ti_clip(clip.image_features([image])[0], clip.text_features([score.text])[0])
    assert score.ti_clip == pytest.approx(expected_ti, abs=1e-5)
    # Each concept: the detector's best box for its word, the crop's similarities.
    dets = owl.detect([image], [["cat", "mug"]])[0]
    photos = {c: clip.image_features([read_photo(u) for u in SOURCES[c]]) for c in ("chelsea", "coffee")}
    crops = {}
    for c, d in zip(("chelsea", "coffee"), dets):
        s = score.concepts[c]
        assert s.detected and s.score == pytest.approx(d.score, abs=1e-5)
        np.testing.assert_allclose(s.box, d.box, atol=0.01)
        crops[c] = clip.image_features([d.crop(image)])[0]
        assert s.own_similarity == pytest.approx(float((photos[c] @ crops[c]).mean()), abs=1e-5)
        assert s.similarity == pytest.approx(max(float((photos[j] @ crops[c]).mean()) for j in photos), abs=1e-5)
        assert s.similarity >= s.own_similarity - 1e-9
    assert score.cp_clip == pytest.approx(metrics.cp_clip(crops, photos), abs=1e-5)
    assert score.cp_clip == pytest.approx(sum(s.similarity for s in score.concepts.values()) / 2, abs=1e-9)


def test_nothing_detected_scores_zero(options):
    (score,) = score_images([_scene(1)], [[CAT, MUG, ROCKET]], [PROMPT], SOURCES, options, threshold=0.99)
    assert score.cp_clip == 0.0
    assert all(not s.detected and s.similarity is None for s in score.concepts.values())
    assert -1.0 <= score.ti_clip <= 1.0


def test_batch_equals_one_at_a_time(options):
    images = [_scene(k) for k in range(3)]
    concepts = [[CAT, MUG], [MUG, ROCKET], [ROCKET, CAT, MUG]]
    prompts = [PROMPT, "<coffee> mug and <rocket> rocket in space", "a <rocket> rocket, a <chelsea> cat, a <coffee> mug"]
    together = score_images(images, concepts, prompts, SOURCES, options)
    for k in range(3):
        (alone,) = score_images([images[k]], [concepts[k]], [prompts[k]], SOURCES, options)
        _assert_close(alone, together[k])


def _assert_close(a, b) -> None:
    assert a.text == b.text and list(a.concepts) == list(b.concepts)
    assert a.cp_clip == pytest.approx(b.cp_clip, abs=1e-5) and a.ti_clip == pytest.approx(b.ti_clip, abs=1e-5)
    for c in a.concepts:
        x, y = a.concepts[c], b.concepts[c]
        assert (x.detected, x.matched) == (y.detected, y.matched)
        assert x.score == pytest.approx(y.score, abs=1e-5)
        assert x.similarity == pytest.approx(y.similarity, abs=1e-5)
        np.testing.assert_allclose(x.box, y.box, atol=0.02)


def test_source_features_cached_on_disk_by_content(options, tmp_path):
    clip = registry.load("vision", "clip", options["clip"])
    folder = tmp_path / "cache"
    first = source_features(SOURCES, clip, FeatureCache(str(folder)))
    files = sorted(p for p in folder.rglob("*.npy"))
    assert len(files) == 4  # one per distinct photo
    # A fresh cache (a new process) reads the files: plant a known feature and see it used.
    planted = np.zeros_like(first["coffee"][0])
    planted[0] = 1.0
    from gen4gen.infra.storage import read_bytes, sha256

    digest = sha256(read_bytes("pkgdata://skimage/data/coffee.png"))
    (target,) = [f for f in files if f.stem == digest]
    np.save(target, planted)
    again = source_features(SOURCES, clip, FeatureCache(str(folder)))
    np.testing.assert_array_equal(again["coffee"][0], planted)
    np.testing.assert_allclose(again["chelsea"], first["chelsea"])
    # A torn file is recomputed, not trusted.
    target.write_bytes(b"not a numpy file")
    np.testing.assert_allclose(source_features(SOURCES, clip, FeatureCache(str(folder)))["coffee"], first["coffee"], atol=1e-6)


def test_cache_keyed_by_model_identity(options, tmp_path):
    from tests.tiny.vision import tiny_clip

    other = registry.load("vision", "clip", tiny_clip(tmp_path / "other", seed=7))
    clip = registry.load("vision", "clip", options["clip"])
    cache = feature_cache(str(tmp_path / "shared"))
    a = source_features({"chelsea": SOURCES["chelsea"]}, clip, cache)["chelsea"]
    b = source_features({"chelsea": SOURCES["chelsea"]}, other, cache)["chelsea"]
    assert not np.allclose(a, b, atol=1e-3)
    assert len({p.parent for p in (tmp_path / "shared").rglob("*.npy")}) == 2


def test_two_concepts_of_one_category_get_the_boxes_they_resemble(options):
    # Two "cats": the detector gives the word two distinct boxes; whichever assignment is
    # chosen, it is the one with the larger total own similarity.
    tabby = {"id": "tabby", "category": "cat", "token": "<tabby>"}
    sources = {**SOURCES, "tabby": ["pkgdata://skimage/data/coffee.png"]}
    (score,) = score_images([_scene(2)], [[CAT, tabby]], ["<chelsea> cat and <tabby> cat"], sources, options)
    a, b = score.concepts["chelsea"], score.concepts["tabby"]
    assert a.detected and b.detected and a.box != b.box
    clip = registry.load("vision", "clip", options["clip"])
    image = _scene(2)
    from gen4gen.models.score.vision import Detection

    fa = clip.image_features([Detection(a.box, 1).crop(image)])[0]
    fb = clip.image_features([Detection(b.box, 1).crop(image)])[0]
    pc = clip.image_features([read_photo(SOURCES["chelsea"][0])])[0]
    pt = clip.image_features([read_photo(sources["tabby"][0])])[0]
    assert fa @ pc + fb @ pt >= fa @ pt + fb @ pc - 1e-5


def test_bad_inputs(options):
    with pytest.raises(ValueError, match="one of each per image"):
        score_images([_scene(0)], [[CAT], [MUG]], [PROMPT], SOURCES, options)
    with pytest.raises(ValueError, match=r"no source photos for concept\(s\) \['ghost'\]"):
        score_images([_scene(0)], [[CAT, {"id": "ghost", "category": "dog", "token": "<ghost>"}]], [PROMPT], SOURCES, options)
    with pytest.raises(ValueError, match="distinct concepts"):
        score_images([_scene(0)], [[CAT, CAT]], [PROMPT], SOURCES, options)
    with pytest.raises(ValueError, match=r"images\[0\]"):
        score_images([np.zeros((4, 4), np.uint8)], [[CAT]], [PROMPT], SOURCES, options)
    with pytest.raises(ValueError, match=r"sources\['chelsea'\]: no source photos"):
        score_images([_scene(0)], [[CAT]], [PROMPT], {"chelsea": []}, options)
