"""The diffusion repainters (SDXL inpainting + refiner, SD 1.5 inpainting): tiny pipelines
of the real diffusers classes, saved with save_pretrained and loaded back offline through
the backend, the registry and the repaint stage."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers")

from gen4gen.models import registry  # noqa: E402
from gen4gen.models.repaint.diffusion_repaint import DiffusionRepainter  # noqa: E402
from tests.tiny.sd import tiny_sd, tiny_sd_inpaint  # noqa: E402
from tests.tiny.sdxl import tiny_sdxl_inpaint  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# Small and few: 64 px pipelines, 4 steps (the refiner takes the last quarter).
FAST = {"size": 64, "steps": 4, "device": "cpu", "scene_options": {"details": False}}
CANVAS = 96


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("diffusion")
    base = tiny_sdxl_inpaint(root / "sdxl", refiners={root / "refiner": 10, root / "refiner-b": 11})
    return {"base": str(base), "refiner": str(root / "refiner"), "refiner_b": str(root / "refiner-b"),
            "sd": str(tiny_sd_inpaint(root / "sd15")), "sd_t2i": str(tiny_sd(root / "sd15-t2i"))}


@pytest.fixture(scope="module")
def sdxl_options(folders):
    return {"model": folders["base"], "refiner": folders["refiner"], **FAST}


@pytest.fixture(scope="module")
def sdxl(sdxl_options):
    return registry.load("repaint", "sdxl", sdxl_options)


def _sample(seed: int = 0):
    """A composite with a textured object (solid core, soft rim) on black, and its box."""
    rng = np.random.default_rng(seed)
    composite = np.zeros((CANVAS, CANVAS, 3), np.uint8)
    mask = np.zeros((CANVAS, CANVAS), np.float32)
    x, y, w, h = 20 + seed * 7, 30, 36, 50
    composite[y : y + h, x : x + w] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask[y : y + h, x : x + w] = 1.0
    mask[y - 1, x : x + w] = 0.5  # a soft rim row
    composite[y - 1, x : x + w] = 200
    return composite, mask, [(x, y, w, h)]


def _batch(n: int):
    items = [_sample(i) for i in range(n)]
    scenes = ["in a garden", "in an office", "on a city street", "on the beach"][:n]
    return [c for c, _, _ in items], [m for _, m, _ in items], scenes, list(range(100, 100 + n)), [b for _, _, b in items]


def test_shapes_ranges_and_objects_bit_exact(sdxl):
    composites, masks, scenes, seeds, boxes = _batch(2)
    outs = sdxl.repaint_batch(composites, masks, scenes, seeds, boxes)
    assert len(outs) == 2
    for out, composite, mask in zip(outs, composites, masks):
        assert out.shape == composite.shape and out.dtype == np.uint8
        solid = mask >= 1.0
        np.testing.assert_array_equal(out[solid], composite[solid])
        # The background was repainted: not the black composite.
        assert out[mask == 0].mean() > 10


def _like(sdxl, **change):
    """A repainter around the already loaded pipelines, with other options."""
    return DiffusionRepainter.from_pipelines("sdxl", sdxl.base, sdxl.refiner, **{**sdxl.options.model_dump(), **change})


def test_the_refiners_output_is_the_one_kept(folders, sdxl_options, sdxl):
    composites, masks, scenes, seeds, boxes = _batch(1)
    args = (composites, masks, scenes, seeds, boxes)
    a = sdxl.repaint_batch(*args)[0]
    again = sdxl.repaint_batch(*args)[0]
    other_refiner = DiffusionRepainter("sdxl", **{**sdxl_options, "refiner": folders["refiner_b"]}).repaint_batch(*args)[0]
    no_refiner = DiffusionRepainter.from_pipelines("sdxl", sdxl.base, None, **FAST).repaint_batch(*args)[0]
    background = masks[0] == 0
    np.testing.assert_array_equal(a, again)  # deterministic, so the differences below are real
    assert (a[background] != other_refiner[background]).any(axis=1).mean() > 0.2
    assert (a[background] != no_refiner[background]).any(axis=1).mean() > 0.2


def test_mask_edge_is_smoothed_with_a_5x5_average(sdxl):
    """finish(): a white start image, a black decoded image, a square object. With the 5x5
    average, the pixel next to an edge keeps 10/25 of the start image (two of the window's
    five columns are inside), 2 px out 5/25, 3 px out none; inside, the composite exactly."""
    r = sdxl
    assert r.options.mask_blur == 5  # the paper's default
    mask = np.zeros((40, 40), np.float32)
    mask[10:30, 10:30] = 1.0
    composite = np.full((40, 40, 3), 77, np.uint8)
    white, black = np.full((40, 40, 3), 255, np.uint8), np.zeros((40, 40, 3), np.float32)
    out = r.finish(composite, mask, white, black)
    assert out[20, 9].tolist() == [102] * 3  # 255 * 10 / 25
    assert out[20, 8].tolist() == [51] * 3  # 255 * 5 / 25
    assert out[20, 7].tolist() == [0] * 3  # the window no longer reaches the object
    assert (out[10:30, 10:30] == 77).all()
    hard = _like(sdxl, mask_blur=1).finish(composite, mask, white, black)
    assert hard[20, 9].tolist() == [0] * 3


def test_batch_equals_one_sample_at_a_time(sdxl):
    composites, masks, scenes, seeds, boxes = _batch(2)
    batched = _like(sdxl, batch_size=2).repaint_batch(composites, masks, scenes, seeds, boxes)
    single = _like(sdxl, batch_size=1)
    for i, out in enumerate(batched):
        alone = single.repaint(composites[i], masks[i], scenes[i], seeds[i], boxes[i])
        # Same seeds, same noise; batched kernels may round one level differently.
        assert np.abs(alone.astype(int) - out.astype(int)).max() <= 2


def test_the_start_image_is_the_scene_behind_the_objects(sdxl):
    composite, mask, boxes = _sample()
    init = sdxl.start_image(composite, mask, "in a garden", 3, boxes)
    solid = mask >= 1.0
    np.testing.assert_array_equal(init[solid], composite[solid])
    assert init[mask == 0].mean() > 30 and init[mask == 0].std() > 3  # a painted scene, not black


def test_with_a_background_photo_the_pipeline_starts_from_it_blurred_with_the_objects(sdxl, monkeypatch):
    """The paper's start: the background photo, Gaussian radius 1, the objects over it. What
    the base pipeline (diffusers' own __call__) receives is recorded on its way in."""
    from gen4gen.models.backgrounds import soften
    from gen4gen.models.contracts import Backdrop

    composite, mask, boxes = _sample()
    rng = np.random.default_rng(5)
    photo = cv2_smooth(rng.integers(0, 256, (CANVAS, CANVAS, 3), dtype=np.uint8))
    seen = {}
    base_call = type(sdxl.base).__call__

    def spy(pipe, *args, **kwargs):
        seen.setdefault("image", kwargs["image"])
        return base_call(pipe, *args, **kwargs)

    monkeypatch.setattr(type(sdxl.base), "__call__", spy)
    out = sdxl.repaint_batch([composite], [mask], ["in a garden"], [3], [boxes], [Backdrop(photo, 0.0)])[0]
    received = np.asarray(seen["image"][0]).astype(int)  # at the model size, resized by the backend
    want = sdxl.start_image(composite, mask, "in a garden", 3, boxes, Backdrop(photo, 0.0))
    expected = sdxl._resize(want, received.shape[1], received.shape[0]).astype(int)
    np.testing.assert_array_equal(received, expected)
    # ... and that start image is the photo blurred by radius 1 outside the objects, the objects inside.
    outside = mask == 0
    np.testing.assert_array_equal(want[outside], soften(photo, 1.0)[outside])
    np.testing.assert_array_equal(want[mask >= 1.0], composite[mask >= 1.0])
    assert sdxl.options.init is None and sdxl.options.strength == 0.9 and sdxl.options.refiner_start == 0.75
    np.testing.assert_array_equal(out[mask >= 1.0], composite[mask >= 1.0])


def test_init_photo_without_a_background_is_a_bad_input_of_that_sample(sdxl):
    from gen4gen.infra.errors import BadInput

    composite, mask, boxes = _sample()
    with pytest.raises(BadInput, match="needs a background photo"):
        _like(sdxl, init="photo").start_image(composite, mask, "in a garden", 3, boxes)


def cv2_smooth(img):
    import cv2

    return cv2.GaussianBlur(img, (0, 0), 3)


def test_sd15_inpainting_as_the_lighter_option(folders):
    r = registry.load("repaint", "sd-inpaint", {"model": folders["sd"], **FAST})
    composites, masks, scenes, seeds, boxes = _batch(2)
    for out, composite, mask in zip(r.repaint_batch(composites, masks, scenes, seeds, boxes), composites, masks):
        assert out.shape == composite.shape
        np.testing.assert_array_equal(out[mask >= 1.0], composite[mask >= 1.0])


@pytest.mark.parametrize(
    "kind, change, named",
    [
        ("sdxl", {"strength": 1.5}, "'strength'"),
        ("sdxl", {"stepz": 10}, "'stepz' is unknown"),
        ("sdxl", {"prompt": "a photo"}, "'prompt'.*{scene}"),
        ("sdxl", {"size": 100}, "'size'"),
        ("sdxl", {"refiner_start": 1.0}, "'refiner_start'"),
        ("sd-inpaint", {"refiner": "x"}, "'refiner' is for sdxl only"),
    ],
)
def test_bad_options_raise_naming_the_option(folders, kind, change, named):
    model = folders["base"] if kind == "sdxl" else folders["sd"]
    with pytest.raises(ValueError, match=named):
        DiffusionRepainter(kind, **{"model": model, **FAST, **change})


def test_missing_folder_and_non_inpainting_model_are_named(folders, tmp_path):
    with pytest.raises(FileNotFoundError, match="model"):
        DiffusionRepainter("sd-inpaint", model=str(tmp_path / "nope"), **FAST)
    with pytest.raises(ValueError, match="'model'.*not an inpainting model"):
        DiffusionRepainter("sd-inpaint", model=folders["sd_t2i"], **FAST)


def test_repaint_stage_batches_records_a_bad_sample_and_loads_once(sdxl_options, sdxl, tmp_path):
    """The stage through the registry: the model built once, samples batched, a corrupt
    composite fails only its own sample."""
    from conftest import small_recipe
    from gen4gen.infra.records import DatasetConfig, StageConfig
    from gen4gen.infra.storage import join, read_mask, read_rgb
    from gen4gen.tasks.composite import COMPOSITE
    from gen4gen.tasks.pipeline import jobs, own_cutouts
    from gen4gen.tasks.plan import plan_composition
    from gen4gen.tasks.repaint import REPAINT
    from gen4gen.tasks.segment import segment_concept
    from gen4gen.tasks.stage import run_samples

    stage = StageConfig(backend="sdxl", options=sdxl_options)
    raw = small_recipe(tmp_path, samples=3, canvas=128)
    raw["compositions"] = raw["compositions"][:1]
    raw["stages"] = {"repaint": stage.model_dump()}
    config = DatasetConfig.model_validate(raw)
    out = config.out
    cutouts = {c.id: segment_concept(c, out, config.stages.segment) for c in config.concepts[:2]}
    job = jobs(config.model_copy(update={"concepts": config.concepts[:2]}), out, cutouts)["cat-mug"]
    samples = run_samples(COMPOSITE, plan_composition(job, own_cutouts(job, cutouts)), job)
    assert len(samples) == 3 and all(s.alive for s in samples)
    (tmp_path / "out" / samples[1].paths["composite"]).write_bytes(b"not a png")

    done = run_samples(REPAINT, samples, job)
    model = registry.load("repaint", "sdxl", stage.options)
    assert model is sdxl
    assert [s.status for s in done] == ["planned", "failed", "planned"]
    reason = done[1].reasons[-1]
    assert reason.stage == "repaint" and samples[1].paths["composite"] in reason.detail
    assert "repaint" not in done[1].paths
    for s in (done[0], done[2]):
        final = read_rgb(join(out, s.paths["repaint"]))
        composite = read_rgb(join(out, s.paths["composite"]))
        solid = read_mask(join(out, s.paths["mask"])) >= 1.0
        np.testing.assert_array_equal(final[solid], composite[solid])
        assert s.seconds["repaint"] > 0
    # Again (a retry of the stage): the same model object, nothing loaded anew.
    before = registry.loaded()
    run_samples(REPAINT, samples[:1], job.__class__(**{**job.__dict__, "refresh": True}))
    assert registry.loaded() == before and registry.load("repaint", "sdxl", stage.options) is model
