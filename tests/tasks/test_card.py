"""The dataset card every published version carries: a Hugging Face card whose YAML
config `datasets.load_dataset` reads as is, and a body that says what is in the dataset,
how it was made and how to train on it."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import pytest
import yaml

from conftest import small_recipe


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    from gen4gen.infra.records import DatasetConfig
    from gen4gen.tasks.pipeline import run_local

    tmp = tmp_path_factory.mktemp("card")
    raw = small_recipe(tmp, samples=2, canvas=128) | {"name": "carded", "version": "v2", "license": "cc-by-4.0"}
    raw["concepts"][1]["category"] = "coffee mug"  # two words: the initializer is one token
    config = DatasetConfig.model_validate(raw)
    manifest, _, _ = run_local(config)
    return config, manifest, tmp / "out"


def split(card: str) -> tuple[dict, str]:
    assert card.startswith("---\n")
    head, body = card[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def test_the_card_is_published_and_listed_like_the_index_files(published):
    from gen4gen.infra.storage import sha256
    from gen4gen.tasks.publishing.verify import problems

    config, manifest, out = published
    card = (out / "README.md").read_bytes()
    copy = manifest.index["README.md"]
    assert manifest.files[copy] == sha256(card) and (out / copy).read_bytes() == card
    assert problems(str(out)) == []


def test_the_header_holds_config_features_size_task_and_license(published):
    config, manifest, out = published
    head, _ = split((out / "README.md").read_text())
    assert head["license"] == "cc-by-4.0" and head["task_categories"] == ["text-to-image"]
    assert head["size_categories"] == ["n<1K"] and head["configs"][0]["config_name"] == "default"
    assert [f["name"] for f in head["dataset_info"]["features"]][:2] == ["image", "text"]
    assert "splits" not in head["dataset_info"]  # datasets measures them itself


def test_datasets_loads_the_folder_through_the_cards_config(published):
    import datasets

    config, manifest, out = published
    ds = datasets.load_dataset(str(out))["train"]
    assert len(ds) == manifest.kept
    assert set(ds.column_names) == {"image", "text", "composition", "concepts", "tokens", "scene", "sample_id"}
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert sorted(ds["sample_id"]) == sorted(r["sample_id"] for r in rows)
    assert ds[0]["image"].size == (128, 128) and ds[0]["tokens"][0].startswith("<")


def test_the_body_counts_settings_hash_and_ready_commands(published):
    from gen4gen.tasks.publishing.card import dataset_card

    config, manifest, out = published
    card = (out / "README.md").read_text()
    _, body = split(card)
    for st in manifest.compositions:
        assert f"| {st.composition} |" in body
        assert f"| - | {st.kept} | {st.tried} | {st.rounds} | {st.yield_rate:.0%} | {st.dropped} | {st.failed} |" in body
    for code in {c for st in manifest.compositions for c in st.reasons}:
        assert f"`{code}`" in body
    assert manifest.config_sha256 in body and "repaint: backend `offline`" in body
    assert '--modifier_token="<chelsea>+<coffee>+<rocket>"' in body
    assert '--initializer_token="cat+mug+rocket"' in body and "--concepts_list=concepts_list.json" in body
    assert "gen4gen train --dataset . --out runs/carded-v2" in body
    assert dataset_card(config, manifest) == card.encode()  # the same from the manifest: pure


def test_option_secrets_never_reach_the_card(published):
    from gen4gen.tasks.publishing.card import dataset_card

    config, manifest, _ = published
    raw = config.model_dump() | {"stages": {"plan": {"backend": "openai", "options": {
        "api_key": "sk-live-123", "api_key_env": "OPENAI_API_KEY", "model": "m"}}}}
    text = dataset_card(type(config).model_validate(raw), manifest).decode()
    assert "sk-live-123" not in text and "OPENAI_API_KEY" in text


def card_command(card: str) -> list[str]:
    """The card's train_custom_diffusion.py command as the shell would split it."""
    from benchmarks.card_command import train_command

    return shlex.split(train_command(card).replace("\\\n", " "))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """CLIP's tokenizer (SD 1.5's), built offline from open_clip's BPE file."""
    from tests.tiny.tokenizer import clip_tokenizer

    return clip_tokenizer(tmp_path_factory.mktemp("clip"))


def test_the_diffusers_command_names_files_that_exist_and_one_token_initializers(published, tokenizer):
    config, manifest, out = published
    argv = card_command((out / "README.md").read_text())
    assert argv[:3] == ["accelerate", "launch", "$DIFFUSERS/examples/custom_diffusion/train_custom_diffusion.py"]
    opts = dict(a[2:].split("=", 1) for a in argv[3:])
    # Run from the dataset folder (as the card says): every path it names resolves there.
    entries = json.loads((out / opts["concepts_list"]).read_text())
    assert {"instance_prompt", "class_prompt", "instance_data_dir", "class_data_dir"} == set(entries[0])
    modifiers, initializers = opts["modifier_token"].split("+"), opts["initializer_token"].split("+")
    for entry in entries:
        assert any((out / entry["instance_data_dir"]).glob("*.png"))
        assert set(re.findall(r"<[^<>\s]+>", entry["instance_prompt"])) <= set(modifiers)
    assert modifiers == ["<chelsea>", "<coffee>", "<rocket>"] and len(initializers) == len(modifiers)
    # The script raises unless each initializer is one token of the base's (CLIP's) tokenizer.
    assert [len(tokenizer.tokenize(w)) for w in initializers] == [1] * len(initializers)
    assert not set(modifiers) & set(tokenizer.get_vocab())  # the script adds them: new to it


def test_initializer_words_are_one_clip_token_or_a_fallback(tokenizer):
    from gen4gen.tasks.publishing.card import FALLBACK_WORD, initializer_word

    words = {c: initializer_word(c) for c in ("teddy bear", "T-Shirt", "hairdryer", "coffee mug", "cat 2")}
    assert words == {"teddy bear": "bear", "T-Shirt": "shirt", "hairdryer": FALLBACK_WORD,
                     "coffee mug": "mug", "cat 2": "cat"}
    assert len(tokenizer.tokenize("hairdryer")) > 1  # why it falls back
    assert all(len(tokenizer.tokenize(w)) == 1 for w in words.values())


def test_a_version_with_nothing_kept_prints_no_training_command(published):
    from gen4gen.tasks.publishing.card import dataset_card

    config, manifest, _ = published
    empty = [st.model_copy(update={"kept": 0, "dropped": st.planned}) for st in manifest.compositions]
    text = dataset_card(config, empty).decode()
    assert "train_custom_diffusion.py\" \\" not in text and "nothing to train on" in text


@pytest.mark.slow
def test_the_cards_diffusers_command_trains_a_tiny_base_as_printed(tmp_path):
    """benchmarks/card_command.py's check: needs diffusers' examples (not in its wheel; no
    network in CI), so it runs only where GEN4GEN_DIFFUSERS_EXAMPLES names them."""
    from benchmarks.card_command import ENV, check, missing_requirements

    if not os.environ.get(ENV):
        pytest.skip(f"{ENV} does not name diffusers' examples folder (a clone at the installed version's tag)")
    assert not missing_requirements(), "install examples/custom_diffusion/requirements.txt"
    [(command, done, missing)] = check(Path(os.environ[ENV]), tmp_path)
    assert done.returncode == 0 and not missing, (command, (done.stdout + done.stderr)[-3000:])
