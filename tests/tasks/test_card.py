"""The dataset card every published version carries: a Hugging Face card whose YAML
config `datasets.load_dataset` reads as is, and a body that says what is in the dataset,
how it was made and how to train on it."""

from __future__ import annotations

import json

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
    from gen4gen.tasks.verify import problems

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
    from gen4gen.tasks.card import dataset_card

    config, manifest, out = published
    card = (out / "README.md").read_text()
    _, body = split(card)
    for st in manifest.compositions:
        assert f"| {st.composition} |" in body and f"| {st.planned} | {st.kept} | {st.dropped} | {st.failed} |" in body
    for code in {c for st in manifest.compositions for c in st.reasons}:
        assert f"`{code}`" in body
    assert manifest.config_sha256 in body and "repaint: backend `offline`" in body
    assert '--modifier_token="<chelsea>+<coffee>+<rocket>"' in body
    assert '--initializer_token="cat+mug+rocket"' in body and "--concepts_list=concepts_list.json" in body
    assert "gen4gen train --dataset . --out runs/carded-v2" in body
    assert dataset_card(config, manifest) == card.encode()  # the same from the manifest: pure


def test_option_secrets_never_reach_the_card(published):
    from gen4gen.tasks.card import dataset_card

    config, manifest, _ = published
    raw = config.model_dump() | {"stages": {"plan": {"backend": "openai", "options": {
        "api_key": "sk-live-123", "api_key_env": "OPENAI_API_KEY", "model": "m"}}}}
    text = dataset_card(type(config).model_validate(raw), manifest).decode()
    assert "sk-live-123" not in text and "OPENAI_API_KEY" in text
