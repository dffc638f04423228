"""Class: recipe errors found late. Every check that can be made from the recipe and the
command line runs before Prefect starts: exit 2, naming the file, field and value."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from gen4gen.infra.records import DatasetConfig
from hostile_kit import gen4gen, tiny_recipe


def _case(name):
    def edit(raw):
        if name == "empty-scene":
            raw["compositions"][0]["scenes"] = ["  "]
        elif name == "misspelt-option":
            raw["stages"] = {"repaint": {"backend": "offline", "options": {"blurr": 2}}}
        elif name == "case-tokens":
            raw["concepts"][1]["token"] = raw["concepts"][0]["token"].upper()
        elif name == "case-compositions":
            raw["compositions"].append(dict(raw["compositions"][0], id="Cat-Mug"))
        elif name == "infinite-delay":
            raw["run"]["retry_delay_seconds"] = float("inf")
        return raw
    return edit


CASES = {
    "empty-scene": ([], "compositions.0.scenes"),
    "misspelt-option": ([], "stages.repaint.options"),
    "case-tokens": ([], "differs only in case"),
    "case-compositions": ([], "used twice (ids are compared ignoring case)"),
    "infinite-delay": ([], "retry_delay_seconds"),
    "workers-0": (["--workers", "0"], "--workers 0"),
    "samples-0": (["--samples", "0"], "--samples 0"),
    "out-s3-no-bucket": (["--out", "s3://"], "needs a bucket"),
    "out-unknown-scheme": (["--out", "ftp://host/x"], "accepted: file, s3"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_is_refused_with_exit_2_before_any_work(tmp_path, name):
    args, words = CASES[name]
    raw = _case(name)(tiny_recipe(tmp_path, tmp_path / "out"))
    recipe = tmp_path / f"{name}.yaml"
    recipe.write_text(yaml.safe_dump(raw) if name != "infinite-delay" else yaml.safe_dump(raw).replace("inf", ".inf"))
    result = gen4gen("generate", str(recipe), *args, timeout=90)
    assert result.returncode == 2, result.stderr[-2000:]
    assert words in result.stderr, result.stderr
    assert f"{name}.yaml" in result.stderr or args, result.stderr  # a flag's error names the flag
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_circular_alias_recipe_exits_2(tmp_path):
    recipe = tmp_path / "loop.yaml"
    recipe.write_text("name: &n [*n]\n")
    result = gen4gen("generate", str(recipe), timeout=60)
    assert result.returncode == 2 and "loop.yaml" in result.stderr and "circular" in result.stderr


def test_tokens_that_clip_would_merge_are_refused(tmp_path):
    raw = tiny_recipe(tmp_path)
    raw["concepts"][1]["token"] = "<Chelsea>"
    with pytest.raises(ValidationError, match="'<Chelsea>' is already used by 'chelsea'"):
        DatasetConfig.model_validate(raw)
