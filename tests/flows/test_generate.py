"""Tier 3: the generate flow under a Prefect test server, on small recipes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import run_recipe, small_recipe, write_uniform_photo
from gen4gen.infra import progress
from gen4gen.infra.storage import join, read_bytes, sha256
from gen4gen.tasks.publishing.publish import read_manifest, read_shard
from gen4gen.infra.records import DatasetConfig, Sample

pytestmark = pytest.mark.usefixtures("prefect_harness")


def run(raw: dict):
    return run_recipe(raw), DatasetConfig.model_validate(raw)


def stage_calls():
    """Record every stage call the flow makes (stages report what they computed)."""
    calls: list[tuple[str, str]] = []
    stop = progress.listen_computed(lambda comp, stage, n: calls.append((comp, stage)))
    return calls, stop


def shard(out: str, composition: str) -> list[Sample]:
    manifest = read_manifest(out)
    return read_shard(out, next(st for st in manifest.compositions if st.composition == composition))


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("generate")
    manifest, config = run(small_recipe(tmp, samples=3))
    return manifest, config


def test_manifest_lists_every_file_with_its_hash(published):
    manifest, config = published
    assert manifest.planned == 6 and manifest.kept + manifest.dropped + manifest.failed == 6
    assert manifest.kept >= 4, [st.reasons for st in manifest.compositions]
    for rel, digest in manifest.files.items():
        assert sha256(read_bytes(join(manifest.uri, rel))) == digest, rel
    images = [p for p in manifest.files if "/images/" in p]
    assert len(images) == manifest.kept
    assert read_manifest(manifest.uri).model_dump() == manifest.model_dump()


def test_dataset_loads_as_imagefolder_with_captions_naming_every_concept(published):
    datasets = pytest.importorskip("datasets")
    manifest, config = published
    ds = datasets.load_dataset("imagefolder", data_dir=manifest.uri.removeprefix("file://"))
    train = ds["train"]
    assert set(ds) == {"train"} and len(train) == manifest.kept
    assert {"image", "text", "composition", "tokens", "concepts"} <= set(train.column_names)
    by_id = {c.id: c for c in config.compositions}
    for row in train:
        expected = [config.concept(c).token for c in by_id[row["composition"]].concepts]
        assert row["tokens"] == expected
        assert all(token in row["text"] for token in expected), row["text"]
        assert row["image"].size == (config.canvas, config.canvas)


def test_concepts_list_for_custom_diffusion(published):
    manifest, config = published
    entries = json.loads(read_bytes(join(manifest.uri, "concepts_list.json")))
    assert entries, "at least one composition kept samples"
    root = Path(manifest.uri.removeprefix("file://"))
    for entry in entries:
        assert set(entry) == {"instance_prompt", "class_prompt", "instance_data_dir", "class_data_dir"}
        folder = root / entry["instance_data_dir"]
        comp = next(c for c in config.compositions if entry["instance_data_dir"].startswith(c.id + "/"))
        assert len(list(folder.iterdir())) == next(st.kept for st in manifest.compositions if st.composition == comp.id)
        for cid in comp.concepts:
            assert config.concept(cid).token in entry["instance_prompt"]


def test_every_sample_is_recorded_with_its_stage_outputs(published):
    manifest, _ = published
    for st in manifest.compositions:
        samples = shard(manifest.uri, st.composition)
        assert len(samples) == st.planned and len({s.id for s in samples}) == st.planned
        for s in samples:
            if s.status == "kept":
                assert set(s.paths) == {"composite", "mask", "repaint"} and not s.reasons
            else:
                assert s.reasons, s.id


def test_published_event_names_the_dataset(published):
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    manifest, _ = published
    deadline = time.monotonic() + 30
    payloads = []
    while time.monotonic() < deadline and not payloads:
        with get_client(sync_client=True) as client:
            page = client.read_events(EventFilter(event=EventNameFilter(name=["dataset.published"])), limit=50)
        payloads = [e.payload for e in page.events if e.payload.get("uri") == manifest.uri]
        time.sleep(0.5)
    assert payloads, "no dataset.published event for this dataset"
    assert payloads[0]["version"] == manifest.version and payloads[0]["kept"] == manifest.kept


def test_rerun_hits_the_cache_and_recomputes_nothing(tmp_path):
    raw = small_recipe(tmp_path, samples=2)
    first, _ = run(raw)
    out = Path(first.uri.removeprefix("file://"))
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    calls, stop = stage_calls()
    try:
        second, _ = run(raw)
    finally:
        stop()
    assert calls == [], f"stage functions ran again: {calls}"
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == before
    assert second.files == first.files


def test_a_photo_with_no_foreground_drops_its_samples_and_the_run_completes(tmp_path):
    blank = write_uniform_photo(tmp_path / "blank.png")
    raw = small_recipe(
        tmp_path,
        samples=2,
        extra_concepts=[{"id": "blank", "category": "vase", "token": "<blank>", "photos": [blank]}],
        extra_compositions=[{"id": "cat-blank", "concepts": ["chelsea", "blank"], "samples": 2}],
    )
    manifest, _ = run(raw)
    stats = {st.composition: st for st in manifest.compositions}
    assert stats["cat-blank"].dropped == 2 and stats["cat-blank"].reasons == {"empty_mask": 2}
    assert stats["cat-mug"].kept + stats["cat-mug"].dropped == 2 and stats["cat-mug"].reasons.get("empty_mask") is None
    dropped = shard(manifest.uri, "cat-blank")
    assert all(s.reasons[0].code == "empty_mask" and "blank.png" in s.reasons[0].detail for s in dropped)
    assert any("blank.png" in photo for photo in manifest.unusable_photos)


def test_a_corrupt_photo_fails_only_its_samples_with_the_reason(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    raw = small_recipe(
        tmp_path,
        samples=2,
        extra_concepts=[{"id": "broken", "category": "vase", "token": "<broken>", "photos": [str(bad)]}],
        extra_compositions=[{"id": "cat-broken", "concepts": ["chelsea", "broken"], "samples": 2}],
    )
    manifest, _ = run(raw)
    stats = {st.composition: st for st in manifest.compositions}
    assert stats["cat-broken"].failed == 2 and stats["cat-broken"].kept == 0
    reason = shard(manifest.uri, "cat-broken")[0].reasons[0]
    assert reason.code == "bad_input" and "notes.png" in reason.detail and "cannot decode image" in reason.detail
    assert stats["cat-mug"].failed == 0


def test_transient_faults_reading_photos_are_retried_and_the_run_completes(tmp_path, monkeypatch):
    import faults

    monkeypatch.setenv("GEN4GEN_IO_BACKOFF", "0.01")
    faults.register()
    (tmp_path / "cat.png").write_bytes(read_bytes("pkgdata://skimage/data/chelsea.png"))
    raw = small_recipe(tmp_path, samples=1)
    raw["concepts"][0]["photos"] = [f"faulty://{tmp_path}/cat.png"]
    faults.Faults.configure(rate=0.5, seed=3)  # half the requests to the photo store fail
    try:
        manifest, _ = run(raw)
    finally:
        injected = faults.Faults.injected
        faults.Faults.configure(rate=0.0)
    assert injected >= 1, "the test must actually inject faults"
    assert manifest.failed == 0 and manifest.planned == 2
    assert not manifest.unusable_photos
