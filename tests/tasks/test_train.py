"""Training: prompts (pure), then Custom Diffusion on a tiny random SD 1.5 on CPU."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from gen4gen.tasks.training import train as T
from gen4gen.infra.records import Manifest

ROW = T.Row(file_name="cat-mug/images/a.png", sha256="0" * 64,
            text="a photo of a <chelsea> cat next to a <coffee> mug in a living room",
            composition="cat-mug", concepts=["chelsea", "coffee"], tokens=["<chelsea>", "<coffee>"],
            scene="in a living room")
CATEGORIES = {"<chelsea>": "cat", "<coffee>": "mug"}

EXPECTED = {
    # (composition_token, repeat_tokens, explicit_scene) -> prompt
    (False, False, False): "a photo of a <chelsea> cat next to a <coffee> mug in a living room",
    (True, False, False): "<cat-mug> a photo of a <chelsea> cat next to a <coffee> mug in a living room",
    (False, True, False): "a photo of a <chelsea> cat next to a <coffee> mug in a living room, <chelsea> cat, <coffee> mug",
    (False, False, True): "a photo of a <chelsea> cat next to a <coffee> mug. background: in a living room",
    (True, True, False): "<cat-mug> a photo of a <chelsea> cat next to a <coffee> mug in a living room, <chelsea> cat, <coffee> mug",
    (True, False, True): "<cat-mug> a photo of a <chelsea> cat next to a <coffee> mug. background: in a living room",
    (False, True, True): "a photo of a <chelsea> cat next to a <coffee> mug, <chelsea> cat, <coffee> mug. background: in a living room",
    (True, True, True): "<cat-mug> a photo of a <chelsea> cat next to a <coffee> mug, <chelsea> cat, <coffee> mug. background: in a living room",
}


@pytest.mark.parametrize("flags", sorted(EXPECTED))
def test_prompt_of_each_strategy_combination_is_exactly_as_documented(flags):
    strategies = T.Strategies(composition_token=flags[0], repeat_tokens=flags[1], explicit_scene=flags[2])
    assert T.training_prompt(ROW, CATEGORIES, strategies) == EXPECTED[flags]


def test_the_docstring_example_is_what_the_code_makes():
    doc = T.__doc__
    example = re.search(r"\n {4}(<cat-mug> .+)\n", doc).group(1)
    assert example == T.training_prompt(ROW, CATEGORIES, T.Strategies())


def test_a_caption_not_ending_with_its_scene_keeps_its_text_and_states_the_scene():
    row = ROW.model_copy(update={"text": "a <chelsea> cat sits by a <coffee> mug near a window"})
    prompt = T.training_prompt(row, CATEGORIES, T.Strategies(composition_token=False, repeat_tokens=False))
    assert prompt == "a <chelsea> cat sits by a <coffee> mug near a window. background: in a living room"
    assert T.prior_prompt("cat") == "a photo of a cat"


def test_default_steps_follow_the_paper():
    rows3 = [ROW, ROW.model_copy(update={"concepts": ["a", "b", "c"]})]
    ts = T.TrainingSet(dataset="x", version="v", concepts=[], rows=rows3)
    assert T.default_steps(ts) == 2000
    ts.rows.append(ROW.model_copy(update={"concepts": ["a", "b", "c", "d"]}))
    assert T.default_steps(ts) == 3000
    config = T.TrainConfig(dataset="d", out="o")
    assert (config.learning_rate, config.batch_size, config.steps) == (1e-5, 8, None)
    with pytest.raises(ValueError, match="micro_batch 3 must divide batch_size 8"):
        T.TrainConfig(dataset="d", out="o", micro_batch=3)


# --------------------------------------------------------------------------- tiny models


@pytest.fixture(scope="module")
def dataset(prefect_harness):
    from tests.tiny.dataset import published_small

    return published_small()


@pytest.fixture(scope="module")
def base():
    from tests.tiny.dataset import tiny_base

    return tiny_base()


def config(dataset, base, out, **kw) -> T.TrainConfig:
    options = dict(dataset=dataset, out=str(out), base_model=base, steps=2, batch_size=2, micro_batch=1,
                   resolution=64, checkpoint_every=2, learning_rate=1e-3)
    return T.TrainConfig(**(options | kw))


def test_reads_only_what_the_manifest_lists_and_checks_hashes(dataset, tmp_path):
    from gen4gen.infra.errors import BadInput
    from gen4gen.infra.storage import local_path, read_bytes, sha256

    ts = T.read_training_set(dataset)
    manifest = Manifest.model_validate_json(read_bytes(dataset + "/manifest.json"))
    assert ts.version == sha256(read_bytes(dataset + "/manifest.json"))
    assert len(ts.rows) == manifest.kept and all(r.file_name in manifest.files for r in ts.rows)
    assert {(c.token, c.category) for c in ts.concepts} == {("<chelsea>", "cat"), ("<coffee>", "mug"), ("<rocket>", "rocket")}
    assert {r.composition for r in T.read_training_set(dataset, ["cat-mug"]).rows} == {"cat-mug"}
    with pytest.raises(ValueError, match="nope"):
        T.read_training_set(dataset, ["nope"])
    # A changed image is refused by its hash, naming the file.
    copy = tmp_path / "copy"
    shutil.copytree(local_path(dataset), copy)
    (copy / ts.rows[0].file_name).write_bytes(b"not the image")
    with pytest.raises(BadInput, match=re.escape(ts.rows[0].file_name)):
        T._images([(str(copy / ts.rows[0].file_name), ts.rows[0].sha256)], 8)
    # The top-level metadata.jsonl is not trusted: the manifest's copy is read.
    (copy / "metadata.jsonl").write_text("")
    assert len(T.read_training_set(str(copy)).rows) == len(ts.rows)


def test_only_cross_attention_kv_and_the_new_embeddings_change(dataset, base, tmp_path):
    import torch

    from gen4gen.models.train.custom_diffusion import load_components

    parts = load_components({"model": base, "device": "cpu"})
    before = {name: {k: v.clone() for k, v in parts[name].state_dict().items()} for name in ("unet", "text_encoder", "vae")}
    original_kv = {k: v.clone() for k, v in before["unet"].items() if ".attn2.to_k." in k or ".attn2.to_v." in k}
    vocab = parts["text_encoder"].get_input_embeddings().weight.shape[0]
    holder = {}

    def keep(uri, info):
        holder["info"] = info

    result = T.train_model(config(dataset, base, tmp_path / "run"), on_checkpoint=keep, components=parts)
    unet, text_encoder = parts["unet"], parts["text_encoder"]
    trainable = {n for n, p in unet.named_parameters() if p.requires_grad}
    trainable |= {n for n, p in text_encoder.named_parameters() if p.requires_grad}
    trainable |= {n for n, p in parts["vae"].named_parameters() if p.requires_grad}
    assert trainable and all(re.search(r"attn2\.processor\.to_[kv]_custom_diffusion\.weight$", n) for n in trainable)
    assert len(trainable) == len(original_kv)
    for name in ("unet", "text_encoder", "vae"):
        now = parts[name].state_dict()
        for key, value in before[name].items():
            if name == "text_encoder" and key.endswith("token_embedding.weight"):
                assert torch.equal(now[key][:vocab], value), "an existing token row changed"
            else:
                assert torch.equal(now[key], value), f"{name}.{key} changed"
    changed = 0
    for key, value in original_kv.items():
        proc_key = key.replace(".to_k.", ".processor.to_k_custom_diffusion.").replace(".to_v.", ".processor.to_v_custom_diffusion.")
        changed += not torch.allclose(unet.state_dict()[proc_key], value)
    assert changed == len(original_kv), "every cross-attention k/v copy trained"
    assert result.step == 2 and len(result.checkpoints) == 1
    info = holder["info"]
    assert {(c.token, c.category) for c in info.concepts} == {("<chelsea>", "cat"), ("<coffee>", "mug"), ("<rocket>", "rocket")}
    assert {k: v.token for k, v in info.composition_tokens().items()} == {"cat-mug": "<cat-mug>", "cat-mug-rocket": "<cat-mug-rocket>"}
    assert set(info.embeddings()) == {"<chelsea>", "<coffee>", "<rocket>", "<cat-mug>", "<cat-mug-rocket>"}


def test_a_few_steps_on_a_fixed_batch_lower_the_loss(dataset, base):
    import torch

    from gen4gen.models.train.custom_diffusion import CustomDiffusion, load_components

    ts = T.read_training_set(dataset)
    parts = load_components({"model": base, "device": "cpu"})
    model = CustomDiffusion(**{k: parts[k] for k in ("tokenizer", "text_encoder", "vae", "unet", "scheduler")})
    tokens = T.learnt_tokens(ts, T.Strategies())
    model.add_tokens([t for _, t, _, _ in tokens], [w for _, _, w, _ in tokens])
    cats = {c.token: c.category for c in ts.concepts}
    pixels = T._images([(ts.dataset + "/" + r.file_name, r.sha256) for r in ts.rows[:2]], 64)
    prompts = [T.training_prompt(r, cats, T.Strategies()) for r in ts.rows[:2]]

    def fixed_loss():
        return model.loss(pixels, prompts, torch.Generator().manual_seed(7))

    optimizer = torch.optim.AdamW(model.trainable(), lr=1e-2)
    losses = []
    for _ in range(10):
        optimizer.zero_grad()
        loss = fixed_loss()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        last = float(fixed_loss())
    assert last < 0.9 * losses[0], losses
    assert sum(b < a for a, b in zip(losses, losses[1:])) >= 7, losses


def test_checkpoint_loads_into_a_plain_pipeline_with_diffusers_loaders(dataset, base, tmp_path):
    import numpy as np
    import safetensors.torch
    import torch
    from diffusers import StableDiffusionPipeline
    from diffusers.models.attention_processor import CustomDiffusionAttnProcessor

    from gen4gen.infra import checkpoint as ckpt

    result = T.train_model(config(dataset, base, tmp_path / "run", learning_rate=5e-2))
    folder = result.latest.removeprefix("file://")
    info = json.loads(open(f"{folder}/checkpoint.json").read())
    assert info["format"] == ckpt.FORMAT and info["step"] == 2 and info["dataset"] == dataset
    assert info["base_model"] == base and info["run"] == result.run and len(info["dataset_version"]) == 64

    def render(pipe, prompt):
        out = pipe(prompt, num_inference_steps=2, height=64, width=64, output_type="np",
                   generator=torch.Generator().manual_seed(0), guidance_scale=1.0)
        return out.images[0]

    plain = StableDiffusionPipeline.from_pretrained(base, safety_checker=None)
    before = render(plain, "a photo of a cat")
    # diffusers' own loaders, as a user calls them (see infra/checkpoint.py for _pipeline).
    plain.unet.load_attn_procs(folder, weight_name=ckpt.WEIGHTS, _pipeline=plain)
    procs = plain.unet.attn_processors
    assert all(isinstance(p, CustomDiffusionAttnProcessor) for p in procs.values())
    assert {k for k, p in procs.items() if p.train_kv} == {k for k in procs if ".attn2." in k}
    saved = safetensors.torch.load_file(f"{folder}/{ckpt.WEIGHTS}")
    for key, value in saved.items():
        if value.numel():
            assert torch.equal(plain.unet.state_dict()[key], value)
    learnt = [(c["token"], c["embedding"]) for c in info["concepts"]]
    learnt += [(c["token"], c["embedding"]) for c in info["strategies"]["composition_tokens"].values()]
    assert len(learnt) == 5
    for token, embedding in learnt:
        plain.load_textual_inversion(f"{folder}/{embedding}", token=token)
        token_id = plain.tokenizer.convert_tokens_to_ids(token)
        stored = safetensors.torch.load_file(f"{folder}/{embedding}")[token]
        assert torch.equal(plain.text_encoder.get_input_embeddings().weight[token_id], stored)
    after = render(plain, "a photo of a cat")
    assert np.abs(after - before).max() > 1e-3, "the trained attention weights change the output"
    with_tokens = render(plain, "<cat-mug> a photo of a <chelsea> cat")
    assert np.abs(with_tokens - after).max() > 1e-3
    # Our helper does the same through the same loaders.
    other = StableDiffusionPipeline.from_pretrained(base, safety_checker=None)
    ckpt.load_into(other, result.latest)
    assert np.allclose(render(other, "<cat-mug> a photo of a <chelsea> cat"), with_tokens, atol=1e-6)


def test_a_restarted_run_resumes_from_its_last_checkpoint_with_equal_optimizer_state(dataset, base, tmp_path):
    import torch

    from gen4gen.infra import checkpoint as ckpt

    whole = T.train_model(config(dataset, base, tmp_path / "whole", steps=4))
    first = T.train_model(config(dataset, base, tmp_path / "killed", steps=2))
    # A kill during the next write leaves a folder without checkpoint.json: ignored.
    partial = tmp_path / "killed" / "checkpoints" / "step-000003"
    partial.mkdir()
    (partial / ckpt.WEIGHTS).write_bytes(b"half")
    state_at_2 = torch.load(tmp_path / "killed/checkpoints/step-000002/state.pt", weights_only=False)
    resumed = T.train_model(config(dataset, base, tmp_path / "killed", steps=4))
    assert first.step == 2 and resumed.resumed_from == 2 and resumed.step == 4 and len(resumed.losses) == 2
    assert resumed.losses == pytest.approx(whole.losses[2:], rel=1e-5)
    a = torch.load(tmp_path / "whole/checkpoints/step-000004/state.pt", weights_only=False)
    b = torch.load(tmp_path / "killed/checkpoints/step-000004/state.pt", weights_only=False)
    assert a["step"] == b["step"] == 4
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        for key in pa:
            assert torch.allclose(pa[key], pb[key], rtol=1e-5, atol=1e-7), key
    assert state_at_2["optimizer"]["state"][0]["step"] == 2
    wa = (tmp_path / "whole/checkpoints/step-000004" / ckpt.WEIGHTS).read_bytes()
    import safetensors.torch

    sa, sb = safetensors.torch.load(wa), safetensors.torch.load_file(tmp_path / "killed/checkpoints/step-000004" / ckpt.WEIGHTS)
    assert all(torch.allclose(sa[k], sb[k], rtol=1e-5, atol=1e-7) for k in sa)
    # Nothing left to do: a rerun at the same step count trains nothing.
    again = T.train_model(config(dataset, base, tmp_path / "killed", steps=4))
    assert again.losses == [] and again.checkpoints == [] and again.latest.endswith("step-000004")
    # Another run's folder is refused, naming the out.
    with pytest.raises(ValueError, match="holds checkpoints of run"):
        T.train_model(config(dataset, base, tmp_path / "killed", steps=4, seed=1))


def test_dataset_and_checkpoints_on_s3(dataset, base, s3_server):
    """The same code on an S3 store (moto on 127.0.0.1): read, train, resume, load."""
    import torch
    from diffusers import StableDiffusionPipeline

    from gen4gen.infra.storage import join, read_bytes, write_bytes
    from gen4gen.infra import checkpoint as ckpt

    manifest = Manifest.model_validate_json(read_bytes(dataset + "/manifest.json"))
    remote = f"{s3_server}/datasets/small"
    for rel in [*manifest.files, "manifest.json"]:
        write_bytes(join(remote, rel), read_bytes(join(dataset, rel)))
    out = f"{s3_server}/runs/small"
    first = T.train_model(config(remote, base, out, steps=1, checkpoint_every=1))
    assert first.latest == f"{out}/checkpoints/step-000001"
    second = T.train_model(config(remote, base, out, steps=2, checkpoint_every=1))
    assert second.resumed_from == 1 and [s for s, _ in ckpt.finished(out)] == [1, 2]
    pipe = StableDiffusionPipeline.from_pretrained(base, safety_checker=None)
    info = ckpt.load_into(pipe, second.latest)
    assert info.dataset == remote and info.step == 2
    token_id = pipe.tokenizer.convert_tokens_to_ids("<chelsea>")
    assert torch.isfinite(pipe.text_encoder.get_input_embeddings().weight[token_id]).all()


def test_regularisation_images_join_each_step_with_their_class_prompt(dataset, base, tmp_path):
    import numpy as np
    from PIL import Image

    folder = tmp_path / "class-cat"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((80, 80, 3), 60 * (i + 1), np.uint8)).save(folder / f"{i}.png")
    result = T.train_model(config(dataset, base, tmp_path / "run", steps=1, regularisation={"chelsea": str(folder)}))
    info = json.loads(open(result.latest.removeprefix("file://") + "/checkpoint.json").read())
    assert info["params"]["regularisation"] == {"chelsea": str(folder)} and len(result.losses) == 1
    with pytest.raises(ValueError, match="regularisation: concept 'nobody'"):
        T.train_model(config(dataset, base, tmp_path / "other", steps=1, regularisation={"nobody": str(folder)}))
    (folder / "0.png").unlink()
    (folder / "1.png").unlink()
    from gen4gen.infra.errors import BadInput

    with pytest.raises(BadInput, match="holds no images"):
        T.train_model(config(dataset, base, tmp_path / "third", steps=1, regularisation={"chelsea": str(folder)}))
