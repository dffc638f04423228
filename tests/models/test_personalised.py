"""The personalised pipeline: a checkpoint's Custom Diffusion k/v weights and token
embeddings really are in the model (diffusers' own load_attn_procs leaves the base UNet
unchanged in 0.42, huggingface/diffusers#9320), images are seeded per image, and a
checkpoint made for another base model is refused."""

from __future__ import annotations

import numpy as np
import pytest

from models.personalised import PersonalisedPipeline
from tasks.checkpoint import read_checkpoint

PROMPT = "a <chelsea> cat and a <coffee> mug"


def _pipe(tiny_run, step=100):
    folder = tiny_run["checkpoints"][step]
    info = read_checkpoint(str(folder))
    return PersonalisedPipeline(str(tiny_run["base"]), str(folder), {c.token: c.embedding for c in info.concepts},
                                device="cpu")


def _diff(a, b) -> int:
    return int(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max())


def test_checkpoint_weights_and_tokens_are_loaded(tiny_run):
    import torch
    from diffusers.models.attention_processor import CustomDiffusionAttnProcessor
    from safetensors.torch import load_file

    pipe = _pipe(tiny_run)
    saved = load_file(str(tiny_run["checkpoints"][100] / "pytorch_custom_diffusion_weights.safetensors"))
    procs = pipe.pipe.unet.attn_processors
    custom = {k for k, v in procs.items() if isinstance(v, CustomDiffusionAttnProcessor)}
    assert custom == {k.rsplit(".", 2)[0] for k in saved} and all(k.endswith("attn2.processor") for k in custom)
    for key, value in saved.items():
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
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file, save_file

    folder = tiny_run["checkpoints"][100]
    state = load_file(str(folder / "pytorch_custom_diffusion_weights.safetensors"))
    key = next(iter(state))
    bad = tmp_path / "bad"
    bad.mkdir()
    save_file({key.replace("down_blocks.1", "down_blocks.7"): state[key]}, str(bad / "pytorch_custom_diffusion_weights.safetensors"))
    with pytest.raises(ValueError, match="attention layers the base model lacks"):
        PersonalisedPipeline(str(tiny_run["base"]), str(bad), {}, device="cpu")
    k = next(k for k in state if "to_k" in k)
    save_file({k: state[k][:, :8].contiguous()}, str(bad / "pytorch_custom_diffusion_weights.safetensors"))
    with pytest.raises(ValueError, match="pytorch_custom_diffusion_weights.safetensors: layer"):
        PersonalisedPipeline(str(tiny_run["base"]), str(bad), {}, device="cpu")
    assert StableDiffusionPipeline  # the base model itself is untouched by a refused checkpoint
