"""Prompt sets: the shipped demo set, and a clear error for each way a set can be wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gen4gen.tasks.evaluation.prompts import PromptSetError, check_against, load_prompt_set

REPO = Path(__file__).resolve().parents[2]
DEMO_SET = REPO / "configs" / "eval" / "demo.yaml"


def test_demo_set_has_the_papers_shape():
    pset = load_prompt_set(str(DEMO_SET))
    demo = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    # one held-out prompt per demo composition, same concepts, 6 samples each
    assert [(p.composition, p.concepts) for p in pset.prompts] == [(c["id"], c["concepts"]) for c in demo["compositions"]]
    assert all(pset.samples_of(p) == 6 for p in pset.prompts)
    assert [c.id for c in pset.concepts] == [c["id"] for c in demo["concepts"]]
    assert pset.recipe.endswith("/configs/demo.yaml") and ".." not in pset.recipe
    assert set(pset.vision) == {"clip", "owlvit"}
    for p in pset.prompts:
        for c in p.concepts:
            assert pset.concept(c).token in p.prompt


def _write(tmp_path: Path, **changes) -> str:
    raw = {
        "name": "t",
        "concepts": [
            {"id": "cat", "category": "cat", "token": "<cat1>", "photos": ["photos/cat.png"]},
            {"id": "mug", "category": "mug", "token": "<mug1>", "photos": ["pkgdata://skimage/data/coffee.png"]},
            {"id": "rocket", "category": "rocket", "token": "<rocket1>", "photos": ["pkgdata://skimage/data/rocket.jpg"]},
        ],
        "prompts": [{"composition": "cat-mug", "concepts": ["cat", "mug"], "prompt": "a <cat1> cat and a <mug1> mug on the moon"}],
    }
    raw.update(changes)
    path = tmp_path / "set.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_inline_concepts_photos_are_relative_to_the_file(tmp_path):
    pset = load_prompt_set(_write(tmp_path))
    assert pset.concept("cat").photos == [f"file://{tmp_path}/photos/cat.png"]
    assert pset.samples == 6 and pset.generation.guidance == 6.0


@pytest.mark.parametrize(
    "prompt, concepts, message",
    [
        ("a <cat1> cat and a mug", ["cat", "mug"], "lacks the token(s) ['<mug1>']"),
        ("a <cat1> cat and a <dog1> dog", ["cat", "dog"], "unknown concept ids ['dog']"),
        ("a <cat1> cat, a <mug1> mug, a <dog9>", ["cat", "mug"], "'<dog9>', which is no concept's token"),
        ("a <cat1> cat, a <mug1> mug, a <rocket1>", ["cat", "mug"], "of concept 'rocket', which is not in its concepts"),
        ("a <cat1> cat", ["cat"], "2 to 5 concepts, not 1"),
        ("a <cat1> cat and a <cat1> cat", ["cat", "cat"], "name a concept twice"),
    ],
)
def test_bad_prompt_is_named(tmp_path, prompt, concepts, message):
    path = _write(tmp_path, prompts=[{"composition": "c", "concepts": concepts, "prompt": prompt}])
    with pytest.raises(PromptSetError) as err:
        load_prompt_set(path)
    assert message in str(err.value) and path in str(err.value) and ("\n  prompts[0] (c): " in str(err.value) or "\n  prompts.0 = " in str(err.value))


def test_other_bad_sets(tmp_path):
    missing = tmp_path / "none.yaml"
    with pytest.raises(PromptSetError, match="none.yaml: not found"):
        load_prompt_set(str(missing))
    (tmp_path / "bad.yaml").write_text("name: [unclosed")
    with pytest.raises(PromptSetError, match="not valid YAML"):
        load_prompt_set(str(tmp_path / "bad.yaml"))
    with pytest.raises(PromptSetError, match="either by `recipe` or inline"):
        load_prompt_set(_write(tmp_path, recipe="../demo.yaml"))
    with pytest.raises(PromptSetError, match="recipe 'nowhere.yaml'"):
        load_prompt_set(_write(tmp_path, concepts=[], recipe="nowhere.yaml"))
    twice = {"composition": "cat-mug", "concepts": ["cat", "mug"], "prompt": "a <cat1> cat and a <mug1> mug on the moon"}
    with pytest.raises(PromptSetError, match="listed again"):
        load_prompt_set(_write(tmp_path, prompts=[twice, twice]))
    other = {"composition": "cat-mug", "concepts": ["cat", "rocket"], "prompt": "a <cat1> cat, a <rocket1> rocket"}
    with pytest.raises(PromptSetError, match="has concepts \\['cat', 'rocket'\\] here"):
        load_prompt_set(_write(tmp_path, prompts=[twice, other]))
    with pytest.raises(PromptSetError, match="samples = 0"):
        load_prompt_set(_write(tmp_path, samples=0))
    with pytest.raises(PromptSetError, match="typo"):
        load_prompt_set(_write(tmp_path, typo=1))


def test_checked_against_the_checkpoints_concepts(tmp_path):
    pset = load_prompt_set(_write(tmp_path))
    check_against(pset, {"cat": "<cat1>", "mug": "<mug1>"})
    with pytest.raises(PromptSetError, match=r"concept\(s\) \['mug'\] are not in the checkpoint"):
        check_against(pset, {"cat": "<cat1>"})
    with pytest.raises(PromptSetError, match="learnt it as '<cat2>'"):
        check_against(pset, {"cat": "<cat2>", "mug": "<mug1>"})
