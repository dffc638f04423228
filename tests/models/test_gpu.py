"""GPU checks: the real backends on CUDA in fp16, on the tiny models (skipped without CUDA).

On CPU the same code runs in fp32 (the other test modules); these check what only a GPU
shows: the fp16 placement the backends choose by themselves, and that the objects stay
bit-exact after an fp16 VAE and refiner.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def test_backends_choose_cuda_and_fp16_by_themselves():
    import torch

    from gen4gen.models.hf import placement

    assert placement({}) == ("cuda", torch.float16)
    assert placement({"device": "cpu"}) == ("cpu", torch.float32)


def test_sdxl_repaint_on_cuda_fp16_keeps_objects_bit_exact(tmp_path):
    from gen4gen.models.diffusion_repaint import DiffusionRepainter
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

    from gen4gen.models.sam import SamSegmenter
    from tests.tiny.sam import tiny_sam

    options = tiny_sam(tmp_path / "sam")
    photo = skimage.data.coffee()
    pair = (photo, None)
    on_cpu = SamSegmenter(**{**options, "device": "cpu"}).segment_batch([pair], categories=["mug"])[0]
    on_gpu = SamSegmenter(**{**options, "device": "cuda", "dtype": "float32"}).segment_batch([pair], categories=["mug"])[0]
    assert np.abs(on_cpu - on_gpu).mean() < 0.01
