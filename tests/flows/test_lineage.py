"""Tier 3: lineage in the event feed, read back through Prefect's API: a published version
and each checkpoint trained on it carry `related` resources pointing at each other and at
the flow runs that made them; the training run links its inputs in an artifact."""

from __future__ import annotations

import time
import uuid

import pytest

pytestmark = pytest.mark.usefixtures("prefect_harness")


def events(name: str, prefix: str, want: int = 1, timeout: float = 30, mine: str = "") -> list:
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    query = EventFilter(event=EventNameFilter(name=[name]), resource=EventResourceFilter(id_prefix=[prefix]))
    deadline, found = time.monotonic() + timeout, []
    while time.monotonic() < deadline and len(found) < want:
        with get_client(sync_client=True) as client:
            found = [e for e in client.read_events(query, limit=50).events
                     if str(e.payload.get("checkpoint", "")).startswith(mine)]
        time.sleep(0.5)
    return found


def related(event) -> dict[str, str]:
    return {r.id: r.role for r in event.related}


def test_dataset_version_training_run_and_checkpoints_point_at_each_other(tmp_path):
    from gen4gen.flows.train import train
    from tests.tiny.dataset import published_small, tiny_base

    dataset = published_small()
    published = events("dataset.published", "gen4gen.dataset.small")[-1]
    generate_run = published.payload["flow_run"]
    assert related(published)[f"gen4gen.dataset-version.small.v1"] == "dataset-version"
    assert related(published).get(f"prefect.flow-run.{generate_run}") == "flow-run"  # added by Prefect

    state = train({"dataset": dataset, "out": str(tmp_path / "run"), "base_model": tiny_base(), "steps": 2,
                   "batch_size": 1, "resolution": 64, "checkpoint_every": 1}, upstream=generate_run,
                  return_state=True)
    result = state.result()
    # The run id follows the dataset and settings: other tests' runs of it (in their own
    # folders, on the same test server when they ran first) are not this one's.
    here = result.latest.rsplit("/checkpoints/", 1)[0]
    landed = events("checkpoint.landed", f"gen4gen.checkpoint.{result.run}.", want=2, mine=here)
    assert sorted(e.payload["step"] for e in landed) == [1, 2]
    train_run = str(state.state_details.flow_run_id)
    for e in landed:
        links = related(e)
        assert links[f"gen4gen.training-run.{result.run}"] == "training-run"
        assert links["gen4gen.dataset-version.small.v1"] == "dataset-version"
        assert links[f"prefect.flow-run.{generate_run}"] == "dataset-run"
        assert links[f"prefect.flow-run.{train_run}"] == "flow-run" and e.payload["flow_run"] == train_run

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    assert run.name.startswith("train-small-v1-")
    text = next(a.data for a in arts if a.key.endswith("-lineage"))
    assert "small v1" in text and generate_run in text and result.latest in text
    # the generate run is labelled by its name, as the UI lists it, not by its id
    name = published.payload["flow_run_name"]
    assert f"**published by**: [{name}](" in text or f"**published by**: {name} (`{generate_run}`)" in text
    assert f"`eval-{result.run}-<prompt set>-history`" in text


def test_an_event_template_without_a_run_id_adds_no_link():
    from gen4gen.infra.lineage import flow_run

    assert flow_run("None", "x") == [] and flow_run(None, "x") == []
    rid = str(uuid.uuid4())
    assert flow_run(rid, "x") == [{"prefect.resource.id": f"prefect.flow-run.{rid}", "prefect.resource.role": "x"}]


def test_an_evaluation_names_the_version_its_checkpoint_was_trained_on(tmp_path):
    """evaluation.completed's dataset version is the id checkpoint.landed and
    dataset.published use, while the folder holds that manifest; once the folder is published
    again (another manifest there) it is named by the trained manifest's sha256 instead."""
    from gen4gen.flows.evaluate import dataset_version
    from gen4gen.infra.storage import join, read_bytes, sha256
    from tests.tiny.dataset import published_small

    dataset = published_small()
    trained = sha256(read_bytes(join(dataset, "manifest.json")))
    res = dataset_version(dataset, trained)
    assert res["prefect.resource.id"] == "gen4gen.dataset-version.small.v1"
    assert res["prefect.resource.role"] == "dataset-version" and res["gen4gen.uri"] == dataset
    other = "f" * 64  # a checkpoint trained on a manifest this folder no longer holds
    assert dataset_version(dataset, other)["prefect.resource.id"] == "gen4gen.dataset-manifest.ffffffffffff"
