"""Tier 3: a generate run is readable in the Prefect UI, read back through Prefect's API:
named from its recipe, holding its own task runs (named by stage and composition) and
artifacts, with per-stage progress, a table in stage order with a total row, a history."""

from __future__ import annotations

import json
import re

import pytest

from conftest import small_recipe

pytestmark = pytest.mark.usefixtures("prefect_harness")


def artifacts_of(flow_run_id) -> dict:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a for a in found}


def test_the_started_run_is_named_and_holds_its_task_runs_and_artifacts(tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentTaskRunId

    from gen4gen.flows.generate import generate
    from gen4gen.infra.records import DatasetConfig

    raw = small_recipe(tmp_path, samples=1, canvas=128) | {"name": "named", "version": "v3"}
    raw["run"]["runner"] = {"kind": "threads"}
    state = generate(DatasetConfig.model_validate(raw), str(tmp_path / "out"), return_state=True)
    manifest = state.result()
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])), limit=200)
        subflows = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_task_run_id=FlowRunFilterParentTaskRunId(any_=[t.id for t in tasks])))
    assert re.fullmatch(r"named-v3-\d{8}-\d{6}", run.name), run.name
    assert subflows == []  # no nested run doing the work
    names = {t.name for t in tasks}
    for comp in ("cat-mug", "cat-mug-rocket"):
        assert {f"{s}[{comp}]" for s in ("plan", "composite", "repaint", "caption", "filter", "collect")} <= names
    assert {"segment[chelsea]", "segment[coffee]", "publish"} <= names

    found = artifacts_of(run_id)
    assert {"named-v3-progress", "named-v3-compositions", "named-history"} <= set(found)
    progress = found["named-v3-progress"]
    assert float(progress.data) == 100.0
    assert progress.description.startswith("named v3: completed") and "repaint 2/2" in progress.description
    assert f"{manifest.kept} kept" in progress.description

    table = found["named-v3-compositions"].data
    rows = json.loads(table) if isinstance(table, str) else table
    assert [r["composition"] for r in rows] == ["cat-mug", "cat-mug-rocket", "total"]
    columns = [c.removesuffix(" s") for c in rows[0] if c.endswith(" s")]
    assert columns == ["segment", "plan", "composite", "repaint", "caption", "filter", "tally", "collect", "publish"]
    total = rows[-1]
    assert total["planned"] == manifest.planned and total["kept"] == manifest.kept
    assert all(total[f"{c} s"] is not None and total[f"{c} s"] >= 0 for c in columns)
    assert total["publish s"] > 0 and total["segment s"] > 0
    assert rows[0]["segment s"] is None and rows[0]["plan s"] > 0


def test_the_history_shows_every_run_of_the_dataset(tmp_path):
    from gen4gen.flows.generate import generate
    from gen4gen.infra.records import DatasetConfig

    raw = small_recipe(tmp_path, samples=1, canvas=128) | {"name": "trend"}
    first = generate(DatasetConfig.model_validate(raw | {"version": "v1"}), str(tmp_path / "a"), return_state=True)
    raw["compositions"] = raw["compositions"][:1]
    second = generate(DatasetConfig.model_validate(raw | {"version": "v2"}), str(tmp_path / "b"), return_state=True)
    found = artifacts_of(second.state_details.flow_run_id)["trend-history"]
    rows = json.loads(found.data) if isinstance(found.data, str) else found.data
    assert [r["version"] for r in rows] == ["v1", "v2"]
    for row, state in zip(rows, (first, second)):
        m = state.result()
        assert (row["planned"], row["kept"]) == (m.planned, m.kept)
        assert row["keep rate"] == round(m.kept / m.planned, 3)
        assert set(row) >= {"run", "created", "dropped", "failed", "config"}
