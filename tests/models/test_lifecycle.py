"""The model lifecycle: the paper's five models (tiny random weights of the real classes,
loaded through the real backends) run stage after stage under a small budget pointed at
the CPU, and what is resident is checked after each stage.

On the CPU "offloaded" moves nothing physically (the weights are in CPU memory already), but
the accounting, the choice of victims, the moves (`Module.to`) and the re-onloads run the
same code as on a GPU; tests/models/test_gpu.py repeats the core of it on CUDA.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import weakref

import numpy as np
import pytest

pytest.importorskip("diffusers")
pytest.importorskip("segment_anything")

from gen4gen.infra.records import RunConfig  # noqa: E402
from gen4gen.models import lifecycle, registry  # noqa: E402
from tests.tiny.llava import tiny_llava  # noqa: E402
from tests.tiny.sam import tiny_sam  # noqa: E402
from tests.tiny.sdxl import tiny_sdxl_inpaint  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GiB = lifecycle.GiB


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_vision):
    """Options of each stage's model, distinct from other test modules' (own folders)."""
    root = tmp_path_factory.mktemp("lifecycle")
    base = tiny_sdxl_inpaint(root / "sdxl", refiners={root / "refiner": 10})
    return {
        "segment": ("segment", "sam", {**tiny_sam(root / "sam"), "batch_size": 2}),
        "repaint": ("repaint", "sdxl", {"model": str(base), "refiner": str(root / "refiner"), "size": 64,
                                        "steps": 2, "device": "cpu", "batch_size": 4,
                                        "scene_options": {"details": False}}),
        "caption": ("caption", "llava", {"model": str(tiny_llava(root / "llava")), "batch_size": 2,
                                         "max_new_tokens": 3, "device": "cpu"}),
        "detect": ("vision", "owlvit", {**tiny_vision["owlvit"], "batch_size": 3}),
        "clip": ("vision", "clip", {**tiny_vision["clip"], "batch_size": 3}),
    }


@pytest.fixture
def budget():
    """A budget on the CPU; afterwards the default again (no budget without CUDA)."""
    yield lambda gb, **kw: registry.configure(gpu_memory_gb=gb, device="cpu", **kw)
    registry.configure()


def _mine(models) -> dict:
    keys = {registry._key(*m): stage for stage, m in models.items()}
    return {keys[(r.family, r.backend, r.options)]: r for r in registry.resident()
            if (r.family, r.backend, r.options) in keys}


def _on_device(models) -> set[str]:
    return {stage for stage in _mine(models) if _entry(models, stage).on_device}


def _entry(models, stage):
    return registry._LOADED[registry._key(*models[stage])]


def _used() -> int:
    return registry._LIFE.used()


def _images(n, size=48, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def _composite(seed):
    c = np.zeros((64, 64, 3), np.uint8)
    m = np.zeros((64, 64), np.float32)
    c[20:44, 16:40] = np.random.default_rng(seed).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    m[20:44, 16:40] = 1.0
    return c, m, [(16, 20, 24, 24)]


def _stage(models, stage):
    """One stage's batches inside `registry.use`, as tasks/ run them; returns its output."""
    family, backend, options = models[stage]
    with registry.use(family, backend, options) as model:
        assert _entry(models, stage).on_device  # on its device for the whole body
        if stage == "segment":
            return model.segment_batch([(im, None) for im in _images(2)])
        if stage == "repaint":
            items = [_composite(s) for s in range(2)]
            return model.repaint_batch([c for c, _, _ in items], [m for _, m, _ in items],
                                       ["in a garden", "on a beach"], [1, 2], [b for _, _, b in items])
        if stage == "caption":
            return model.describe(_images(2, 32), seed=0)
        with registry.use(*models["clip"]) as clip:  # the filter holds both vision models
            found = model.detect(_images(2), [["cat"], ["mug"]])
            return found, clip.image_features(_images(2))


def _sizes(models) -> dict[str, tuple[int, int]]:
    """(weights, working reserve) of each model, loaded once with no budget."""
    registry.configure(gpu_memory_gb=None, device="cpu")  # device named, no figure: no budget on cpu
    out = {}
    for stage, m in models.items():
        registry.load(*m)
        e = _entry(models, stage)
        out[stage] = (e.weights, e.working())
    return out


def test_stages_under_a_small_budget_keep_only_what_fits_and_reload_what_was_offloaded(models, budget, caplog):
    sizes = _sizes(models)
    assert all(w > 0 for w, _ in sizes.values())
    # The repainter (two tiny UNets, two text encoders, one shared VAE) is the largest, as
    # with the real models; the budget fits any one stage, never the whole set at once.
    need = {s: w + k for s, (w, k) in sizes.items()}
    need["detect"] += sizes["clip"][0] + sizes["clip"][1]
    limit = max(need.values()) * 1.05
    assert sum(w for w, _ in sizes.values()) > limit
    budget(limit / GiB)

    first = {}
    order = ["segment", "repaint", "caption", "detect"]
    with caplog.at_level(logging.INFO, logger="gen4gen.models.lifecycle"):
        for stage in order:
            first[stage] = _stage(models, stage)
            resident = _on_device(models)
            assert stage in resident
            assert _used() <= limit  # nothing held now: weights only
            # Every model still resident would have fitted beside the one last used.
            kept = sum(sizes[s][0] for s in resident)
            assert kept <= limit
            if stage == "repaint":
                assert "segment" not in resident or kept + sizes["segment"][0] <= limit
        # The repainter and LLaVA never fit together: the repainter went when LLaVA came.
        assert "repaint" not in _on_device(models)
    assert any("offloaded to cpu repaint/sdxl" in r.getMessage() for r in caplog.records)
    ours = [r for r in caplog.records if r.name == lifecycle.log.name]
    assert ours and all(r.levelno < logging.WARNING for r in ours)  # never over budget

    # A second composition: every offloaded model comes back and gives the same results.
    again = {stage: _stage(models, stage) for stage in order}
    for a, b in zip(first["segment"], again["segment"]):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(first["repaint"], again["repaint"]):
        np.testing.assert_array_equal(a, b)
    assert first["caption"] == again["caption"]
    np.testing.assert_array_equal(first["detect"][1], again["detect"][1])
    assert {r.held for r in _mine(models).values()} == {0}


def test_a_model_held_by_one_thread_is_never_moved_and_another_load_waits_for_it(models, budget):
    sizes = _sizes(models)
    owl, rep = sizes["detect"], sizes["repaint"]
    # Room for the repainter in use, or for OWL-ViT beside its weights, not both.
    assert rep[0] + owl[0] > (rep[0] + rep[1]) * 1.01
    budget((rep[0] + rep[1]) * 1.01 / GiB, wait_seconds=30)
    holding, go = threading.Event(), threading.Event()
    times = {}

    def hold_repainter():
        with registry.use(*models["repaint"]):
            holding.set()
            go.wait(10)
            times["released"] = time.monotonic()
            assert _entry(models, "repaint").on_device

    t = threading.Thread(target=hold_repainter)
    t.start()
    assert holding.wait(10)

    def load_owl():
        registry.load(*models["detect"])
        times["loaded"] = time.monotonic()

    loader = threading.Thread(target=load_owl)
    loader.start()
    time.sleep(0.3)
    assert "loaded" not in times  # waiting: the held repainter is not evicted for it
    assert _entry(models, "repaint").on_device
    go.set()
    t.join(10)
    loader.join(10)
    assert times["loaded"] >= times["released"]
    assert "detect" in _on_device(models) and "repaint" not in _on_device(models)


def test_a_wait_that_runs_out_goes_over_budget_with_a_warning(models, budget, caplog):
    sizes = _sizes(models)
    rep = sizes["repaint"]
    budget((rep[0] + rep[1]) * 1.01 / GiB, wait_seconds=0.2)
    holding, go = threading.Event(), threading.Event()

    def hold():
        with registry.use(*models["repaint"]):
            holding.set()
            go.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    assert holding.wait(10)
    try:
        with caplog.at_level(logging.WARNING, logger="gen4gen.models.lifecycle"):
            registry.load(*models["detect"])
        assert {"repaint", "detect"} <= _on_device(models)
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == lifecycle.log.name]
        assert warned and "vision/owlvit goes over the budget" in warned[0] and "repaint/sdxl" in warned[0]
    finally:
        go.set()
        t.join(10)


def test_own_holds_do_not_wait_and_release_policy_drops_the_model(models, budget, caplog):
    sizes = _sizes(models)
    budget(max(sizes["detect"][0], sizes["clip"][0]) * 1.01 / GiB, policy="release", wait_seconds=30)
    for stage in ("detect", "clip"):
        assert registry.release(*models[stage])
    # One thread holding both vision models: waiting for itself would never end.
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="gen4gen.models.lifecycle"):
        with registry.use(*models["detect"]), registry.use(*models["clip"]):
            assert {"detect", "clip"} <= _on_device(models)
    assert time.monotonic() - start < 5
    assert any("(by this thread)" in r.getMessage() for r in caplog.records)

    ref = weakref.ref(registry.load(*models["detect"]))
    registry.load(*models["segment"])  # no room beside it: under `release` it is dropped
    gc.collect()
    assert ref() is None
    assert registry._key(*models["detect"]) not in registry.loaded()
    assert registry.load(*models["detect"]) is not None  # rebuilt from disk when needed again


def test_registry_release_and_run_config():
    with pytest.raises(ValueError, match="memory_policy"):
        registry.configure(policy="keep-everything")
    assert registry.release("vision", "clip", {"model": "never-loaded"}) is False
    assert RunConfig(gpu_memory_gb=22).gpu_memory_gb == 22
    assert RunConfig().gpu_memory_gb is None
    with pytest.raises(ValueError, match="gpu_memory_gb"):
        RunConfig(gpu_memory_gb=-1)
    with pytest.raises(ValueError, match="memory_policy"):
        RunConfig(memory_policy="keep")


@pytest.mark.gpu
def test_on_cuda_an_evicted_model_leaves_the_gpu_and_comes_back_for_its_stage(models, budget):
    sam = ("segment", "sam", {**models["segment"][2], "device": "cuda"})
    clip = ("vision", "clip", {**models["clip"][2], "device": "cuda"})
    registry.configure(device="cuda")  # mem_get_info's figure: ample for tiny models
    registry.load(*sam)
    e = registry._LOADED[registry._key(*sam)]
    assert next(e.model.sam.parameters()).is_cuda
    registry.configure(gpu_memory_gb=e.weights * 1.01 / GiB, device="cuda")
    registry.load(*clip)  # no room beside SAM: SAM goes to CPU memory
    assert not next(e.model.sam.parameters()).is_cuda
    with registry.use(*sam) as model:
        assert next(model.sam.parameters()).is_cuda
        assert len(model.segment_batch([(im, None) for im in _images(1)])) == 1
