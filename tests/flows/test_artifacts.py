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


def test_history_keeps_drop_reasons_next_to_the_counts_when_a_later_run_adds_one():
    """A reason first seen in a later run joins the other reasons after `failed`, not after
    `uri` (past the right edge of the UI's table), and is 0 in the runs without it."""
    from gen4gen.infra.artifacts import same_columns

    head = {"run": "r", "created": "t", "version": "v1", "planned": 4, "kept": 4, "keep rate": 1.0,
            "dropped": 0, "failed": 0}
    tail = {"config": "abc", "uri": "s3://b/d"}
    v1 = head | {"reason occluded": 1} | tail
    v2 = head | {"version": "v2", "reason empty_mask": 2, "reason occluded": 0} | tail
    rows = same_columns([v1, v2])
    assert list(rows[0]) == [*head, "reason empty_mask", "reason occluded", *tail]
    assert list(rows[1]) == list(rows[0])
    assert rows[0]["reason empty_mask"] == 0 and rows[1]["reason empty_mask"] == 2


def test_a_gallery_per_composition_links_stored_thumbnails_and_is_not_rebuilt(tmp_path):
    from gen4gen.tasks.publishing.publish import read_shard
    from gen4gen.tasks.views.report import thumb_path

    raw = small_recipe(tmp_path, samples=2, canvas=160) | {"name": "gallery", "version": "v1"}
    manifest = run_recipe(raw)
    out = tmp_path / "out"
    for st in manifest.compositions:
        text = latest(f"gallery-v1-{st.composition}-gallery").data
        assert "data:image" not in text  # linked, never inlined
        assert f"gen4gen report {manifest.uri}" in text and f"{st.kept} kept" in text
        samples = read_shard(manifest.uri, st)
        rows = [line for line in text.splitlines() if line.startswith("| `")]
        assert len(rows) == st.planned  # under the caps every sample is shown
        for sample in samples:
            row = next(r for r in rows if sample.id in r)
            assert sample.status in row
            for stage in ("mask", "composite", "repaint"):
                thumb = out / thumb_path(sample.hashes[stage])
                assert thumb.is_file() and f"({thumb.as_uri()})" in row
            for token in sample.tokens:
                assert token.replace("<", "&lt;").replace(">", "&gt;") in row
    # One thumbnail per source photo, shared by every sample and composition using it.
    shown = {s.hashes[k] for st in manifest.compositions for s in read_shard(manifest.uri, st) for k in ("mask", "composite", "repaint")}
    made = {p.stem for p in (out / ".thumbs").rglob("*.jpg")}
    assert len(made - shown) == 3  # chelsea, coffee, rocket
    views = sorted((out / ".thumbs").glob("*/gallery-*.json"))
    assert len(views) == 2
    before = {p: p.stat().st_mtime_ns for p in (out / ".thumbs").rglob("*") if p.is_file()}

    run_recipe(raw)  # unchanged: galleries come from their views, no thumbnail is made again
    assert {p: p.stat().st_mtime_ns for p in (out / ".thumbs").rglob("*") if p.is_file()} == before
    assert "data:image" not in latest("gallery-v1-cat-mug-gallery").data


def test_a_gallery_stays_small_at_any_composition_size(tmp_path):
    """Rows are capped: a 40-sample composition's artifact holds 8 kept rows and counts."""
    from gen4gen.infra.records import DatasetConfig
    from gen4gen.tasks.views.gallery import KEPT_ROWS, gallery_markdown, gallery_view
    from gen4gen.tasks.pipeline import run_local

    raw = small_recipe(tmp_path, samples=1, canvas=96)
    raw["compositions"] = [{"id": "cat-mug", "concepts": ["chelsea", "coffee"], "samples": 40}]
    config = DatasetConfig.model_validate(raw)
    manifest, samples, cutouts = run_local(config)
    st = manifest.compositions[0]
    view = gallery_view(config.out, st, {c.photo: c for cuts in cutouts.values() for c in cuts})
    text = gallery_markdown(config, config.out, st, view)
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(view["kept"]) == min(KEPT_ROWS, st.kept) and len(rows) == len(view["kept"]) + len(view["dropped"])
    assert st.kept > KEPT_ROWS and f"{st.kept} kept" in text
    assert len(text.encode()) < 20_000  # whatever the composition's size: far under 1.5 MB
