"""Class: a text that teaches a token from images without its object. A composition's scene
goes into every caption, so a scene naming another concept's token (or a token-like word no
concept has) is refused before any work, exit 2, naming the composition and the token; the
evaluation prompt sets refuse the same through the same check (infra/records.py)."""

from __future__ import annotations

import pytest
import yaml

from gen4gen.infra.config import ConfigError, validate
from hostile_kit import gen4gen, small_recipe


def recipe(tmp_path, scenes: list[str]) -> dict:
    raw = small_recipe(tmp_path, samples=1, canvas=128)
    raw["compositions"][0]["scenes"] = scenes  # cat-mug: chelsea and coffee, not the rocket
    return raw


@pytest.mark.parametrize("scene, words", [
    ("next to a <rocket> rocket", "names '<rocket>' of concept 'rocket', which is not in its concepts"),
    ("a launch pad with a <ROCKET>", "names '<ROCKET>' of concept 'rocket'"),  # CLIP lower-cases
    ("in a garden with <somebody>", "names '<somebody>', which is no concept's token"),
    ("a <chelsea> sofa beside <rocket>", "'<rocket>'"),
])
def test_a_scene_naming_a_token_not_of_its_composition_is_refused(tmp_path, scene, words):
    with pytest.raises(ConfigError) as err:
        validate(recipe(tmp_path, ["a kitchen", scene]), "recipe.yaml")
    text = str(err.value)
    assert "composition 'cat-mug'" in text and "scenes[1]" in text and words in text, text


@pytest.mark.parametrize("scene", ["a kitchen at dusk", "a shelf beside a <chelsea> cat", "a sign saying 3 < 4 > 2"])
def test_scenes_with_own_tokens_or_no_token_are_fine(tmp_path, scene):
    validate(recipe(tmp_path, [scene]), "recipe.yaml")


def test_the_cli_exits_2_before_any_work_naming_composition_and_token(tmp_path):
    raw = recipe(tmp_path, ["next to a <rocket> rocket"])
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = gen4gen("generate", str(path), "--out", str(tmp_path / "out"), timeout=60)
    assert result.returncode == 2, result.stderr
    assert "cat-mug" in result.stderr and "<rocket>" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_prompt_sets_refuse_the_same_through_the_shared_check():
    from gen4gen.tasks.evaluation.prompts import PromptSet

    concepts = [{"id": c, "category": "cat", "token": f"<{c}>", "photos": ["x.png"]} for c in ("a", "b", "c")]
    base = {"name": "p", "concepts": concepts}
    bad = {**base, "prompts": [{"composition": "ab", "concepts": ["a", "b"], "prompt": "<a> and <b> by <c>"}]}
    with pytest.raises(ValueError, match="names '<c>' of concept 'c', which is not in its concepts"):
        PromptSet.model_validate(bad)
    unknown = {**base, "prompts": [{"composition": "ab", "concepts": ["a", "b"], "prompt": "<a> <b> <zz>"}]}
    with pytest.raises(ValueError, match="names '<zz>', which is no concept's token"):
        PromptSet.model_validate(unknown)
