"""The isnet segmenter (onnxruntime) on a tiny ONNX model of IS-Net's contract built here,
loaded through the registry as a recipe names it; `auto`; and, where the real weights were
fetched (CI does), the real model on real photos against their reference masks."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, real_weights, small_recipe
from gen4gen.infra.records import Concept, DatasetConfig, StageConfig
from gen4gen.models import registry
from gen4gen.models.segment import weights
from gen4gen.models.segment.segmenter import alpha_cutout
from tests.tiny.isnet import tiny_isnet

REALPHOTOS = (REPO / ".." / "shared" / "realphotos").resolve()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """Two tiny models of the contract (different bytes, near-same answers) and one whose
    file leaves the input side dynamic."""
    root = tmp_path_factory.mktemp("tiny-isnet")
    return {"a": tiny_isnet(root / "a.onnx", seed=0), "b": tiny_isnet(root / "b.onnx", seed=1)}


def red_box_photo(h: int = 90, w: int = 150) -> tuple[np.ndarray, np.ndarray]:
    """A red box on a grey, slightly noisy background: (photo, true mask)."""
    rng = np.random.default_rng(0)
    photo = np.clip(rng.normal(128, 6, (h, w, 3)), 0, 255).astype(np.uint8)
    truth = np.zeros((h, w), bool)
    truth[h // 4: 3 * h // 4, w // 5: w // 2] = True
    photo[truth] = (210, 30, 30)
    return photo, truth


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_masks_have_the_photos_size_are_in_0_1_and_find_the_object(tiny):
    photo, truth = red_box_photo()
    tall, tall_truth = red_box_photo(200, 70)
    with registry.use("segment", "isnet", {"weights": str(tiny["a"]), "threads": 1}) as model:
        masks = model.segment_batch([(photo, None), (tall, None)], ["box", "box"])
        assert model.side == (64, 64)  # read from the file's input shape
        assert model.providers[-1] == "CPUExecutionProvider"
    for mask, want in zip(masks, (truth, tall_truth)):
        assert mask.shape == want.shape and mask.dtype == np.float32
        assert 0.0 <= mask.min() and mask.max() <= 1.0
        assert ((mask > 0.05) & (mask < 0.95)).any()  # feathered, as the offline segmenter's
        assert iou(mask > 0.5, want) > 0.8


def test_a_dynamic_input_side_is_taken_as_1024(tmp_path):
    path = tiny_isnet(tmp_path / "dynamic.onnx", side=64, dynamic=True)
    model = registry.load("segment", "isnet", {"weights": str(path), "threads": 1, "feather": 0})
    assert model.side == (1024, 1024)
    photo, truth = red_box_photo()
    mask = model.segment_batch([(photo, None)], ["box"])[0]
    assert set(np.unique(mask)) <= {0.0, 1.0} and iou(mask > 0.5, truth) > 0.8  # feather 0: a hard edge
    registry.release("segment", "isnet", {"weights": str(path), "threads": 1, "feather": 0})


def test_a_photo_with_real_transparency_keeps_its_alpha(tiny):
    photo, truth = red_box_photo()
    alpha = np.zeros(truth.shape, np.float32)
    alpha[10:60, 80:140] = 1.0  # somewhere else than the red box: the alpha wins
    alpha[0, 0] = 0.6  # a speck, cleaned away as the offline segmenter cleans it
    opaque = np.ones(truth.shape, np.float32)  # an alpha channel saved by habit: not a cut-out
    with registry.use("segment", "isnet", {"weights": str(tiny["a"]), "threads": 1}) as model:
        cut, plain = model.segment_batch([(photo, alpha), (photo, opaque)], ["box", "box"])
    np.testing.assert_array_equal(cut, alpha_cutout(alpha, alpha.shape))
    assert cut[0, 0] == 0 and cut[30, 100] == 1
    assert iou(plain > 0.5, truth) > 0.8


def test_missing_weights_say_the_path_and_the_command(tmp_path):
    gone = tmp_path / "nowhere.onnx"
    with pytest.raises(weights.WeightsMissing, match=str(gone)):
        registry.load("segment", "isnet", {"weights": str(gone)})
    with pytest.raises(weights.WeightsMissing) as err:  # the fetched model, not fetched (empty cache)
        registry.load("segment", "isnet", {"size": "small"})
    assert str(weights.weights_path("small")) in str(err.value)
    assert "gen4gen weights fetch isnet --size small" in str(err.value)
    with pytest.raises(ValueError, match="option 'size'"):
        registry.load("segment", "isnet", {"size": "large"})


def test_the_mask_cache_key_follows_the_weights_file(tiny, tmp_path, monkeypatch):
    """A user's own file, another file, the fetched medium and small: four caches."""
    from gen4gen.tasks.segment import segment_concept

    monkeypatch.setenv("GEN4GEN_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "weights").mkdir(parents=True)
    shutil.copy(tiny["a"], weights.weights_path("medium"))
    shutil.copy(tiny["b"], weights.weights_path("small"))
    photo, _ = red_box_photo()
    Image.fromarray(photo).save(tmp_path / "box.png")
    concept = Concept(id="box", category="box", token="<box>", photos=[str(tmp_path / "box.png")])
    out = str(tmp_path / "out")
    stages = [StageConfig(backend="isnet", options={"weights": str(tiny["a"])}),
              StageConfig(backend="isnet", options={"weights": str(tiny["b"])}),
              StageConfig(backend="isnet"), StageConfig(backend="isnet", options={"size": "small"})]
    for stage in stages:
        [cut] = segment_concept(concept, out, stage)
        assert cut.error is None and cut.mask
    caches = sorted(p.name for p in (tmp_path / "out" / ".cache" / "segment").iterdir())
    assert len(caches) == 4 and all(c.startswith("isnet-") for c in caches)
    # Unchanged weights: the same key, the mask read back.
    [again] = segment_concept(concept, out, StageConfig(backend="isnet"))
    assert again.mask and len(list((tmp_path / "out" / ".cache" / "segment").iterdir())) == 4


def test_auto_is_isnet_where_the_weights_are_and_offline_with_a_warning_where_not(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("GEN4GEN_CACHE", str(tmp_path / "cache"))
    stage, note = weights.resolve_segment(StageConfig(backend="auto"))
    assert stage == StageConfig(backend="offline")
    assert "gen4gen weights fetch isnet" in note
    with pytest.raises(ValueError, match="takes no options"):
        weights.resolve_segment(StageConfig(backend="auto", options={"feather": 1}))
    weights.weights_dir().mkdir(parents=True)
    shutil.copy(tiny["a"], weights.weights_path("small"))
    stage, _ = weights.resolve_segment(StageConfig(backend="auto"))
    assert stage.backend == "isnet" and stage.options["size"] == "small"
    shutil.copy(tiny["a"], weights.weights_path("medium"))  # medium first, when both are there
    stage, note = weights.resolve_segment(StageConfig(backend="auto"))
    # A file not from `weights fetch` is used, its digest recorded, and the run says so.
    assert stage == StageConfig(backend="isnet", options={"weights_sha256": weights.file_sha256(tiny["a"])})
    assert "not the pinned IS-Net medium model" in note
    assert weights.resolve_segment(stage) == (stage, note)  # resolving again changes nothing
    assert weights.resolve_segment(StageConfig(backend="sam", options={"x": 1}))[0].options == {"x": 1}


def test_a_dataset_says_which_segmenter_cut_its_objects_out(tiny, tmp_path, monkeypatch, caplog):
    """`auto` with weights present: the manifest and the card name isnet and its model;
    with none: offline, and the run warns with the command that fetches them."""
    from gen4gen.tasks.pipeline import run_local

    raw = small_recipe(tmp_path, samples=1, canvas=128)
    raw["compositions"] = raw["compositions"][:1]
    config = DatasetConfig.model_validate(raw)
    assert config.stages.segment.backend == "auto"  # the default

    with caplog.at_level(logging.WARNING, logger="gen4gen"):
        manifest, _, _ = run_local(config, str(tmp_path / "plain"))
    assert manifest.segmenter == {"backend": "offline"}
    assert any("gen4gen weights fetch isnet" in r.getMessage() for r in caplog.records)
    assert "made by `offline`" in (tmp_path / "plain" / "README.md").read_text()

    monkeypatch.setenv("GEN4GEN_CACHE", str(tmp_path / "cache"))
    weights.weights_dir().mkdir(parents=True)
    shutil.copy(tiny["a"], weights.weights_path("medium"))
    digest = weights.file_sha256(tiny["a"])
    manifest, _, cutouts = run_local(config, str(tmp_path / "cut"))
    assert manifest.segmenter == {"backend": "isnet", "model": "isnet-medium.onnx", "model_sha256": digest}
    card = (tmp_path / "cut" / "README.md").read_text()
    assert f"made by `isnet` (IS-Net, DIS; model `isnet-medium.onnx`, sha256 `{digest}`)" in card
    assert "- segment: backend `isnet`" in card
    masks = {Path(c.mask).parent.name for cuts in cutouts.values() for c in cuts if c.mask}
    assert masks and all(m.startswith("isnet-") for m in masks)


# --------------------------------------------------------------------------- real weights


def real_cases(count: int = 3) -> list[tuple[Path, Path]]:
    """The first photo of the first `count` subjects not listed as ambiguous."""
    if not (REALPHOTOS / "photos").is_dir():
        pytest.skip(f"no real photos at {REALPHOTOS} (../shared/realphotos beside the repo)")
    ambiguous = set((REALPHOTOS / "ambiguous.txt").read_text().split())
    cases = []
    for subject in sorted(p.name for p in (REALPHOTOS / "photos").iterdir()):
        photo = REALPHOTOS / "photos" / subject / "00.jpg"
        if f"{subject}/00" not in ambiguous and photo.is_file():
            cases.append((photo, REALPHOTOS / "masks" / subject / "00.png"))
    return cases[:count]


def test_the_real_medium_model_cuts_real_photos_out_like_the_reference():
    path = real_weights("medium")
    cases = real_cases()
    with registry.use("segment", "isnet", {"weights": str(path)}) as model:
        for photo, ref in cases:
            rgb = np.asarray(Image.open(photo).convert("RGB"))
            mask = model.segment_batch([(rgb, None)], [photo.parent.name])[0]
            want = np.asarray(Image.open(ref).convert("L")) >= 128
            assert mask.shape == want.shape
            assert iou(mask > 0.5, want) >= 0.9, photo
    registry.release("segment", "isnet", {"weights": str(path)})


def test_weights_replaced_after_planning_refuse_to_load(tiny):
    """The run recorded the file's digest in the options; other bytes there at load time
    are refused (permanently: the flow does not retry it)."""
    planned = weights.file_sha256(tiny["b"])
    with pytest.raises(weights.WeightsMissing, match=planned):
        registry.load("segment", "isnet", {"weights": str(tiny["a"]), "weights_sha256": planned})
