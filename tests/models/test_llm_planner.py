"""The LLM planner against a real HTTP endpoint on 127.0.0.1 that fails on purpose."""

from __future__ import annotations

import json
import logging

import pytest

from fake_llm import FakeLLM, good_answer
from models.llm_planner import LayoutRejected, LLMPlanner, parse_layout
from models.planner import PlannedObject

KEY = "sk-test-do-not-leak-0123456789"
OBJECTS = [PlannedObject("chelsea", "cat", 1.3), PlannedObject("coffee", "mug", 1.0)]
QUESTION = "Canvas: 512x512. Scene: in a garden. Objects: cat, mug."


@pytest.fixture
def llm():
    with FakeLLM() as server:
        yield server


def planner(server: FakeLLM, monkeypatch, **kw) -> LLMPlanner:
    monkeypatch.setenv("TEST_LLM_KEY", KEY)
    return LLMPlanner(base_url=server.url, model="fake", api_key_env="TEST_LLM_KEY", **({"timeout": 2.0} | kw))


@pytest.mark.parametrize(
    "text, words",
    [
        ('{"boxes": [{"name": "cat", "box": [10, 10, 100', "not the JSON asked for"),
        ("boxes: cat at 10,10", "not the JSON asked for"),
        ('{"boxes": [{"name": "cat", "box": [NaN, 0, 10, 10]}, {"name": "mug", "box": [300, 0, 10, 10]}]}', "not a finite number"),
        ('{"boxes": [{"name": "cat", "box": [-5, 0, 10, 10]}, {"name": "mug", "box": [300, 0, 10, 10]}]}', "off the 512x512 canvas"),
        ('{"boxes": [{"name": "cat", "box": [500, 0, 100, 10]}, {"name": "mug", "box": [300, 0, 10, 10]}]}', "off the 512x512 canvas"),
        ('{"boxes": [{"name": "cat", "box": [0, 0, 0, 10]}, {"name": "mug", "box": [300, 0, 10, 10]}]}', "must be positive"),
        ('{"boxes": [{"name": "cat", "box": [0, 0, 10, 10]}]}', "objects missing: ['mug']"),
        ('{"boxes": [{"name": "cat", "box": [0, 0, 10, 10]}, {"name": "dog", "box": [50, 0, 10, 10]}]}', "not asked for: ['dog']"),
        ('{"boxes": [{"name": "cat", "box": [0, 0, 100, 100]}, {"name": "mug", "box": [10, 10, 100, 100]}]}', "overlap more than"),
    ],
)
def test_bad_answers_are_rejected_with_the_reason(text, words):
    with pytest.raises(LayoutRejected) as err:
        parse_layout(text, ["cat", "mug"], 512, 0.1)
    assert words in str(err.value)


def test_answers_are_matched_by_name_not_order():
    text = '{"boxes": [{"name": "Mug", "box": [300, 200, 50, 40]}, {"name": "cat", "box": [10, 100, 200, 150]}]}'
    assert parse_layout(text, ["cat", "mug"], 512, 0.1) == [(10, 100, 200, 150), (300, 200, 50, 40)]


def test_a_valid_answer_is_used(llm, monkeypatch):
    p = planner(llm, monkeypatch)
    boxes = p.layout(OBJECTS, 512, "in a garden", 0.1, seed=3)
    expected = [tuple(b["box"]) for b in json.loads(good_answer(QUESTION))["boxes"]]
    assert boxes == expected and p.last[3].source == "llm"
    body = llm.requests[0]["body"]
    assert body["seed"] == 3 and body["temperature"] == 0 and body["messages"][-1]["content"] == QUESTION
    assert llm.requests[0]["authorization"] == f"Bearer {KEY}"  # the key is sent, and only there


def test_rate_limits_server_errors_and_timeouts_are_retried(llm, monkeypatch):
    llm.script = [("status", 429), ("status", 500), ("sleep", 3.0), ("status", 503)]
    p = planner(llm, monkeypatch, timeout=1.0)
    boxes = p.layout(OBJECTS, 512, "in a garden", 0.1, seed=1)
    assert p.last[1].source == "llm" and len(boxes) == 2
    assert len(llm.requests) == 5


def test_a_truncated_answer_is_repaired_in_a_second_turn(llm, monkeypatch):
    llm.script = [("text", '{"boxes": [{"name": "cat", "box": [10, 1')]
    p = planner(llm, monkeypatch)
    p.layout(OBJECTS, 512, "in a garden", 0.1, seed=2)
    assert p.last[2].source == "llm" and len(llm.requests) == 2
    repair = llm.requests[1]["body"]["messages"][-1]["content"]
    assert repair.startswith("That answer cannot be used: the answer is not the JSON asked for")


def test_hopeless_answers_fall_back_to_the_offline_planner(llm, monkeypatch, caplog):
    off_canvas = '{"boxes": [{"name": "cat", "box": [900, 0, 10, 10]}, {"name": "mug", "box": [0, 0, 10, 10]}]}'
    llm.script = [("text", off_canvas)] * 3
    p = planner(llm, monkeypatch, repairs=2)
    with caplog.at_level(logging.DEBUG):
        boxes = p.layout(OBJECTS, 512, "in a garden", 0.1, seed=4)
    assert len(llm.requests) == 3 and len(boxes) == 2
    assert p.last[4].source == "offline" and "off the 512x512 canvas" in p.last[4].detail
    assert KEY not in caplog.text and KEY not in p.last[4].detail


def test_an_endpoint_that_is_down_falls_back_without_leaking_the_key(monkeypatch, caplog):
    monkeypatch.setenv("TEST_LLM_KEY", KEY)
    p = LLMPlanner(base_url="http://127.0.0.1:9/v1", api_key_env="TEST_LLM_KEY", timeout=0.5, http_retries=1)
    with caplog.at_level(logging.DEBUG):
        boxes = p.layout(OBJECTS, 512, "in a garden", 0.1, seed=5)
    assert len(boxes) == 2 and p.last[5].source == "offline" and "APIConnectionError" in p.last[5].detail
    assert KEY not in caplog.text
    without = LLMPlanner(base_url="http://127.0.0.1:9/v1", api_key_env="TEST_LLM_KEY", timeout=0.5, http_retries=0, fallback=False)
    with pytest.raises(LayoutRejected) as err:
        without.layout(OBJECTS, 512, "in a garden", 0.1, seed=5)
    assert KEY not in str(err.value)


def test_a_missing_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(ValueError, match="environment variable NO_SUCH_KEY_VAR is not set"):
        LLMPlanner(base_url="http://127.0.0.1:9/v1", api_key_env="NO_SUCH_KEY_VAR")
