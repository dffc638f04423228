"""Class: deleting or overwriting what is not ours. A non-empty --out that is no dataset,
another recipe's dataset, `report --out` inside a dataset, and deletion of anything an
earlier manifest of this dataset did not list."""

from __future__ import annotations

import json

import pytest
import yaml

from gen4gen.infra.records import DatasetConfig
from gen4gen.tasks.publishing import ownership
from gen4gen.tasks.publishing.ownership import OwnershipError, claim
from gen4gen.tasks.reader import read_manifest
from gen4gen.tasks.publishing.verify import problems
from hostile_kit import dataset, gen4gen, publish_without_prefect, published, tiny_recipe  # noqa: F401


def test_a_folder_of_the_users_files_is_refused_and_left_alone(tmp_path):
    out = tmp_path / "photos"
    (out / "cat-mug" / "images").mkdir(parents=True)
    mine = out / "cat-mug" / "images" / "holiday.png"
    mine.write_bytes(b"mine")
    (out / "notes.txt").write_text("mine too")
    config = DatasetConfig.model_validate(tiny_recipe(tmp_path, out))
    with pytest.raises(OwnershipError, match="not a dataset of this project.*--force") as err:
        claim(str(out), config, "r.yaml")
    assert "cat-mug" in str(err.value) and "notes.txt" in str(err.value)
    assert mine.read_bytes() == b"mine" and not (out / ".gen4gen").exists()


def test_an_empty_new_or_own_folder_is_claimed(tmp_path):
    config = DatasetConfig.model_validate(tiny_recipe(tmp_path))
    for out in (tmp_path / "new", tmp_path / "empty"):
        (tmp_path / "empty").mkdir(exist_ok=True)
        (tmp_path / "empty" / ".DS_Store").write_bytes(b"")
        claim(str(out), config, "r.yaml")
        assert json.loads((out / ownership.OWNER).read_text())["name"] == "small"
        # a killed first run left stage outputs but no manifest: still ours
        (out / "cat-mug" / "composite").mkdir(parents=True, exist_ok=True)
        claim(str(out), config, "r.yaml")


def test_a_second_recipe_into_the_same_out_names_both(dataset, tmp_path):
    raw = tiny_recipe(tmp_path, dataset)
    raw["name"] = "other"
    with pytest.raises(OwnershipError, match="holds dataset 'small'.*b.yaml makes dataset 'other'"):
        claim(str(dataset), DatasetConfig.model_validate(raw), "b.yaml")
    claim(str(dataset), DatasetConfig.model_validate(raw), "b.yaml", force=True)  # asked for


def test_publishing_deletes_only_what_an_earlier_manifest_listed(tmp_path):
    out = tmp_path / "ds"
    raw = tiny_recipe(tmp_path, out)
    first = publish_without_prefect(raw)
    old_images = {rel for st in first.compositions for rel in st.images}
    comp = first.compositions[0].composition
    users = out / comp / "images" / "users-own.png"
    users.write_bytes(b"not the factory's")
    raw["seed"] = 7  # a changed recipe: new sample ids, the old images are stale
    second = publish_without_prefect(raw)
    assert not any((out / rel).exists() for rel in old_images - set(second.files))
    assert users.read_bytes() == b"not the factory's"  # never listed by us: never deleted
    assert "users-own.png" in " ".join(problems(str(out)))  # and verify says it is extra


def test_an_edited_ledger_cannot_make_publishing_delete_elsewhere(tmp_path):
    out = tmp_path / "ds"
    raw = tiny_recipe(tmp_path, out)
    publish_without_prefect(raw)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    recipe_copy = out / "cat-mug" / "keep.yaml"
    recipe_copy.write_text("x")
    ledger = out / ownership.LEDGER
    ledger.write_text(json.dumps({"listed": ["../victim.txt", "/etc/hostname", "cat-mug/keep.yaml"], "intended": []}))
    publish_without_prefect(raw)
    assert victim.read_text() == "keep me" and recipe_copy.exists()


def test_report_out_inside_a_dataset_is_refused(dataset, tmp_path):
    before = (dataset / "manifest.json").read_bytes()
    for target in (dataset / "manifest.json", dataset / "cat-mug" / "r.html"):
        result = gen4gen("report", str(dataset), "--out", str(target), timeout=60)
        assert result.returncode == 2 and "inside the dataset" in result.stderr, result.stderr
    assert (dataset / "manifest.json").read_bytes() == before
    with pytest.raises(OwnershipError, match="inside the dataset"):
        ownership.check_report_out(str(tmp_path / "ds" / "sub" / "deeper.html"), [])


def test_report_out_over_a_file_that_is_no_report_is_refused(dataset, tmp_path):
    thesis = tmp_path / "thesis.html"
    thesis.write_text("<html>three years of work</html>")
    with pytest.raises(OwnershipError, match="not a report page.*--force"):
        ownership.check_report_out(str(thesis), [str(dataset)])
    page = tmp_path / "report.html"
    page.write_text('<!doctype html><html><head><meta charset=utf-8><meta name=generator content="gen4gen report">')
    ownership.check_report_out(str(page), [str(dataset)])  # our own page: rewritten


def test_generate_cli_refuses_a_foreign_folder_before_any_work(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("x")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(tmp_path, out)))
    result = gen4gen("generate", str(recipe), timeout=90)
    assert result.returncode == 2 and "not a dataset of this project" in result.stderr, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]
