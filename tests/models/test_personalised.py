"""The personalised pipeline: a checkpoint's Custom Diffusion k/v weights and token
embeddings really are in the model (diffusers' own load_attn_procs leaves the base UNet
unchanged in 0.42, huggingface/diffusers#9320), images are seeded per image, and a
checkpoint made for another base model is refused."""

from __future__ import annotations

import numpy as np
import pytest

from gen4gen.models.train.personalised import PersonalisedPipeline

PROMPT = "a <chelsea> cat and a <coffee> mug"


def _pipe(tiny_run, step=100):
    return PersonalisedPipeline(str(tiny_run["base"]), str(tiny_run["checkpoints"][step]), device="cpu")


def _diff(a, b) -> int:
    return int(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max())


def test_checkpoint_weights_and_tokens_are_loaded(tiny_run):
    import torch
    from diffusers.models.attention_processor import CustomDiffusionAttnProcessor
    from safetensors.torch import load_file

    pipe = _pipe(tiny_run)
    saved = load_file(str(tiny_run["checkpoints"][100] / "pytorch_custom_diffusion_weights.safetensors"))
    procs = pipe.pipe.unet.attn_processors
    custom = {k for k, v in procs.items() if isinstance(v, CustomDiffusionAttnProcessor) and v.train_kv}
    assert custom == {k.rsplit(".", 2)[0] for k, v in saved.items() if v.numel()}
    assert custom and all(k.endswith("attn2.processor") for k in custom)
    for key, value in ((k, v) for k, v in saved.items() if v.numel()):
        layer, name = key.rsplit(".", 2)[0], key.rsplit(".", 2)[1]
        assert torch.equal(getattr(procs[layer], name).weight, value)
    emb = load_file(str(tiny_run["checkpoints"][100] / "embeddings" / "chelsea.safetensors"))["<chelsea>"]
    tok = pipe.pipe.tokenizer
    assert tok.tokenize(PROMPT)[1] == "<chelsea>"
    row = pipe.pipe.text_encoder.get_input_embeddings().weight[tok.convert_tokens_to_ids("<chelsea>")]
    assert torch.allclose(row, emb)


def test_images_are_seeded_per_image_and_personalised(tiny_run):
    pipe = _pipe(tiny_run)
    batch = pipe.generate(PROMPT, [3, 4], steps=2, guidance=6.0, size=64)
    alone = pipe.generate(PROMPT, [4], steps=2, guidance=6.0, size=64)
    assert batch[0].size == (64, 64) and pipe.resolution == 64
    # an image's noise is its seed's, not its batch's (batched kernels round differently)
    assert _diff(batch[1], alone[0]) <= 2
    assert _diff(batch[0], batch[1]) > 20
    other = _pipe(tiny_run, 200).generate(PROMPT, [4], steps=2, guidance=6.0, size=64)
    assert _diff(other[0], alone[0]) > 20  # another checkpoint, another image


def test_checkpoint_for_another_base_model_is_refused(tiny_run, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    bad = tmp_path / "checkpoints" / "step-000100"
    shutil.copytree(tiny_run["checkpoints"][100], bad)
    weights = bad / "pytorch_custom_diffusion_weights.safetensors"
    state = load_file(str(weights))
    k = next(k for k in state if "to_k" in k)
    save_file({**state, k: state[k][:, :8].contiguous()}, str(weights))  # a narrower text encoder's
    with pytest.raises(ValueError, match=f"checkpoint {bad} does not fit base model {tiny_run['base']}"):
        PersonalisedPipeline(str(tiny_run["base"]), str(bad), device="cpu")
