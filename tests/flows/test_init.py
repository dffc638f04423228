"""`gen4gen init`: a recipe from a folder of concept photos, in a subprocess as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import REPO
from gen4gen.infra.config import load_config

GEN4GEN = [sys.executable, "-m", "gen4gen.flows.cli"]


def gen4gen(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*GEN4GEN, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def photos(folder: Path, n: int = 2, seed: int = 0) -> None:
    """Small JPEGs: a bright disc on a darker ground, so the offline segmenter finds an object."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64]
    for i in range(n):
        img = np.full((64, 64, 3), 40, np.uint8) + rng.integers(0, 20, (64, 64, 3), dtype=np.uint8)
        img[(yy - 32) ** 2 + (xx - 32) ** 2 < 18**2] = rng.integers(120, 255, 3, dtype=np.uint8)
        Image.fromarray(img).save(folder / f"{i:02d}.jpg", quality=90)


def dreambooth(root: Path) -> Path:
    data = root / "dataset"
    for i, subject in enumerate(["backpack", "dog2", "cat", "bear_plushie"]):
        photos(data / subject, seed=i)
    (data / "prompts_and_classes.txt").write_text(
        "Classes\nsubject_name,class\nbackpack,backpack\ndog2,dog\ncat,cat\nbear_plushie,stuffed animal\n\n"
        "Prompts\nObject Prompts\nprompt_list = [\n'a {0} {1} in the jungle'.format(unique_token, class_token),\n]\n"
    )
    return root


def init(photos_dir: Path, recipe: Path, *extra: str) -> subprocess.CompletedProcess:
    return gen4gen("init", str(photos_dir), "--out", str(recipe), *extra)


@pytest.mark.slow
def test_dreambooth_layout_gives_a_recipe_that_generates(tmp_path):
    root = dreambooth(tmp_path / "db")
    recipe = tmp_path / "recipes" / "recipe.yaml"
    result = init(root, recipe, "--canvas", "128", "--name", "mine")
    assert result.returncode == 0, result.stderr
    assert "dreambooth layout" in result.stderr and "Traceback" not in result.stderr
    config = load_config(str(recipe))
    assert config.name == "mine" and config.canvas == 128
    by_id = {c.id: c for c in config.concepts}
    assert set(by_id) == {"backpack", "dog2", "cat", "bear_plushie"}
    assert by_id["dog2"].category == "dog" and by_id["bear_plushie"].category == "stuffed animal"
    assert by_id["dog2"].token == "<dog2>"
    raw = yaml.safe_load(recipe.read_text())
    assert raw["concepts"][0]["photos"][0] == "../db/dataset/backpack/00.jpg"  # relative to the recipe
    assert all(2 <= len(c.concepts) <= 3 for c in config.compositions)
    assert {cid for c in config.compositions for cid in c.concepts} == set(by_id)  # every concept used
    out = tmp_path / "out"
    gen = gen4gen("generate", str(recipe), "--out", str(out), "--samples", "1", timeout=300)
    assert gen.returncode == 0, gen.stderr[-3000:]
    assert (out / "manifest.json").is_file()


def test_customconcept101_json_and_csv(tmp_path):
    root = tmp_path / "cc101"
    for i, name in enumerate(["cat", "wooden_pot", "Cat"]):  # 'Cat' and 'cat': ids unique ignoring case
        photos(root / "benchmark_dataset" / name, n=1, seed=i)
    entries = [
        {"instance_prompt": "photo of a <new1> cat", "class_prompt": "cat", "instance_data_dir": "./benchmark_dataset/cat"},
        {"class_prompt": "wooden pot", "instance_data_dir": "./benchmark_dataset/wooden_pot", "class_data_dir": "x"},
        {"class_prompt": "cat", "instance_data_dir": "benchmark_dataset/Cat"},
    ]
    (root / "dataset.json").write_text(json.dumps(entries))
    result = init(root, tmp_path / "a.yaml")
    assert result.returncode == 0, result.stderr
    config = load_config(str(tmp_path / "a.yaml"))
    assert [(c.id, c.category, c.token) for c in config.concepts] == [
        ("cat", "cat", "<cat>"), ("wooden_pot", "wooden pot", "<wooden_pot>"), ("Cat-2", "cat", "<Cat-2>")]
    (root / "dataset.json").unlink()
    (root / "concepts.csv").write_text("folder,category\nbenchmark_dataset/cat,cat\nbenchmark_dataset/wooden_pot,pot\n")
    result = init(root, tmp_path / "b.yaml")
    assert result.returncode == 0, result.stderr
    config = load_config(str(tmp_path / "b.yaml"))
    assert [c.category for c in config.concepts] == ["cat", "pot"]
    assert [c.concepts for c in config.compositions] == [["cat", "wooden_pot"]]


def test_plain_category_concept_folders(tmp_path):
    root = tmp_path / "mine"
    for i, (cat, concept) in enumerate([("dog", "rex"), ("dog", "fido"), ("mug", "blue mug"), ("plant", "fern")]):
        photos(root / cat / concept, n=1, seed=i)
    result = init(root, tmp_path / "r.yaml", "--compositions", "5")
    assert result.returncode == 0, result.stderr
    config = load_config(str(tmp_path / "r.yaml"))
    assert config.name == "mine"
    assert {(c.id, c.category) for c in config.concepts} == {("fido", "dog"), ("rex", "dog"), ("blue-mug", "mug"), ("fern", "plant")}
    assert len(config.compositions) == 5
    again = init(root, tmp_path / "r.yaml", "--compositions", "5", "--force")
    assert again.returncode == 0 and again.stdout == result.stdout  # deterministic


@pytest.mark.parametrize("case, expected", [
    ("missing", "not found"),
    ("empty", "no concepts found"),
    ("no_classes", "prompts_and_classes.txt: no 'Classes' section"),
    ("bad_line", "prompts_and_classes.txt: line 3"),
    ("missing_subject", "which is not a folder"),
    ("bad_json", "dataset.json: not valid JSON"),
    ("outside", "lies outside"),
    ("bad_photo", "01.jpg: not a readable image"),
    ("one_concept", "1 concept(s) found"),
    ("bad_csv", "concepts.csv: line 2"),
    ("loose_photo", "a photo directly in the category folder"),
])
def test_refusals_name_the_file_and_exit_2(tmp_path, case, expected):
    root = tmp_path / "photos"
    if case != "missing":
        root.mkdir()
    if case in ("no_classes", "bad_line", "missing_subject"):
        photos(root / "cat", n=1)
        body = {"no_classes": "Prompts\n", "bad_line": "Classes\nsubject_name,class\ncat\n",
                "missing_subject": "Classes\ncat,cat\ndog,dog\n"}[case]
        (root / "prompts_and_classes.txt").write_text(body)
    elif case in ("bad_json", "outside"):
        photos(tmp_path / "elsewhere", n=1)
        text = "[{" if case == "bad_json" else json.dumps([{"instance_data_dir": "../elsewhere", "class_prompt": "x"}])
        (root / "dataset.json").write_text(text)
    elif case == "bad_photo":
        photos(root / "dog" / "rex", n=1)
        photos(root / "cat" / "tom", n=1)
        (root / "cat" / "tom" / "01.jpg").write_bytes(b"not a jpeg")
    elif case == "one_concept":
        photos(root / "dog" / "rex", n=1)
    elif case == "bad_csv":
        (root / "concepts.csv").write_text("folder,category\nonly-a-folder\n")
    elif case == "loose_photo":
        photos(root / "dog", n=1)
    result = init(root, tmp_path / "r.yaml")
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "r.yaml").exists() and not (tmp_path / ".r.yaml.tmp").exists()


def test_existing_recipe_is_kept_without_force(tmp_path):
    root = dreambooth(tmp_path / "db")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("mine\n")
    result = init(root, recipe)
    assert result.returncode == 2 and "exists already" in result.stderr and recipe.read_text() == "mine\n"
    assert init(root, recipe, "--name", "../x", "--force").returncode == 2  # a bad --name


def test_associate_offline_is_deterministic_and_skips_taken(tmp_path):
    from gen4gen.flows.cli import main
    from gen4gen.infra.records import DatasetConfig

    root = dreambooth(tmp_path / "db")
    recipe = tmp_path / "r.yaml"
    assert init(root, recipe).returncode == 0
    first = tmp_path / "p1.yaml"
    assert main(["associate", str(recipe), "--max", "4", "--out", str(first)]) == 0
    assert main(["associate", str(recipe), "--max", "4", "--out", str(tmp_path / "p2.yaml")]) == 0
    assert first.read_text() == (tmp_path / "p2.yaml").read_text()
    assert first.read_text().startswith("# Compositions proposed by the offline co-occurrence table")
    raw = yaml.safe_load(recipe.read_text())
    proposed = yaml.safe_load(first.read_text())["compositions"]
    taken = {frozenset(c["concepts"]) for c in raw["compositions"]}
    assert taken.isdisjoint(frozenset(c["concepts"]) for c in proposed)
    DatasetConfig.model_validate(raw | {"compositions": raw["compositions"] + proposed})


def test_background_photos_beside_the_concepts_or_from_backgrounds_dir(tmp_path):
    root = tmp_path / "photos"
    photos(root / "dog" / "rex", seed=1)
    photos(root / "cup" / "blue", seed=2)
    photos(root / "backgrounds" / "living_room", n=1, seed=3)
    photos(root / "backgrounds" / "garden", n=2, seed=4)
    recipe = tmp_path / "recipe.yaml"
    done = gen4gen("init", str(root), "--out", str(recipe))
    assert done.returncode == 0, done.stderr
    config = load_config(str(recipe))
    # The backgrounds folder is not a category of concepts; its folders are scenes.
    assert sorted(c.category for c in config.concepts) == ["cup", "dog"]
    assert {b.scene: len(b.photos) for b in config.backgrounds} == {"in a garden": 2, "in the living room": 1}
    assert "photos/backgrounds/garden/00.jpg" in recipe.read_text()  # relative to the recipe
    other = tmp_path / "elsewhere"
    photos(other / "beach", n=1, seed=5)
    done = gen4gen("init", str(root), "--out", str(recipe), "--force", "--backgrounds", str(other))
    assert done.returncode == 0, done.stderr
    assert [b.scene for b in load_config(str(recipe)).backgrounds] == ["on a beach"]
    empty = tmp_path / "empty"
    empty.mkdir()
    done = gen4gen("init", str(root), "--out", str(recipe), "--force", "--backgrounds", str(empty))
    assert done.returncode == 2 and "no scene folders" in done.stderr
