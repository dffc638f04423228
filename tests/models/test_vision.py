"""Tier 2: CLIP and OWL-ViT loaded through models/score/vision.py from tiny saved models."""

from __future__ import annotations

import time

import numpy as np
import pytest

from gen4gen.models import registry
from gen4gen.models.score.vision import Clip, Detection, OwlVit


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = [(64, 64), (50, 90), (128, 40), (33, 33), (70, 20)]
    return [rng.integers(0, 256, (*sizes[k % len(sizes)], 3), dtype=np.uint8) for k in range(n)]


def test_clip_loads_once_through_the_registry(tiny_vision):
    a = registry.load("vision", "clip", tiny_vision["clip"])
    assert a is registry.load("vision", "clip", dict(tiny_vision["clip"]))
    assert isinstance(a, Clip) and a.dim == 32
    assert a.identity.startswith("open_clip:gen4gen-tiny-clip:file-sha256:")


def test_clip_features_normalised_and_batch_independent(tiny_vision):
    images = _images(5)
    batched = Clip(**tiny_vision["clip"], batch_size=4).image_features(images)
    single = Clip(**tiny_vision["clip"], batch_size=1).image_features(images)
    assert batched.shape == (5, 32) and batched.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(batched, single, atol=1e-5)
    assert not np.allclose(batched[0], batched[1])  # different images, different features


def test_clip_loads_the_saved_weights(tiny_vision, tmp_path):
    # Another seed's weights under the same architecture give other features: the
    # checkpoint file is really read, not a fresh random init.
    from tests.tiny.vision import tiny_clip

    other = tiny_clip(tmp_path, seed=1)
    image = _images(1)
    a = registry.load("vision", "clip", tiny_vision["clip"]).image_features(image)
    b = Clip(**other).image_features(image)
    assert not np.allclose(a, b, atol=1e-3)
    assert Clip(**tiny_vision["clip"]).identity != Clip(**other).identity


def test_clip_text_features(tiny_vision):
    clip = registry.load("vision", "clip", tiny_vision["clip"])
    f = clip.text_features(["a cat on a sofa", "a dog on a beach", "a cat on a sofa"])
    assert f.shape == (3, 32)
    np.testing.assert_allclose(f[0], f[2], atol=1e-6)
    assert not np.allclose(f[0], f[1])
    np.testing.assert_allclose(clip.text_features(["a dog on a beach"])[0], f[1], atol=1e-5)
    assert clip.text_features([]).shape == (0, 32)


def test_clip_bad_options_and_inputs(tiny_vision, tmp_path):
    opts = tiny_vision["clip"]
    with pytest.raises(ValueError, match="must be the same name"):
        Clip(**{**opts, "model": "ViT-B-32"})
    with pytest.raises(FileNotFoundError, match="neither a tag"):
        Clip(**{**opts, "pretrained": str(tmp_path / "missing.safetensors")})
    with pytest.raises(FileNotFoundError, match="model_config"):
        Clip(**{**opts, "model_config": str(tmp_path / "nope.json")})
    with pytest.raises(ValueError, match="unknown architecture"):
        Clip(model="no-such-net", pretrained=None, device="cpu")
    clip = registry.load("vision", "clip", opts)
    with pytest.raises(ValueError, match=r"images\[1\].*uint8"):
        clip.image_features([_images(1)[0], np.zeros((8, 8, 3), np.float32)])
    with pytest.raises(ValueError, match=r"images\[0\]"):
        clip.image_features([np.zeros((8, 8), np.uint8)])


# --------------------------------------------------------------------------- OWL-ViT


def test_owlvit_one_result_per_label_in_order(tiny_vision):
    owl = registry.load("vision", "owlvit", {**tiny_vision["owlvit"], "threshold": 0.0})
    assert isinstance(owl, OwlVit)
    images = _images(3)
    labels = [["cat", "mug"], ["rocket"], ["cat", "teddy bear", "mug"]]
    out = owl.detect(images, labels)
    assert [len(r) for r in out] == [2, 1, 3]
    for image, row in zip(images, out):
        h, w = image.shape[:2]
        for d in row:
            assert isinstance(d, Detection) and 0.0 < d.score <= 1.0
            x0, y0, x1, y1 = d.box
            assert 0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h
            crop = d.crop(image)
            assert crop.ndim == 3 and crop.shape[0] >= 1 and crop.shape[1] >= 1


def test_owlvit_threshold_decides(tiny_vision):
    owl = registry.load("vision", "owlvit", {**tiny_vision["owlvit"], "threshold": 0.0})
    images, labels = _images(4), [["cat", "mug", "rocket"]] * 4
    scores = [d.score for row in owl.detect(images, labels) for d in row]
    middle = float(np.median(scores))
    split = owl.detect(images, labels, threshold=middle)
    found = [d for row in split for d in row if d is not None]
    assert 0 < len(found) < len(scores)  # the threshold keeps some labels and loses others
    assert all(d.score > middle for d in found)
    assert all(d is None for row in owl.detect(images, labels, threshold=0.99) for d in row)


def test_owlvit_batched_equals_one_at_a_time(tiny_vision):
    images, labels = _images(5), [["cat", "mug"], ["rocket"], ["cat"], ["mug", "cat", "rocket"], ["cat"]]
    batched = OwlVit(**tiny_vision["owlvit"], threshold=0.0, batch_size=5).detect(images, labels)
    single = OwlVit(**tiny_vision["owlvit"], threshold=0.0, batch_size=1).detect(images, labels)
    for a_row, b_row in zip(batched, single):
        for a, b in zip(a_row, b_row):
            assert a.score == pytest.approx(b.score, abs=1e-5)
            np.testing.assert_allclose(a.box, b.box, atol=1e-3)


def test_owlvit_repeated_word_gets_distinct_boxes(tiny_vision):
    owl = registry.load("vision", "owlvit", {**tiny_vision["owlvit"], "threshold": 0.0})
    image = _images(1)[0]
    (one,) = owl.detect([image], [["dog"]])
    (two,) = owl.detect([image], [["dog", "cat", "dog"]])
    assert two[0] == one[0]  # the first 'dog' keeps the best box
    assert two[2] is not None and two[2].score <= two[0].score
    from gen4gen.models.score.vision import _iou

    assert _iou(np.array(two[0].box), np.array(two[2].box)) <= owl.same_box_iou


def test_owlvit_bad_options_and_inputs(tiny_vision, tmp_path):
    with pytest.raises(FileNotFoundError, match="vision.owlvit"):
        OwlVit(model=str(tmp_path / "absent"), device="cpu")
    with pytest.raises(ValueError, match="threshold"):
        OwlVit(**tiny_vision["owlvit"], threshold=1.5)
    owl = registry.load("vision", "owlvit", tiny_vision["owlvit"])
    with pytest.raises(ValueError, match="2 images but 1 label lists"):
        owl.detect(_images(2), [["cat"]])
    with pytest.raises(ValueError, match=r"labels_per_image\[0\]"):
        owl.detect(_images(1), [[]])


def test_detection_crop_clips_to_the_image():
    image = np.zeros((10, 20, 3), np.uint8)
    assert Detection((-5.0, -5.0, 100.0, 100.0), 0.9).crop(image).shape == (10, 20, 3)
    assert Detection((19.6, 9.9, 19.7, 9.95), 0.9).crop(image).shape == (1, 1, 3)


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    """Offline, and a Hugging Face cache with nothing in it (huggingface_hub reads its cache
    folder once at import, so the constant is pointed there too)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    return tmp_path / "hf" / "hub"


def test_scoring_with_an_uncached_open_clip_tag_fails_at_once_naming_tag_hub_cache_and_fixes(
        empty_hf_cache, tiny_vision):
    import open_clip  # noqa: F401  (imported before the clock: the import is not the wait fixed)

    from gen4gen.models import hf
    from gen4gen.models.score.score import score_images

    photo = _images(1)[0]
    cat = {"id": "chelsea", "category": "cat", "token": "<chelsea>"}
    vision = {"clip": {"model": "ViT-B-32", "pretrained": "openai", "device": "cpu"}, "owlvit": tiny_vision["owlvit"]}
    start = time.monotonic()
    with pytest.raises(hf.WeightsMissing) as err:
        score_images([photo], [[cat]], ["a <chelsea> cat"], {"chelsea": [photo]}, vision)
    assert time.monotonic() - start < 5
    text = str(err.value)
    for part in ("vision.clip", "'ViT-B-32'", "'openai'", "'timm/vit_base_patch32_clip_224.openai'",
                 str(empty_hf_cache), "HF_HUB_OFFLINE=1",
                 "hf download timm/vit_base_patch32_clip_224.openai open_clip_model.safetensors",
                 "set option 'pretrained' to a local checkpoint file"):
        assert part in text, part


def _cache(root, repo: str, filename: str) -> str:
    """One file of `repo` at main in a hub cache laid out as huggingface_hub writes it."""
    sha = "0123456789abcdef0123456789abcdef01234567"
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(sha)
    (folder / "snapshots" / sha).mkdir(parents=True)
    (folder / "snapshots" / sha / filename).write_bytes(b"weights")
    return str(folder / "snapshots" / sha / filename)


def test_a_cached_tag_and_a_local_checkpoint_pass_the_check_and_a_missing_file_does_not(
        empty_hf_cache, tiny_vision, tmp_path):
    from gen4gen.models import hf
    from gen4gen.models.score.vision import clip_weights

    # The legacy .bin name counts as open_clip falls back to it; the hub id is open_clip's.
    cached = _cache(empty_hf_cache, "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "open_clip_pytorch_model.bin")
    assert clip_weights("ViT-B-32", "laion2b_s34b_b79k") == cached
    opts = tiny_vision["clip"]
    assert clip_weights(opts["model"], opts["pretrained"]) == opts["pretrained"]
    assert clip_weights("ViT-B-32", None) is None  # random weights: nothing to check
    with pytest.raises(hf.WeightsMissing, match="neither a tag of ViT-B-32") as err:
        clip_weights("ViT-B-32", str(tmp_path / "gone.safetensors"))
    assert "'openai'" in str(err.value) and str(tmp_path / "gone.safetensors") in str(err.value)
