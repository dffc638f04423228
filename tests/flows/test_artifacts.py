"""Tier 3: what a generate run shows in the Prefect UI, read back through Prefect's API."""

from __future__ import annotations

import json

import pytest

from conftest import run_recipe, small_recipe
from gen4gen.infra.artifacts import artifact_key

pytestmark = pytest.mark.usefixtures("prefect_harness")


def latest(key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert found, f"no artifact with key {key!r}"
    return max(found, key=lambda a: a.created)


def test_a_run_publishes_progress_and_a_table_per_composition(tmp_path):
    raw = small_recipe(tmp_path, samples=1, canvas=160) | {"name": "ui_check.a", "version": "v2"}
    manifest = run_recipe(raw)

    progress = latest("ui-check-a-v2-progress")
    assert progress.type == "progress" and float(progress.data) == 100.0

    table = latest("ui-check-a-v2-compositions")
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert [r["composition"] for r in rows] == ["cat-mug", "cat-mug-rocket", "total"]
    for row, st in zip(rows[:-1], manifest.compositions):
        assert (row["planned"], row["kept"], row["dropped"], row["failed"]) == (st.planned, st.kept, st.dropped, st.failed)
        assert all(row[f"{stage} s"] >= 0 for stage in ("composite", "repaint", "caption", "filter"))
        assert {k.removeprefix("reason ") for k in row if k.startswith("reason ") and row[k]} == set(st.reasons)
    assert f"gen4gen report {manifest.uri}" in table.description


def test_artifact_keys_are_valid_for_any_safe_id():
    assert artifact_key("My_Data.set", "v1.2", "progress") == "my-data-set-v1-2-progress"


def test_a_gallery_per_composition_shows_every_stage_of_every_sample(tmp_path):
    from gen4gen.tasks.publish import read_shard

    raw = small_recipe(tmp_path, samples=2, canvas=160) | {"name": "gallery", "version": "v1"}
    manifest = run_recipe(raw)
    for st in manifest.compositions:
        text = latest(f"gallery-v1-{st.composition}-gallery").data
        samples = read_shard(manifest.uri, st)
        rows = [line for line in text.splitlines() if line.startswith("| `")]
        assert len(rows) == st.planned
        for sample, row in zip(samples, rows):
            assert sample.id in row and sample.status in row
            assert row.count("](data:image/jpeg;base64,") == len(sample.plan.photos) + 3  # photos, mask, composite, final
            for token in sample.tokens:
                assert token.replace("<", "&lt;").replace(">", "&gt;") in row
            thumbs = tmp_path / "out" / ".thumbs" / st.composition / sample.id
            assert sorted(p.name for p in thumbs.iterdir()) == sorted(
                [f"photo-{c}.jpg" for c in sample.plan.photos] + ["mask.jpg", "composite.jpg", "final.jpg"]
            )
