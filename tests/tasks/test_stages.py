"""Tier 2: the stage functions chained by hand, without Prefect, on real photos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import small_recipe
from gen4gen.infra.records import DatasetConfig
from gen4gen.infra.storage import join, read_bytes, read_mask, read_rgb
from gen4gen.tasks.pipeline import jobs, own_cutouts, run_local
from gen4gen.tasks.plan import plan_composition
from gen4gen.tasks.publishing.publish import collect_composition, publish_dataset, read_manifest
from gen4gen.tasks.segment import segment_concept


def run_stages(config: DatasetConfig, out: str):
    return run_local(config, out)


def plan_dataset(config: DatasetConfig, cutouts: dict, out: str) -> dict:
    return {c: plan_composition(job, own_cutouts(job, cutouts)) for c, job in jobs(config, out, cutouts).items()}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stages")
    config = DatasetConfig.model_validate(small_recipe(tmp, samples=2))
    return config, *run_stages(config, config.out)


def test_objects_stay_exactly_as_composited(run):
    config, manifest, samples, _ = run
    for s in (s for group in samples.values() for s in group if s.status == "kept"):
        final, composite = read_rgb(join(config.out, s.paths["repaint"])), read_rgb(join(config.out, s.paths["composite"]))
        solid = read_mask(join(config.out, s.paths["mask"])) >= 1.0
        assert solid.mean() > 0.01, "objects cover part of the canvas"
        assert np.array_equal(final[solid], composite[solid])
        # The background was filled: no black holes left where no object is.
        empty = read_mask(join(config.out, s.paths["mask"])) == 0
        assert (final[empty].max(axis=1) < 8).mean() < 0.01


def test_keys_follow_the_contract_and_are_deterministic(run, tmp_path):
    config, manifest, samples, _ = run
    s = samples["cat-mug"][0]
    assert s.paths["composite"] == f".stages/cat-mug/composite/{s.id}-{s.stage_keys['composite']}.png"
    assert s.paths["repaint"] == f".stages/cat-mug/repaint/{s.id}-{s.stage_keys['repaint']}.png"
    again = DatasetConfig.model_validate(small_recipe(tmp_path, samples=2))
    replanned = plan_dataset(again, {c.id: segment_concept(c, again.out, again.stages.segment) for c in again.concepts},
                             again.out)
    assert [x.id for x in replanned["cat-mug"]] == [x.id for x in samples["cat-mug"]]
    assert all(read_bytes(join(config.out, x.paths["repaint"])) for x in samples["cat-mug"])


def test_sample_ids_follow_the_plan_settings_only(run, tmp_path):
    config, _, samples, cutouts = run
    raw = config.model_dump()
    raw["stages"]["repaint"]["options"] = {"shadow": 0.1}  # a later stage: same samples
    same = plan_dataset(DatasetConfig.model_validate(raw), cutouts, str(tmp_path / "a"))
    assert [x.id for x in same["cat-mug"]] == [x.id for x in samples["cat-mug"]]
    raw["max_iou"] = 0.02  # a plan setting: other samples
    changed = plan_dataset(DatasetConfig.model_validate(raw), cutouts, str(tmp_path / "b"))
    assert not {x.id for x in changed["cat-mug"]} & {x.id for x in samples["cat-mug"]}


def test_segmentation_is_cached_by_photo_content(run):
    config, _, _, cutouts = run
    records = sorted(Path(config.out, ".cache", "segment").rglob("*.json"))
    assert len(records) == len(config.concepts)  # one photo each, shared by compositions
    stamps = [r.stat().st_mtime_ns for r in records]
    again = segment_concept(config.concept("chelsea"), config.out, config.stages.segment)
    assert again == cutouts["chelsea"]
    assert [r.stat().st_mtime_ns for r in records] == stamps  # read back, not recomputed


def test_metadata_and_manifest_agree(run):
    config, manifest, samples, _ = run
    rows = [json.loads(line) for line in read_bytes(join(config.out, "metadata.jsonl")).decode().splitlines()]
    kept = [s for group in samples.values() for s in group if s.status == "kept"]
    assert len(rows) == len(kept) == manifest.kept
    assert all(r["file_name"] in manifest.files for r in rows)
    assert read_manifest(config.out).config_sha256 == manifest.config_sha256


def test_publishing_removes_what_an_earlier_manifest_listed_and_nothing_else(run):
    config, manifest, samples, cutouts = run
    foreign = Path(config.out, "cat-mug", "images", "00099-not-ours.png")
    foreign.write_bytes(b"put here by someone else")
    # The next version drops one sample the first one published.
    group = [s.model_copy(deep=True) for s in samples["cat-mug"]]
    gone = next(s for s in group if s.status == "kept")
    gone.status = "dropped"
    changed = {**samples, "cat-mug": group}
    stats = [collect_composition(g, config.out) for g in changed.values()]
    second = publish_dataset(config, config.out, stats, cutouts)
    listed_before = {p for p in manifest.files if p.startswith("cat-mug/images/")}
    listed_now = {p for p in second.files if p.startswith("cat-mug/images/")}
    assert listed_before - listed_now and not Path(config.out, *next(iter(listed_before - listed_now)).split("/")).exists()
    assert foreign.exists(), "a file no manifest of ours listed is never deleted"
    assert sorted(p.name for p in foreign.parent.iterdir()) == sorted([foreign.name] + [Path(p).name for p in listed_now])


# --------------------------------------------------------------------------- hand-over


def _run_sets(config: DatasetConfig, refresh: bool = False) -> dict:
    """Each composition's SampleSet after every stage, as the flow's tasks hand them on."""
    from gen4gen.tasks.pipeline import SAMPLE_STAGES
    from gen4gen.tasks.stage import hand_on, run_set

    cutouts = {c.id: segment_concept(c, config.out, config.stages.segment) for c in config.concepts}
    out = {}
    for cid, job in jobs(config, config.out, cutouts, refresh).items():
        handed = [hand_on(config.out, "plan", plan_composition(job, own_cutouts(job, cutouts)))]
        for stage, _ in SAMPLE_STAGES:
            handed.append(run_set(stage, handed[-1], job))
        out[cid] = handed
    return out


def _computed():
    from gen4gen.infra import progress

    seen: list = []
    return seen, progress.listen_computed(lambda comp, stage, n: seen.append((comp, stage, n)))


def test_tasks_hand_on_small_sets_and_an_unchanged_composition_is_read_from_its_notes(tmp_path):
    """What a task returns does not grow with the samples; a rerun hands on the same sets
    without opening a sample's record, and a damaged note only costs reading the records."""
    small = DatasetConfig.model_validate(small_recipe(tmp_path / "a", samples=2))
    large = DatasetConfig.model_validate(small_recipe(tmp_path / "b", samples=8))
    sizes = [len(s.model_dump_json()) for config in (small, large) for sets in _run_sets(config).values() for s in sets]
    assert max(sizes) < 600  # a path, a hash and counts: the same at any sample count

    first = _run_sets(large)
    seen, stop = _computed()
    records = list(Path(large.out, ".stages").rglob("*-*.json"))
    for record in records:
        if "/from-" not in str(record) and "/plan/" not in str(record):
            record.unlink()  # were they read, the stages would have to recompute these
    try:
        again = _run_sets(large)
    finally:
        stop()
    strip = lambda sets: {c: [s.model_copy(update={"seconds": {}}) for s in ss] for c, ss in sets.items()}  # noqa: E731
    assert strip(again) == strip(first) and seen == []

    # A note that is garbage, or names a path outside the dataset, is not trusted.
    notes = sorted(Path(large.out, ".stages").rglob("from-*.json"))
    assert notes
    notes[0].write_bytes(b"{not json")
    escaping = json.loads(notes[1].read_text())
    notes[1].write_text(json.dumps({**escaping, "path": "../elsewhere.jsonl"}))
    seen, stop = _computed()
    try:
        third = _run_sets(large)
    finally:
        stop()
    assert strip(third) == strip(first)
    assert sum(n for *_, n in seen) > 0  # the two stages whose notes were bad ran their samples
