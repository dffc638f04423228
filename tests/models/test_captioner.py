"""Tier 1: template captions name every concept by its token, and the scene."""

from __future__ import annotations

import pytest

from gen4gen.models.caption.captioner import TemplateCaptioner

OBJS = [("<grace>", "person", (600, 0, 100, 300)), ("<chelsea>", "cat", (10, 0, 100, 100))]


def test_two_objects_left_to_right_with_a_relation():
    text = TemplateCaptioner().caption(OBJS, "in a garden", seed=1)
    assert text.endswith("in a garden")
    assert text.index("<chelsea> cat") < text.index("<grace> person")
    assert any(rel in text for rel in ("next to", "to the left of", "beside"))


def test_many_objects_all_named_once():
    objs = OBJS + [("<coffee>", "mug", (300, 0, 50, 50)), ("<rocket>", "rocket", (900, 0, 50, 200))]
    text = TemplateCaptioner().caption(objs, "on a kitchen table", seed=3)
    for token, cat, _ in objs:
        assert text.count(token) == 1 and f"{token} {cat}" in text
    assert ", and" not in text and " and a <rocket> rocket" in text


def test_deterministic_and_validated():
    c = TemplateCaptioner()
    assert c.caption(OBJS, "x", 5) == c.caption(OBJS, "x", 5)
    with pytest.raises(ValueError, match="at least one object"):
        c.caption([], "x", 1)
    with pytest.raises(ValueError, match="openings"):
        TemplateCaptioner(openings=[])
