"""Tier 1: the records reject bad values with errors that name the field and the value."""

from __future__ import annotations

import copy

import pytest
from pydantic import ValidationError

from gen4gen.infra.records import Box, Composition, Concept, DatasetConfig, LayoutPlan, box_iou

CONCEPTS = [
    {"id": "cat", "category": "cat", "token": "<cat1>", "photos": ["a.png"]},
    {"id": "mug", "category": "mug", "token": "<mug1>", "photos": ["b.png"]},
    {"id": "dog", "category": "dog", "token": "<dog1>", "photos": ["c.png"]},
]


def recipe(**changes):
    raw = {"name": "t", "concepts": copy.deepcopy(CONCEPTS), "compositions": [{"id": "c1", "concepts": ["cat", "mug"]}]}
    raw.update(changes)
    return raw


def test_valid_recipe_defaults_to_the_papers_canvas():
    cfg = DatasetConfig.model_validate(recipe())
    assert cfg.canvas == 1024
    assert cfg.out == "data/t/v1"
    assert cfg.concept("mug").token == "<mug1>"


def test_unknown_concept_in_a_composition_is_named():
    with pytest.raises(ValidationError, match=r"composition 'c1': unknown concept ids \['bird'\]"):
        DatasetConfig.model_validate(recipe(compositions=[{"id": "c1", "concepts": ["cat", "bird"]}]))


def test_duplicate_tokens_are_refused():
    concepts = copy.deepcopy(CONCEPTS)
    concepts[1]["token"] = "<cat1>"
    with pytest.raises(ValidationError, match=r"concept 'mug': token '<cat1>' is already used by 'cat'"):
        DatasetConfig.model_validate(recipe(concepts=concepts))


@pytest.mark.parametrize("bad", ["../x", "a/b", "x\x00y", "tab\there", "..", ".hidden", "", "é" * 3, "a" * 65])
def test_ids_must_be_safe_path_segments(bad):
    with pytest.raises(ValidationError) as err:
        Concept(id=bad, category="cat", token="<t>", photos=["a.png"])
    text = str(err.value)
    assert "id" in text and "not a safe path segment" in text
    # The value is named, with control characters escaped so the message stays readable.
    assert ascii(bad)[:20] in text


@pytest.mark.parametrize("ids", [["cat"], ["a", "b", "c", "d", "e", "f"]])
def test_two_to_five_concepts(ids):
    with pytest.raises(ValidationError, match=rf"has {len(ids)} concepts: a composition holds 2 to 5"):
        Composition(id="c", concepts=ids)


def test_repeated_concept_in_a_composition():
    with pytest.raises(ValidationError, match=r"repeat \['cat'\]"):
        Composition(id="c", concepts=["cat", "cat"])


def test_token_shape():
    with pytest.raises(ValidationError, match=r"token 'cat' must look like '<name>'"):
        Concept(id="c", category="cat", token="cat", photos=["a.png"])


def plan(**box):
    b = {"concept": "cat", "x": 10, "y": 10, "w": 50, "h": 50} | box
    return dict(composition="c1", index=0, canvas=100, boxes=[b], scene="in a garden", seed=1, photos={"cat": "a.png"})


@pytest.mark.parametrize(
    "box, message",
    [
        ({"x": 60}, r"boxes\[0\] \(cat\): box x=60, y=10, w=50, h=50 lies off the 100x100 canvas"),
        ({"y": -1}, r"lies off the 100x100 canvas"),
        ({"w": 0}, r"boxes\[0\] \(cat\): zero or negative area \(w=0, h=50\)"),
        ({"h": -5}, r"zero or negative area"),
    ],
)
def test_boxes_off_the_canvas_or_empty(box, message):
    with pytest.raises(ValidationError, match=message):
        LayoutPlan.model_validate(plan(**box))


def test_plan_needs_a_photo_per_boxed_concept():
    raw = plan()
    raw["photos"] = {}
    with pytest.raises(ValidationError, match=r"no source photo chosen for \['cat'\]"):
        LayoutPlan.model_validate(raw)


def test_unknown_fields_are_errors():
    with pytest.raises(ValidationError, match="canvass"):
        DatasetConfig.model_validate(recipe(canvass=512))


def test_box_iou():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (10, 0, 10, 10)) == 0.0
    assert box_iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert Box(concept="a", x=1, y=2, w=3, h=4).area == 12


@pytest.mark.parametrize("bad", ["test", "test-set", "cat.train", "val2", "my_eval_run"])
def test_composition_ids_that_datasets_would_read_as_splits(bad):
    with pytest.raises(ValidationError, match="reads as a split name"):
        Composition(id=bad, concepts=["a", "b"])


@pytest.mark.parametrize("fine", ["contest", "cat-mug", "trainer-dog", "devon"])
def test_words_that_only_contain_a_split_name_are_fine(fine):
    assert Composition(id=fine, concepts=["a", "b"]).id == fine
