"""The LLM planner against a real HTTP endpoint on 127.0.0.1 that fails on purpose."""

from __future__ import annotations

import json
import logging

import pytest

from fake_llm import FakeLLM, good_answer
from gen4gen.models.plan.llm_planner import LayoutRejected, LLMPlanner, parse_layout
from gen4gen.models.plan.planner import OfflinePlanner, PlannedObject

KEY = "sk-test-do-not-leak-0123456789"
OBJECTS = [PlannedObject("chelsea", "cat", 1.3), PlannedObject("coffee", "mug", 1.0)]
QUESTION = "Canvas: 512x512. Scene: in a garden. Relative sizes (largest 1.0): cat 1.00, mug 0.40. Objects: cat, mug."


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
    body = llm.of("layout")[0]["body"]
    assert body["seed"] == 3 and body["temperature"] == 0 and body["messages"][-1]["content"] == QUESTION
    assert llm.requests[0]["authorization"] == f"Bearer {KEY}"  # the key is sent, and only there
    assert [r["kind"] for r in llm.requests] == ["sizes", "layout"] and p.notes(OBJECTS, 3) == []


def test_rate_limits_server_errors_and_timeouts_are_retried(llm, monkeypatch):
    llm.script = [("status", 429), ("status", 500), ("sleep", 3.0), ("status", 503)]
    p = planner(llm, monkeypatch, timeout=1.0)
    boxes = p.layout(OBJECTS, 512, "in a garden", 0.1, seed=1)
    assert p.last[1].source == "llm" and len(boxes) == 2
    # The faults hit the first request (the size ranking): retried by the client, 5 tries.
    assert len(llm.of("sizes")) == 5 and len(llm.of("layout")) == 1


def test_a_truncated_answer_is_repaired_in_a_second_turn(llm, monkeypatch):
    llm.turns["layout"] = ["malformed"]
    p = planner(llm, monkeypatch)
    p.layout(OBJECTS, 512, "in a garden", 0.1, seed=2)
    assert p.last[2].source == "llm" and len(llm.of("layout")) == 2
    repair = llm.of("layout")[1]["body"]["messages"][-1]["content"]
    assert repair.startswith("That answer cannot be used: the answer is not the JSON asked for")


def test_hopeless_answers_fall_back_to_the_offline_planner(llm, monkeypatch, caplog):
    llm.turns["layout"] = ["out_of_range"] * 3
    p = planner(llm, monkeypatch, repairs=2)
    from gen4gen.models.contracts import LayoutRequest

    with caplog.at_level(logging.DEBUG):
        (layout,) = p.plan_batch([LayoutRequest(tuple(OBJECTS), 512, "in a garden", 0.1, 4)])
    assert len(llm.of("layout")) == 3 and len(layout.boxes) == 2
    # The offline layout keeps the endpoint's size ranking (cat 1.0, mug 0.4).
    assert layout.boxes == OfflinePlanner().layout(OBJECTS, 512, "in a garden", 0.1, 4, ratios=[1.0, 0.4])
    assert layout.made_by == "openai->offline"
    assert [c for c, _ in layout.notes] == ["layout_fallback"]
    assert "off the 512x512 canvas" in layout.notes[0][1]
    assert KEY not in caplog.text and KEY not in layout.notes[0][1]
    assert p.last == {}  # what happened went into the record, not a side dict


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


# --------------------------------------------------------------------------- scenes, sizes, association

from gen4gen.models.plan.llm_planner import (  # noqa: E402
    AnswerRejected,
    parse_association,
    parse_ranks,
    parse_scenes,
    ratios_from_ranks,
)

PERSON = PlannedObject("grace", "person", 0.45)


@pytest.mark.parametrize(
    "text, words",
    [
        ('{"scenes": "in the garden"}', "not the JSON asked for"),
        ('{"scenes": ["in the garden", "on the grass"]}', "3 scenes were asked for, the answer has 2"),
        ('{"scenes": ["in the garden", "on the grass", "garden"]}', "use 2 to 8 words"),
        ('{"scenes": ["in the garden", "on the grass", "the big forest"]}', "start with a preposition"),
        ('{"scenes": ["in the garden", "on the grass", "In  the garden"]}', "repeat one another"),
        ('{"scenes": ["in the garden", "on the grass", "in a <cat> house"]}', "plain words only"),
    ],
)
def test_bad_scene_answers_are_rejected_with_the_reason(text, words):
    with pytest.raises(AnswerRejected) as err:
        parse_scenes(text, 3)
    assert words in str(err.value)


@pytest.mark.parametrize(
    "text, words",
    [
        ('{"sizes": [{"name": "cat", "rank": "big"}, {"name": "mug", "rank": 2}]}', "not the JSON asked for"),
        ('{"sizes": [{"name": "cat", "rank": 1.5}, {"name": "mug", "rank": 2}]}', "not the JSON asked for"),
        ('{"sizes": [{"name": "cat", "rank": 0}, {"name": "mug", "rank": 1}]}', "out of range"),
        ('{"sizes": [{"name": "cat", "rank": 1}, {"name": "mug", "rank": 3}]}', "out of range"),
        ('{"sizes": [{"name": "cat", "rank": 1}, {"name": "cat", "rank": 2}]}', "ranked twice"),
        ('{"sizes": [{"name": "cat", "rank": 1}]}', "objects missing: ['mug']"),
        ('{"sizes": [{"name": "cat", "rank": 1}, {"name": "mug", "rank": 2}, {"name": "dog", "rank": 3}]}', "not asked for: ['dog']"),
    ],
)
def test_bad_size_rankings_are_rejected_with_the_reason(text, words):
    with pytest.raises(AnswerRejected) as err:
        parse_ranks(text, ["cat", "mug"])
    assert words in str(err.value)
    with pytest.raises(AnswerRejected, match="have gaps"):
        parse_ranks('{"sizes": [{"name": "a", "rank": 1}, {"name": "b", "rank": 3}, {"name": "c", "rank": 3}]}', ["a", "b", "c"])


def test_ranks_become_the_papers_ratios():
    assert ratios_from_ranks([2, 1, 3]) == [0.7, 1.0, 0.4]
    assert ratios_from_ranks([1, 1, 2]) == [1.0, 1.0, 0.4]  # a shared rank, a shared size
    assert ratios_from_ranks([1, 1]) == [1.0, 1.0]
    assert parse_ranks('{"sizes": [{"name": "Mug", "rank": 2}, {"name": "cat", "rank": 1}]}', ["cat", "mug"]) == [1, 2]


@pytest.mark.parametrize(
    "text, words",
    [
        ('{"compositions": [{"concepts": ["a", "b"]}', "not the JSON asked for"),
        ('{"compositions": []}', "not the JSON asked for"),
        ('{"compositions": [{"concepts": ["a", "zzz"]}]}', "unknown concept ids ['zzz']"),
        ('{"compositions": [{"concepts": ["a"]}]}', "1 concepts, a composition holds 2 to 5"),
        ('{"compositions": [{"concepts": ["a", "b", "c", "d", "e", "f"]}]}', "6 concepts"),
        ('{"compositions": [{"concepts": ["a", "a", "b"]}]}', "names a concept twice"),
        ('{"compositions": [{"concepts": ["b", "a"]}]}', "taken already or repeated"),
    ],
)
def test_bad_associations_are_rejected_with_the_reason(text, words):
    with pytest.raises(AnswerRejected) as err:
        parse_association(text, list("abcdef"), 5, taken=[["a", "b"]])
    assert words in str(err.value)


def test_association_leaves_out_repeats_and_keeps_at_most_the_number_asked():
    text = '{"compositions": [{"concepts": ["a", "c"], "why": "x\\ny"}, {"concepts": ["c", "a"]}, {"concepts": ["b", "c", "d"]}, {"concepts": ["d", "e"]}]}'
    got = parse_association(text, list("abcde"), 2)
    assert [p.concepts for p in got] == [["a", "c"], ["b", "c", "d"]] and got[0].why == "x y"


def test_sizes_and_scenes_are_repaired_over_http_and_asked_once(llm, monkeypatch):
    llm.turns = {"sizes": ["out_of_range", "malformed"], "scenes": ["malformed", "out_of_range"]}
    p = planner(llm, monkeypatch)
    objects = [PERSON, *OBJECTS]  # person, cat, mug: ranks 1, 2, 3 at the fake
    assert p.size_ratios(objects, seed=1) == [1.0, 0.7, 0.4]
    sizes = llm.of("sizes")
    assert len(sizes) == 3
    assert "out of range" in sizes[1]["body"]["messages"][-1]["content"]
    assert "not the JSON asked for" in sizes[2]["body"]["messages"][-1]["content"]
    assert p.scenes(objects, 3, seed=1) == ["in the garden", "on a kitchen table", "in a living room"]
    assert len(llm.of("scenes")) == 3 and "3 scenes were asked for, the answer has 2" in llm.of("scenes")[2]["body"]["messages"][-1]["content"]
    # Asked once per set of objects: later samples of the composition reuse the answers.
    p.size_ratios(objects, seed=2), p.scenes(objects, 3, seed=2)
    assert len(llm.requests) == 6 and p.notes(objects, 1) == []


def test_hopeless_sizes_and_scenes_fall_back_to_the_offline_tables(llm, monkeypatch):
    llm.turns = {"sizes": ["out_of_range"] * 3, "scenes": ["out_of_range", "malformed", "out_of_range"]}
    p = planner(llm, monkeypatch, repairs=2)
    objects = [PERSON, *OBJECTS]
    table = OfflinePlanner().size_ratios(objects)
    assert p.size_ratios(objects) == table and table != [1.0, 0.7, 0.4]  # not the fake's ranking
    assert p.scenes(objects, 3) == OfflinePlanner().scenes(objects, 3)
    notes = dict(p.notes(objects, 0))
    assert set(notes) == {"sizes_fallback", "scenes_fallback"}
    assert "out of range" in notes["sizes_fallback"] and "the answer has 2" in notes["scenes_fallback"]
    p.layout(objects, 512, "in a garden", 0.1, seed=9)
    question = llm.of("layout")[0]["body"]["messages"][-1]["content"]
    shown = ", ".join(f"{n} {r:.2f}" for n, r in zip(["person", "cat", "mug"], table))
    assert f"Relative sizes (largest 1.0): {shown}." in question  # the table's ratios, shown to it
    assert len(llm.of("sizes")) == 3  # the failed ranking is not asked again


def test_association_over_http_validated_and_repaired(llm, monkeypatch):
    llm.turns = {"associate": ["out_of_range", "malformed"]}
    p = planner(llm, monkeypatch)
    pool = [("chelsea", "cat"), ("coffee", "mug"), ("grace", "person"), ("rocket", "rocket")]
    got = p.associate(pool, most=3, taken=[["coffee", "grace"]])
    assert [g.concepts for g in got] == [["chelsea", "coffee"], ["grace", "rocket"], ["chelsea", "coffee", "grace"]]
    asked = llm.of("associate")
    assert len(asked) == 3 and "unknown concept ids ['no-such-concept']" in asked[1]["body"]["messages"][-1]["content"]
    assert "Taken: coffee, grace." in asked[0]["body"]["messages"][1]["content"]
    llm.turns = {"associate": ["out_of_range"] * 3}
    with pytest.raises(AnswerRejected, match="no valid composition proposal"):
        p.associate(pool, most=3)
    with pytest.raises(ValueError, match="at least 2 concepts"):
        p.associate(pool[:1])


def test_plan_stage_uses_the_endpoints_scenes_and_notes_fallbacks(llm, monkeypatch, tmp_path):
    from gen4gen.infra.records import Cutout, DatasetConfig
    from gen4gen.tasks.plan import plan_composition
    from gen4gen.tasks.stage import Job

    monkeypatch.setenv("TEST_LLM_KEY", KEY)
    options = {"base_url": llm.url, "model": "fake", "api_key_env": "TEST_LLM_KEY", "timeout": 2.0, "repairs": 1}
    config = DatasetConfig.model_validate({
        "name": "llm", "canvas": 256,
        "concepts": [
            {"id": "chelsea", "category": "cat", "token": "<chelsea>", "photos": ["cat.png"]},
            {"id": "coffee", "category": "mug", "token": "<coffee>", "photos": ["mug.png"]},
        ],
        "compositions": [{"id": "cat-mug", "concepts": ["chelsea", "coffee"], "samples": 3}],
        "stages": {"plan": {"backend": "openai", "options": options}},
    })
    cutouts = {cid: [Cutout(photo=f"{cid}.png", mask=f"{cid}-mask.png", bbox=(0, 0, 40, 30))] for cid in ("chelsea", "coffee")}
    samples = plan_composition(Job(str(tmp_path), config, config.compositions[0]), cutouts)
    assert [s.plan.scene for s in samples] == ["in the garden", "on a kitchen table", "in a living room"]
    assert all(s.plan.planner == "openai" for s in samples)
    # The fake draws both objects alike: the mug's box is far off its size prior, so repaired.
    assert all([n.code for n in s.notes] == ["size_repaired"] and "coffee" in s.notes[0].detail for s in samples)
    for s in samples:
        cat, mug = s.plan.boxes
        assert cat.sized_by == "llm" and mug.sized_by.startswith("llm, repaired to prior mug")
        assert max(cat.w, cat.h) >= 2 * max(mug.w, mug.h)
    assert [r["kind"] for r in llm.requests] == ["scenes", "sizes", "layout", "layout", "layout"]
    # Another composition (a fresh planner) whose scenes cannot be had: library scenes, noted.
    llm.turns = {"scenes": ["malformed", "malformed"]}
    options["repairs"] = 1
    options["timeout"] = 2.5  # a different option set: the registry builds a new planner
    config.stages.plan.options = options
    samples = plan_composition(Job(str(tmp_path), config, config.compositions[0]), cutouts)
    assert [s.plan.scene for s in samples] == OfflinePlanner().scenes([PlannedObject("chelsea", "cat", 1), PlannedObject("coffee", "mug", 1)], 3)
    assert all([n.code for n in s.notes] == ["scenes_fallback", "size_repaired"] and s.notes[0].stage == "plan"
               for s in samples)


def test_cli_associate_writes_yaml_a_recipe_accepts(llm, monkeypatch, tmp_path, capsys):
    import yaml

    from gen4gen.flows.cli import main
    from gen4gen.infra.records import DatasetConfig

    monkeypatch.setenv("TEST_LLM_KEY", KEY)
    recipe = {
        "name": "pool",
        "concepts": [
            {"id": cid, "category": cat, "token": f"<{cid}>", "photos": [f"{cid}.png"]}
            for cid, cat in (("chelsea", "cat"), ("coffee", "mug"), ("grace", "person"), ("rocket", "rocket"))
        ],
        "stages": {"plan": {"backend": "openai", "options": {"base_url": llm.url, "model": "fake", "api_key_env": "TEST_LLM_KEY"}}},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))  # no compositions yet: that is what we ask for
    llm.turns = {"associate": ["malformed"]}
    assert main(["associate", str(path), "--max", "2", "--out", str(tmp_path / "proposed.yaml")]) == 0
    text = (tmp_path / "proposed.yaml").read_text()
    assert text.startswith("# Compositions proposed by fake") and "# chelsea and coffee go together" in text
    proposed = yaml.safe_load(text)["compositions"]
    assert [c["id"] for c in proposed] == ["chelsea-coffee", "coffee-grace"]
    DatasetConfig.model_validate(recipe | {"compositions": proposed})  # pastes into the recipe as is
    assert KEY not in text and KEY not in capsys.readouterr().err
    # Printed when no --out; taken compositions are not proposed again.
    path.write_text(yaml.safe_dump(recipe | {"compositions": proposed}))
    assert main(["associate", str(path), "--max", "5"]) == 0
    again = yaml.safe_load(capsys.readouterr().out)["compositions"]
    assert {frozenset(c["concepts"]) for c in again}.isdisjoint({frozenset(c["concepts"]) for c in proposed})
    # An offline recipe proposes from the co-occurrence table and says so; a bad --max, an
    # endpoint that never answers well: clear errors.
    offline = recipe | {"stages": {"plan": {"backend": "offline"}}}
    path.write_text(yaml.safe_dump(offline))
    assert main(["associate", str(path)]) == 0 and "no LLM endpoint" in capsys.readouterr().err
    path.write_text(yaml.safe_dump(recipe))
    assert main(["associate", str(path), "--max", "0"]) == 2
    llm.turns = {"associate": ["out_of_range"] * 3}
    assert main(["associate", str(path)]) == 1 and "unknown concept ids" in capsys.readouterr().err


def test_a_failure_is_remembered_for_a_while_an_answer_for_good(llm, monkeypatch):
    llm.turns = {"sizes": ["malformed"] * 2}
    p = planner(llm, monkeypatch, repairs=1, failure_ttl=60)
    objects = [PERSON, *OBJECTS]
    assert p.size_ratios(objects) == OfflinePlanner().size_ratios(objects)
    p.size_ratios(objects)
    assert len(llm.of("sizes")) == 2  # within the ttl: not asked again
    p.failure_ttl = 0  # the ttl has passed: asked again, answered, the note is gone
    assert p.size_ratios(objects) == [1.0, 0.7, 0.4] and p.notes(objects, 0) == []
    p.size_ratios(objects)
    assert len(llm.of("sizes")) == 3
