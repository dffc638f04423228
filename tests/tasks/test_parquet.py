"""The Parquet shards of a published version, read back: the same rows as metadata.jsonl,
the same image bytes as the published files, listed with their hashes, split where the
shard size says, not written again when nothing changed, and replaced shards removed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import small_recipe
from gen4gen.infra.records import DatasetConfig
from gen4gen.tasks.publishing import publish
from gen4gen.tasks.pipeline import run_local
from gen4gen.tasks.publishing.publish import collect_composition, publish_dataset


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parquet")
    config = DatasetConfig.model_validate(small_recipe(tmp, samples=3, canvas=128))
    manifest, samples, cutouts = run_local(config)
    return config, manifest, samples, cutouts


def shards(manifest) -> list[str]:
    return sorted(p for p in manifest.files if p.startswith("data/shard-"))


def rows_of(out: str, manifest) -> list[dict]:
    return [row for path in shards(manifest) for row in pq.read_table(Path(out, path)).to_pylist()]


def test_rows_and_images_round_trip(published):
    config, manifest, _, _ = published
    out = config.out
    assert manifest.kept > 1 and shards(manifest)
    for path in shards(manifest):  # listed with the hash of their bytes
        assert hashlib.sha256(Path(out, path).read_bytes()).hexdigest() == manifest.files[path]
    index = [json.loads(line) for line in Path(out, "metadata.jsonl").read_text().splitlines()]
    rows = rows_of(out, manifest)
    assert len(rows) == len(index) == manifest.kept
    for row, entry in zip(rows, index):  # the same rows, in the same order
        assert {k: row[k] for k in ("text", "composition", "concepts", "tokens", "scene", "sample_id")} == {
            k: entry[k] for k in ("text", "composition", "concepts", "tokens", "scene", "sample_id")}
        image = Path(out, entry["file_name"]).read_bytes()
        assert row["image"]["bytes"] == image and row["image"]["path"] == Path(entry["file_name"]).name
        assert hashlib.sha256(image).hexdigest() == manifest.files[entry["file_name"]]


def test_datasets_decodes_the_image_column(published):
    datasets = pytest.importorskip("datasets")
    config, manifest, _, _ = published
    ds = datasets.load_dataset("parquet", data_dir=str(Path(config.out, "data")),
                               cache_dir=str(Path(config.out).parent / "hf"))["train"]
    assert len(ds) == manifest.kept
    assert ds[0]["image"].size == (config.canvas, config.canvas) and ds[0]["text"]


def test_shards_split_by_size_are_kept_when_unchanged_and_replaced_when_not(published, monkeypatch, tmp_path):
    config, manifest, samples, cutouts = published
    out = config.out
    one_image = max(Path(out, p).stat().st_size for p in manifest.files if "/images/" in p)
    before = rows_of(out, manifest)
    monkeypatch.setattr(publish, "SHARD_BYTES", one_image + 1)  # about two images a shard
    stats = [collect_composition(group, out) for group in samples.values()]
    split = publish_dataset(config, out, stats, cutouts)
    names = shards(split)
    assert len(names) >= manifest.kept // 2 and [n.split("-")[1] for n in names] == [
        f"{i:05d}" for i in range(len(names))]
    assert rows_of(out, split) == before  # the same rows, split differently
    assert not any(Path(out, p).exists() for p in shards(manifest) if p not in names)  # replaced: removed

    written = {n: Path(out, n).stat().st_mtime_ns for n in names}
    again = publish_dataset(config, out, stats, cutouts)
    assert shards(again) == names and {n: Path(out, n).stat().st_mtime_ns for n in names} == written

    # One sample dropped: new shards without its row, the old ones gone.
    group = [s.model_copy(deep=True) for s in samples["cat-mug"]]
    gone = next(s for s in group if s.status == "kept")
    gone.status = "dropped"
    changed = [collect_composition(g, out) for g in {**samples, "cat-mug": group}.values()]
    third = publish_dataset(config, out, changed, cutouts)
    ids = [r["sample_id"] for r in rows_of(out, third)]
    assert gone.id not in ids and len(ids) == manifest.kept - 1
    assert sorted(p.relative_to(out).as_posix() for p in Path(out, "data").glob("*.parquet")) == shards(third)
