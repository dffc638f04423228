"""Tier 3: the `gen4gen` command as a user runs it, in a subprocess."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from conftest import DEMO, REPO, small_recipe
from gen4gen.tasks.publishing.publish import read_manifest

GEN4GEN = [sys.executable, "-m", "gen4gen.flows.cli"]


def gen4gen(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*GEN4GEN, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_demo_recipe_small_run_prints_a_summary_and_publishes(demo_published, tmp_path):
    import shutil

    published, result = demo_published  # `gen4gen generate configs/demo.yaml --out ... --samples 1`
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == f"file://{published}"
    demo = yaml.safe_load(DEMO.read_text())
    for comp in demo["compositions"]:
        assert comp["id"] in result.stderr  # one summary row per composition
    assert "kept of 5" in result.stderr and "the card's Parquet config" in result.stderr
    manifest = read_manifest(str(published))
    assert manifest.planned == 5 and manifest.kept + manifest.dropped + manifest.failed == 5
    assert manifest.uri == f"file://{published}"
    verified = gen4gen("verify", str(published), timeout=60)
    assert verified.returncode == 0 and verified.stdout.strip().endswith("whole"), verified.stderr
    out = tmp_path / "demo"  # the shared one is only read: damage a copy
    shutil.copytree(published, out, symlinks=True)
    (out / "metadata.jsonl").unlink()
    (out / "cat-mug" / "images" / "intruder.png").write_bytes(b"x")
    damaged = gen4gen("verify", str(out), timeout=60)
    assert damaged.returncode == 1 and "intruder.png" in damaged.stderr and "metadata.jsonl: not found" in damaged.stderr


def test_an_invalid_recipe_exits_2_naming_the_field(tmp_path):
    raw = small_recipe(tmp_path)
    raw["compositions"][0]["concepts"] = ["chelsea", "nobody"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    result = gen4gen("generate", str(bad), timeout=60)
    assert result.returncode == 2
    assert "bad.yaml" in result.stderr and "unknown concept ids ['nobody']" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_recipe_exits_2(tmp_path):
    result = gen4gen("generate", str(tmp_path / "nope.yaml"), timeout=60)
    assert result.returncode == 2 and "nope.yaml: not found" in result.stderr


def test_relative_photo_paths_are_relative_to_the_recipe(tmp_path):
    from gen4gen.infra.config import load_config

    folder = tmp_path / "recipes"
    folder.mkdir()
    raw = small_recipe(tmp_path)
    raw["concepts"][0]["photos"] = ["photos/cat.png"]
    (folder / "r.yaml").write_text(yaml.safe_dump(raw))
    config = load_config(str(folder / "r.yaml"))
    assert config.concept("chelsea").photos == [f"file://{folder}/photos/cat.png"]
    assert config.concept("coffee").photos == ["pkgdata://skimage/data/coffee.png"]


def test_a_relative_isnet_weights_path_is_relative_to_the_recipe(tmp_path, monkeypatch):
    """Like the photos: the recipe names its own ONNX beside it and runs from any folder."""
    from gen4gen.infra.config import load_config
    from gen4gen.models.segment.weights import file_sha256, resolve_config
    from tests.tiny.isnet import tiny_isnet

    folder = tmp_path / "recipes"
    onnx = tiny_isnet(folder / "models" / "isnet.onnx")
    raw = small_recipe(tmp_path)
    raw["stages"] = {"segment": {"backend": "isnet", "options": {"weights": "models/isnet.onnx"}}}
    (folder / "r.yaml").write_text(yaml.safe_dump(raw))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config("../recipes/r.yaml")
    assert config.stages.segment.options["weights"] == str(onnx)
    resolved, _ = resolve_config(config)
    assert resolved.stages.segment.options["weights_sha256"] == file_sha256(onnx)
    # An absolute path and one from the home folder are the user's as given.
    for given in (str(onnx), "~/isnet.onnx"):
        raw["stages"]["segment"]["options"]["weights"] = given
        (folder / "r.yaml").write_text(yaml.safe_dump(raw))
        assert load_config(str(folder / "r.yaml")).stages.segment.options["weights"] == given
