"""Tier 3: human review in the generate flow, from a decisions file and through Prefect's UI input.

Both tests review the same dataset folder, first generated without review: its stage
results are cached, so a reviewed run only reviews, collects and publishes.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from conftest import run_recipe as run, small_recipe
from gen4gen.infra.storage import join, read_bytes
from gen4gen.tasks.publishing.publish import read_manifest, read_shard
from gen4gen.infra.records import Manifest, Sample

pytestmark = pytest.mark.usefixtures("prefect_harness")


def samples_of(manifest: Manifest) -> dict[str, Sample]:
    return {s.id: s for st in manifest.compositions for s in read_shard(manifest.uri, st)}


def metadata_ids(manifest: Manifest) -> set[str]:
    lines = read_bytes(join(manifest.uri, "metadata.jsonl")).decode().splitlines()
    return {json.loads(line)["sample_id"] for line in lines}


@pytest.fixture(scope="module")
def unreviewed(tmp_path_factory):
    """A dataset generated without review, and two of its kept samples in different compositions."""
    raw = small_recipe(tmp_path_factory.mktemp("review"), samples=2) | {"name": "reviewed"}
    manifest = run(raw)
    kept = [next(s for s in read_shard(manifest.uri, st) if s.status == "kept") for st in manifest.compositions if st.kept]
    assert len(kept) == 2, [st.reasons for st in manifest.compositions]
    return raw, manifest, kept[0], kept[1]


def test_a_decisions_file_drops_kept_samples_rated_below_min_rating(unreviewed, tmp_path):
    raw, before, low, high = unreviewed
    decisions = tmp_path / "ratings.csv"
    decisions.write_text(f"sample_id,rating\n{low.id},2\n{high.id},5\n00000-notinthisrun,1\n")
    manifest = run(raw | {"review": {"mode": "file", "decisions": str(decisions)}})

    by_comp = {st.composition: st for st in manifest.compositions}
    comp = by_comp[low.composition]
    assert comp.reasons.get("human") == 1
    assert comp.kept == before.compositions[[st.composition for st in before.compositions].index(low.composition)].kept - 1
    assert "human" not in by_comp[high.composition].reasons
    assert manifest.kept == before.kept - 1 and manifest.dropped == before.dropped + 1

    samples = samples_of(manifest)  # the composition's shard, as a reader sees it
    assert samples[low.id].status == "dropped"
    assert [(r.code, r.stage, r.detail) for r in samples[low.id].reasons] == [("human", "review", "rated 2 < 4")]
    assert samples[high.id].status == "kept" and samples[high.id].measures["review.rating"] == 5.0
    # Published output: the imagefolder index and the images folder leave the dropped one out.
    assert low.id not in metadata_ids(manifest) and high.id in metadata_ids(manifest)
    assert not any(low.id in path for path in manifest.files)


def test_an_interactive_review_pauses_until_ratings_come_through_the_api(unreviewed):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateName
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.flow_runs import resume_flow_run
    from prefect.input.run_input import keyset_from_paused_state

    from gen4gen.infra.artifacts import artifact_key

    raw, before, low, high = unreviewed
    result: dict = {}

    def generate():
        try:
            result["manifest"] = run(raw | {"review": {"mode": "interactive", "min_rating": 3, "timeout_seconds": 120}})
        except BaseException as err:  # reported by the main thread
            result["error"] = err

    started = time.monotonic()
    thread = threading.Thread(target=generate, daemon=True)
    thread.start()
    paused = None
    with get_client(sync_client=True) as client:
        while paused is None and time.monotonic() - started < 60 and thread.is_alive():
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Paused"]))),
                sort=FlowRunSort.START_TIME_DESC,
                limit=5,
            )
            paused = next((r for r in runs if r.parameters.get("out") == raw["run"]["out"]), None)
            time.sleep(0.3)
        assert paused is not None, result.get("error", "the flow never paused")
        # The form's description names the review page, which is there for people to open.
        description = client.read_flow_run_input(paused.id, keyset_from_paused_state(paused.state)["description"])
    page_uri = f"{before.uri}/.review/report.html"
    assert page_uri in description and "rated below 3 is dropped" in description
    page = read_bytes(page_uri).decode()
    assert low.id in page and high.id in page and "awaiting review" in page
    assert "manifest" not in result, "published before the review was answered"

    resume_flow_run(paused.id, run_input={"decisions": {low.id: 2, high.id: 3}})
    thread.join(timeout=60)
    assert not thread.is_alive(), "the flow did not finish after it was resumed"
    assert "error" not in result, result.get("error")
    manifest = result["manifest"]

    samples = samples_of(manifest)
    assert samples[low.id].status == "dropped" and samples[low.id].reasons[0].detail == "rated 2 < 3"
    assert samples[high.id].status == "kept"  # 3 keeps with min_rating 3
    assert manifest.kept == before.kept - 1
    assert low.id not in metadata_ids(manifest) and read_manifest(manifest.uri).kept == manifest.kept

    with get_client(sync_client=True) as client:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[artifact_key("reviewed", "v1", "review")])))
    assert found and page_uri in found[-1].data
