"""GPU checks: the real backends on CUDA in fp16, on the tiny models (skipped without CUDA).

On CPU the same code runs in fp32 (the other test modules); these check what only a GPU
shows: the fp16 placement the backends choose by themselves, and that the objects stay
bit-exact after an fp16 VAE and refiner, CPU offload, a training step with fp16 gradient
scaling, and peak memory as torch.cuda reports it. benchmarks/gpu_suite.py runs this module.

DEVICE is "cuda"; GEN4GEN_GPU_TEST_DEVICE=cpu lets a CPU machine call these functions
directly (conftest skips them there) to catch mistakes before a GPU is at hand.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytestmark = pytest.mark.gpu
DEVICE = os.environ.get("GEN4GEN_GPU_TEST_DEVICE", "cuda")


def test_backends_choose_cuda_and_fp16_by_themselves():
    import torch

    from gen4gen.models.hf import placement

    assert placement({}) == ("cuda", torch.float16)
    assert placement({"device": "cpu"}) == ("cpu", torch.float32)


def test_sdxl_repaint_on_cuda_fp16_keeps_objects_bit_exact(tmp_path):
    from gen4gen.models.repaint.diffusion_repaint import DiffusionRepainter
    from tests.tiny.sdxl import tiny_sdxl_inpaint

    base = tiny_sdxl_inpaint(tmp_path / "sdxl", refiners={tmp_path / "refiner": 10})
    model = DiffusionRepainter("sdxl", model=str(base), refiner=str(tmp_path / "refiner"), size=64, steps=4)
    rng = np.random.default_rng(0)
    composite = np.zeros((96, 96, 3), np.uint8)
    mask = np.zeros((96, 96), np.float32)
    composite[30:80, 20:56] = rng.integers(0, 256, (50, 36, 3), dtype=np.uint8)
    mask[30:80, 20:56] = 1.0
    (out,) = model.repaint_batch([composite], [mask], ["in a garden"], [0], [[(20, 30, 36, 50)]])
    assert np.isfinite(out.astype(np.float32)).all() and out.dtype == np.uint8
    np.testing.assert_array_equal(out[mask >= 1], composite[mask >= 1])
    assert out[mask == 0].std() > 0  # fp16 did not turn the background into NaN-black


def test_sam_on_cuda_matches_cpu(tmp_path):
    import skimage.data

    from gen4gen.models.segment.sam import SamSegmenter
    from tests.tiny.sam import tiny_sam

    options = tiny_sam(tmp_path / "sam")
    photo = skimage.data.coffee()
    pair = (photo, None)
    on_cpu = SamSegmenter(**{**options, "device": "cpu"}).segment_batch([pair], categories=["mug"])[0]
    on_gpu = SamSegmenter(**{**options, "device": "cuda", "dtype": "float32"}).segment_batch([pair], categories=["mug"])[0]
    assert np.abs(on_cpu - on_gpu).mean() < 0.01


def _scene(n: int = 96):
    rng = np.random.default_rng(0)
    composite = np.zeros((n, n, 3), np.uint8)
    mask = np.zeros((n, n), np.float32)
    composite[30:80, 20:56] = rng.integers(0, 256, (50, 36, 3), dtype=np.uint8)
    mask[30:80, 20:56] = 1.0
    return composite, mask


def test_llava_captions_on_cuda_in_fp16(tmp_path):
    import torch

    from gen4gen.models.caption.llava import LlavaCaptioner
    from tests.tiny.llava import tiny_llava

    folder = str(tiny_llava(tmp_path / "llava"))
    model = LlavaCaptioner(model=folder, device=DEVICE, dtype="float16", batch_size=2, max_new_tokens=6)
    weights = next(model.model.parameters())
    assert weights.device.type == DEVICE and weights.dtype == torch.float16
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(3)]
    first = model.describe(images, seed=1)
    assert len(first) == 3 and all(isinstance(t, str) for t in first)
    assert first == model.describe(images, seed=1)  # greedy decoding stays deterministic on CUDA
    zebra = ("<zed>", "zebra", (10, 10, 20, 20))
    (result,) = model.caption_images(images[:1], [[zebra]], ["in a garden"], [5])
    assert "<zed>" in result.text  # the finished caption names the concept whatever LLaVA said


def test_clip_and_owlvit_on_cuda_score_as_on_cpu(tiny_vision):
    from gen4gen.models.score.score import score_images
    from gen4gen.models.score.vision import Clip, OwlVit

    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(3)]
    clip_cpu = Clip(**{**tiny_vision["clip"], "device": "cpu"})
    clip_fp16 = Clip(**{**tiny_vision["clip"], "device": DEVICE, "dtype": "float16"})
    np.testing.assert_allclose(clip_fp16.image_features(images), clip_cpu.image_features(images), atol=2e-2)
    texts = ["a cat on a mat", "a red mug"]
    np.testing.assert_allclose(clip_fp16.text_features(texts), clip_cpu.text_features(texts), atol=2e-2)

    owl_cpu = OwlVit(**{**tiny_vision["owlvit"], "device": "cpu", "threshold": 0.0})
    owl_fp16 = OwlVit(**{**tiny_vision["owlvit"], "device": DEVICE, "dtype": "float16", "threshold": 0.0})
    labels = [["cat", "mug"]] * 3
    for a, b in zip(owl_cpu.detect(images, labels), owl_fp16.detect(images, labels)):
        for da, db in zip(a, b):
            assert abs(da.score - db.score) < 2e-2

    # The metrics end to end. fp32 on CUDA: in fp16 two near-equal boxes may swap places and
    # crop different pixels, a real but uninteresting difference.
    concepts = [{"id": "c0", "category": "cat", "token": "<c0>"}, {"id": "c1", "category": "mug", "token": "<c1>"}]
    sources = {c["id"]: [rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)] for c in concepts}
    prompts = ["<c0> cat and <c1> mug on a beach"] * 3

    def scores(device: str):
        options = {"clip": {**tiny_vision["clip"], "device": device, "dtype": "float32"},
                   "owlvit": {**tiny_vision["owlvit"], "device": device, "dtype": "float32", "threshold": 0.0}}
        return score_images(images, [concepts] * 3, prompts, sources, options)

    for on_cpu, on_gpu in zip(scores("cpu"), scores(DEVICE)):
        assert on_gpu.cp_clip == pytest.approx(on_cpu.cp_clip, abs=1e-3)
        assert on_gpu.ti_clip == pytest.approx(on_cpu.ti_clip, abs=1e-3)


def test_one_custom_diffusion_step_on_cuda_in_fp16(tmp_path):
    import torch

    from benchmarks.train_speed import PROMPT, tiny_components
    from gen4gen.models.train.custom_diffusion import CustomDiffusion
    from gen4gen.tasks.training.train import make_optimizer, optimizer_step

    model = CustomDiffusion(**tiny_components(str(tmp_path)), device=DEVICE, dtype=torch.float16)
    model.add_tokens(["<chelsea>", "<coffee>", "<cat-mug>"], [["cat"], ["mug"], ["cat", "mug"]])
    params, optimizer, scaler = make_optimizer(model, 1e-3)
    assert scaler.is_enabled() == (DEVICE == "cuda")  # fp16 trains through the gradient scaler
    assert all(p.dtype == torch.float32 and p.device.type == DEVICE for p in params)
    before = [p.detach().clone() for p in params]
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=gen)

    def batches():
        yield pixels, [PROMPT] * 2, None

    # The scaler skips a step whose fp16 gradients overflowed (halving its scale from 65536):
    # step until one is taken, as training does.
    for _ in range(12):
        loss = optimizer_step(model, optimizer, scaler, params, batches(), 1, gen)
        assert np.isfinite(loss)
        changed = sum(not torch.equal(a, p.detach()) for a, p in zip(before, params))
        if changed:
            break
    assert changed == len(params), "every k/v copy and every new token row moved"


def test_sdxl_offload_keeps_objects_exact_and_frees_the_gpu(tmp_path):
    import torch

    from gen4gen.models.repaint.diffusion_repaint import DiffusionRepainter
    from tests.tiny.sdxl import tiny_sdxl_inpaint

    base = tiny_sdxl_inpaint(tmp_path / "sdxl", refiners={tmp_path / "refiner": 10})
    opts = dict(model=str(base), refiner=str(tmp_path / "refiner"), size=64, steps=4, device=DEVICE)
    composite, mask = _scene()
    args = ([composite], [mask], ["in a garden"], [0], [[(20, 30, 36, 50)]])
    (resident,) = DiffusionRepainter("sdxl", **opts).repaint_batch(*args)
    offloaded = DiffusionRepainter("sdxl", **opts, offload=True)
    (out,) = offloaded.repaint_batch(*args)
    np.testing.assert_array_equal(out[mask >= 1], composite[mask >= 1])
    # The same computation, only moved in and out: the background agrees too.
    assert np.abs(out.astype(np.int16) - resident.astype(np.int16)).mean() < 2.0
    if DEVICE == "cuda":  # offload hands every component back to the host after the call
        assert offloaded.base.unet.device.type == "cpu" and offloaded.refiner.unet.device.type == "cpu"


def test_peak_memory_of_a_tiny_repaint_is_reported_and_bounded(tmp_path):
    import torch

    from gen4gen.models.repaint.diffusion_repaint import DiffusionRepainter
    from tests.tiny.sdxl import tiny_sdxl_inpaint

    base = tiny_sdxl_inpaint(tmp_path / "sdxl", refiners={tmp_path / "refiner": 10})
    model = DiffusionRepainter("sdxl", model=str(base), refiner=str(tmp_path / "refiner"), size=64, steps=4,
                               device=DEVICE)
    composite, mask = _scene()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    resident = torch.cuda.memory_allocated()
    model.repaint_batch([composite] * 2, [mask] * 2, ["in a garden"] * 2, [0, 1], [[(20, 30, 36, 50)]] * 2)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    # The tiny pair is a few MB of fp16 weights; 64 px activations add little. A leak or an
    # fp32 copy per call would show here long before it shows at 1024 px.
    assert resident <= peak < 256 * 2**20
