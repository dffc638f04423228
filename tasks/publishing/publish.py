"""Publish: commit a dataset version, in the order that makes a crash harmless.

1. per composition (`collect`): the composition's samples-*.jsonl (every sample, kept or
   not, with its reasons) and its counts;
2. for the dataset (`publish`, holding the dataset's lease): the kept images placed in
   {composition}/images/ (hard links to the stage outputs on a local disk, copies on S3),
   Parquet shards data/shard-*.parquet (image bytes + metadata, the hub's format for large
   image datasets), metadata.jsonl (the Hugging Face imagefolder index of the kept
   images), concepts_list.json (diffusers' Custom Diffusion format), and last the
   manifest, written atomically; then images older recipes left are removed. A reader trusts only what a manifest lists; a run killed
   anywhere before the manifest leaves the previous version readable and the rerun
   rewrites the same keys with the same bytes.
"""

from __future__ import annotations

import json
import os
import platform
import re
import tempfile
import uuid
from collections import Counter, deque
from typing import Iterable, Iterator
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata

from prefect import task

from prefect.cache_policies import NO_CACHE
from gen4gen.infra.errors import BadInput
from gen4gen.infra.lease import lease
from gen4gen.infra.storage import (
    exists, file_sha256, join, local_path, read_bytes, remove, resolve, sha256, write_bytes,
)
from gen4gen.infra.records import CompositionStats, Cutout, DatasetConfig, Manifest, Sample, SampleSet
from gen4gen.models.segment.weights import as_run, describe_segmenter
from gen4gen.tasks.publishing import ownership
from gen4gen.models.backgrounds import attribution
from gen4gen.tasks.publishing.card import dataset_card, main_reasons
from gen4gen.tasks.common import digest
from gen4gen.tasks.stage import STAGES_DIR, stage_seconds, take
from gen4gen.tasks.targets import Tally, Target, published_prefix
from gen4gen.tasks.reader import background_verdicts, read_manifest, read_shard  # noqa: F401 (read_manifest: for callers)

PACKAGES = ("gen4gen", "prefect", "pydantic", "numpy", "pillow", "opencv-python-headless", "scikit-image", "fsspec")
IMAGES = "images"
INDEX = ".index"  # content-named copies of the index files that manifests list
# Parquet shards go to data/, as on the hub, but not named train-*: `datasets` takes a file
# named after a split as that split's only data, and imagefolder would then find no images.
DATA = "data"
PARQUET_FORMAT = "parquet/1"  # bump when the shards' columns or writer settings change
# A few hundred MB per shard (the hub's own shards are ~500 MB), under the 512 MiB read bound.
SHARD_BYTES = int(os.environ.get("GEN4GEN_PARQUET_SHARD_BYTES", 256 * 2**20))
ROW_GROUP = 100  # rows per row group: datasets' default for image columns, so a reader's batch
_SHARD = re.compile(r"data/shard-\d{5}-[0-9a-f]{16}\.parquet")
# datasets' feature types, written into each shard's schema so `load_dataset("parquet")` decodes
# the image column as images. `Sequence` rather than `List`: datasets 3 knows only the former.
_STRING = {"dtype": "string", "_type": "Value"}
_FEATURES = {
    "image": {"_type": "Image"}, "text": _STRING, "composition": _STRING,
    "concepts": {"feature": _STRING, "_type": "Sequence"}, "tokens": {"feature": _STRING, "_type": "Sequence"},
    "scene": _STRING, "sample_id": _STRING,
}


def published_path(sample: Sample) -> str:
    """A kept sample's image in the published tree, named by the sample and the key of the
    image it copies: a repaint setting changed later publishes under a new name, so no
    published name ever gets other bytes."""
    return f"{sample.composition}/{IMAGES}/{sample.id}-{sample.stage_keys['repaint']}.png"


def collect_composition(samples: list[Sample], out: str, seconds: dict[str, float] | None = None,
                        goal: Target | None = None, rounds: int = 1) -> CompositionStats:
    """Write the composition's samples-*.jsonl and count what happened to its samples.

    With a target (`goal.keep`), only the samples up to its last kept one are published
    (tasks/targets.py: published_prefix); the rest are counted as attempts and `unused`.
    The shard holds no timings (they go to the stats; `seconds`: the stage totals the
    tasks handed on, else summed from the samples), so the same recipe always writes the
    same bytes: a rerun, a resumed run and an uninterrupted run agree exactly.
    """
    composition = samples[0].composition
    attempts = len(samples)
    ordered, unused = published_prefix(samples, goal.keep if goal else None)
    shard = "".join(s.model_dump_json(exclude={"seconds"}) + "\n" for s in ordered).encode()
    # Named by content: a run of another recipe never overwrites a shard that an existing
    # manifest lists.
    shard_path = f"{composition}/samples-{sha256(shard)[:16]}.jsonl"
    write_bytes(join(out, shard_path), shard)
    stats = composition_stats(ordered, shard_path, sha256(shard), seconds)
    if goal is None or goal.keep is None:
        return stats.model_copy(update={"rounds": rounds, "attempts": attempts})
    return stats.model_copy(update={
        "target": goal.keep, "rounds": rounds, "attempts": attempts, "unused": unused,
        "out_of_budget": stats.kept < goal.keep and attempts >= goal.budget})


def composition_stats(samples: list[Sample], shard: str = "", shard_sha256: str = "",
                      seconds: dict[str, float] | None = None) -> CompositionStats:
    """Counts, first reasons and seconds per stage of one composition's samples.

    Apart from writing, so the review page can show the same numbers before anything is
    published (it passes no shard).
    """
    composition = samples[0].composition
    ordered = sorted(samples, key=lambda s: s.plan.index)
    reasons = Counter(r.code for s in samples if s.status in ("dropped", "failed") for r in s.reasons[:1])
    if seconds is None:
        seconds = stage_seconds(samples)
    return CompositionStats(
        composition=composition,
        planned=len(samples),
        kept=sum(s.status == "kept" for s in samples),
        dropped=sum(s.status == "dropped" for s in samples),
        failed=sum(s.status == "failed" for s in samples),
        reasons=dict(sorted(reasons.items())),
        seconds={k: round(v, 3) for k, v in sorted(seconds.items())},
        shard=shard,
        shard_sha256=shard_sha256,
        images={published_path(s): s.hashes["repaint"] for s in ordered if s.status == "kept"},
    )


def place_images(out: str, samples: list[Sample]) -> None:
    """Place each kept sample's final image in {composition}/images/ unless already there.

    Keys are content hashes written atomically, so a present file holds the right bytes.
    """
    for sample in samples:
        if sample.status == "kept":
            place_image(out, sample)


def place_image(out: str, sample: Sample, data: bytes | None = None) -> None:
    """One kept image: a hard link to the stage output where both lie on a local disk (no
    second copy; stage files are replaced, never rewritten in place, so the link keeps its
    bytes), else a copy checked against the recorded hash."""
    target = join(out, published_path(sample))
    if exists(target):
        return
    source = join(out, sample.paths["repaint"])
    src, dst = local_path(source), local_path(target)
    if src and dst and data is None:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        tmp = os.path.join(os.path.dirname(dst), f".{os.path.basename(dst)}.{uuid.uuid4().hex}.tmp")
        try:
            os.link(src, tmp)
            if file_sha256(tmp) == sample.hashes["repaint"]:
                os.replace(tmp, dst)  # atomic, like every other write
                return
        except OSError:
            pass  # another device, or a file system without links: copy instead
        finally:
            if os.path.lexists(tmp):
                os.remove(tmp)
    data = data if data is not None else read_bytes(source)
    if sha256(data) != sample.hashes["repaint"]:
        raise BadInput(source, "changed since the repaint stage wrote it")
    write_bytes(target, data)


# --------------------------------------------------------------------------- Parquet


def parquet_key(stats: list[CompositionStats]) -> str:
    """What the shards are made of: the compositions' sample shards (which hold every
    kept sample's caption, columns and image hash) in order, and the writer's settings."""
    return digest(PARQUET_FORMAT, SHARD_BYTES, ROW_GROUP, [(st.shard, st.shard_sha256) for st in stats])


def _parquet_record(out: str, key: str) -> str:
    return join(out, STAGES_DIR, "publish", f"parquet-{key[:16]}.json")


def written_parquet(out: str, key: str) -> dict[str, str] | None:
    """The shards an earlier publish wrote for this key, when all are still there."""
    record = _parquet_record(out, key)
    if not exists(record):
        return None
    try:
        files = json.loads(read_bytes(record))
        if isinstance(files, dict) and all(isinstance(p, str) and _SHARD.fullmatch(p) and exists(join(out, p)) for p in files):
            return files
    except (BadInput, ValueError):
        pass  # unreadable: write the shards again
    return None


def write_parquet(out: str, kept: Iterable[Sample], key: str) -> dict[str, str]:
    """The kept samples as Parquet shards `data/shard-NNNNN-{sha}.parquet` (path -> sha256).

    Rows in the given order, streamed: one row group at a time in memory, whatever the
    dataset's size. Shards are named by position (for order) and content (a listed shard
    never changes), built in the hidden stage tree and moved into data/ only once whole and
    noted in the ownership ledger; `key` (parquet_key) records what they hold.
    """
    record = _parquet_record(out, key)
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])), ("text", pa.string()),
         ("composition", pa.string()), ("concepts", pa.list_(pa.string())), ("tokens", pa.list_(pa.string())),
         ("scene", pa.string()), ("sample_id", pa.string())],
        metadata={"huggingface": json.dumps({"info": {"features": _FEATURES}})},
    )
    files: dict[str, str] = {}
    work = local_path(join(out, STAGES_DIR, "publish")) or tempfile.mkdtemp(prefix="gen4gen-parquet-")
    os.makedirs(work, exist_ok=True)
    state = {"writer": None, "tmp": "", "bytes": 0}
    batch: list[dict] = []

    def flush() -> None:
        if batch:
            if state["writer"] is None:
                state["tmp"] = os.path.join(work, f".shard-{uuid.uuid4().hex}.tmp")
                state["writer"] = pq.ParquetWriter(state["tmp"], schema, compression="snappy")
            state["writer"].write_table(pa.Table.from_pylist(batch, schema=schema), row_group_size=ROW_GROUP)
            batch.clear()

    def close() -> None:
        flush()
        if state["writer"] is None:
            return
        state["writer"].close()
        sha = file_sha256(state["tmp"])
        rel = f"{DATA}/shard-{len(files):05d}-{sha[:16]}.parquet"
        ownership.intend(out, [rel])  # before it lands where a loader looks
        target = join(out, rel)
        if local_path(target):
            path = local_path(target)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.replace(state["tmp"], path)
        else:
            # Through storage's writer: retried on transient faults, atomic like every write
            # (a shard is at most SHARD_BYTES, so it can be held in memory once).
            with open(state["tmp"], "rb") as f:
                write_bytes(target, f.read())
            os.remove(state["tmp"])
        files[rel] = sha
        state.update(writer=None, tmp="", bytes=0)

    try:
        for sample in kept:
            if sample.status != "kept":
                continue
            (row,) = metadata_rows([sample])
            data = read_bytes(join(out, published_path(sample)))
            if sha256(data) != sample.hashes["repaint"]:
                raise BadInput(join(out, published_path(sample)), "changed since the repaint stage wrote it")
            row = {k: v for k, v in row.items() if k != "file_name"}
            batch.append({"image": {"bytes": data, "path": published_path(sample).rsplit("/", 1)[1]}, **row})
            state["bytes"] += len(data)
            if len(batch) >= ROW_GROUP:
                flush()
            if state["bytes"] >= SHARD_BYTES:
                close()
        close()
    finally:
        if state["writer"] is not None:
            state["writer"].close()
        if state["tmp"] and os.path.exists(state["tmp"]):
            os.remove(state["tmp"])
    write_bytes(record, json.dumps(files, sort_keys=True).encode())
    return files


def metadata_rows(samples: list[Sample]) -> list[dict]:
    """One imagefolder row per kept sample: file_name, text, and the columns users filter on."""
    return [
        {
            "file_name": published_path(s),
            "text": s.caption,
            "composition": s.composition,
            "concepts": s.concepts,
            "tokens": s.tokens,
            "scene": s.plan.scene,
            "sample_id": s.id,
        }
        for s in samples
        if s.status == "kept"
    ]


def concepts_list(config: DatasetConfig, kept_by_composition: dict[str, int]) -> list[dict]:
    """diffusers' Custom Diffusion --concepts_list: one entry per composition with images.

    Paths are relative to the dataset folder, so run the training script from there.
    """
    entries = []
    for comp in config.compositions:
        if not kept_by_composition.get(comp.id):
            continue  # the script fails on an empty or missing folder
        concepts = [config.concept(c) for c in comp.concepts]
        entries.append(
            {
                "instance_prompt": "a photo of " + " and ".join(f"{c.token} {c.category}" for c in concepts),
                "class_prompt": "a photo of " + " and ".join(f"a {c.category}" for c in concepts),
                "instance_data_dir": f"{comp.id}/{IMAGES}",
                "class_data_dir": f"class_images/{comp.id}",
            }
        )
    return entries


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def publish_dataset(
    config: DatasetConfig,
    out: str,
    stats: list[CompositionStats],
    cutouts: dict[str, list[Cutout]],
) -> Manifest:
    """Place the kept images, write the index files, then the manifest last.

    All under the dataset's lease: publishing rewrites shared files and deletes stale
    images, which two runs must not interleave.
    """
    with lease(out):
        return _publish(as_run(config), out, stats, cutouts)  # the hash and card of what ran


def _publish(config: DatasetConfig, out: str, stats: list[CompositionStats], cutouts: dict[str, list[Cutout]]) -> Manifest:
    ownership.remember_previous(out)
    # Noted before they are written: a run killed before its manifest leaves only files
    # the ledger names, which a later publish may remove.
    ownership.intend(out, [p for st in stats for p in st.images] + [st.shard for st in stats])
    files: dict[str, str] = {}
    for st in stats:
        files.update(st.images)
        files[st.shard] = st.shard_sha256
    previous_shards = _listed_shards(out)
    lines: list[str] = []  # metadata.jsonl, a line per kept sample

    def kept() -> Iterator[Sample]:
        """One composition's samples in memory at a time: its images placed, its rows
        indexed, then its kept samples handed to the Parquet writer."""
        for st in stats:
            samples = read_shard(out, st)
            place_images(out, samples)
            rows = metadata_rows(samples)
            lines.extend(json.dumps(r, sort_keys=True) + "\n" for r in rows)
            yield from (s for s in samples if s.status == "kept")

    key = parquet_key(stats)
    shards = written_parquet(out, key)
    if shards is None:
        shards = write_parquet(out, kept(), key)
    else:
        deque(kept(), maxlen=0)  # shards unchanged: place the images and index them only
    files.update(shards)
    index = "".join(lines).encode()
    concepts = json.dumps(concepts_list(config, {st.composition: st.kept for st in stats}), indent=2).encode()
    entry_points = {"metadata.jsonl": index, "concepts_list.json": concepts}
    credits = {p: attribution(p) for bg in config.backgrounds for p in bg.photos}
    # The dataset card (tasks/publishing/card.py), listed as they are.
    entry_points["README.md"] = dataset_card(config, stats, uri=resolve(out), credits=credits)
    # The manifest lists immutable, content-named copies of the index files; the copies at
    # the top (what imagefolder and the training script open) are rewritten after it. So at
    # any moment every file the current manifest lists exists with its hash.
    index_copies: dict[str, str] = {}
    for name, data in entry_points.items():
        stem, ext = name.rsplit(".", 1)
        copy = f"{INDEX}/{stem}-{sha256(data)[:16]}.{ext}"
        ownership.intend(out, [copy])
        write_bytes(join(out, copy), data)
        files[copy] = sha256(data)
        index_copies[name] = copy
    unusable = {c.photo: c.error.detail for cuts in cutouts.values() for c in cuts if c.error is not None}
    flagged = {c.photo: "; ".join(f"{f.code}: {f.detail}" for f in c.flags)
               for cuts in cutouts.values() for c in cuts if c.flags}
    # Background photos the class checks left out (tasks/plan.py: vet_pool), beside them.
    recipe_backgrounds = {p for bg in config.backgrounds for p in bg.photos}
    flagged.update({photo: f"background_flagged: {why}"
                    for photo, why in background_verdicts(out, recipe_backgrounds).items()})
    manifest = Manifest(
        dataset=config.name,
        version=config.version,
        uri=resolve(out),
        created=datetime.now(timezone.utc),
        # The recipe's content, not where or how wide it ran: run settings change no byte.
        config_sha256=sha256(config.model_dump_json(exclude={"run"}).encode()),
        packages=package_versions(),
        compositions=stats,
        files=dict(sorted(files.items())),
        index=index_copies,
        kept=sum(st.kept for st in stats),
        dropped=sum(st.dropped for st in stats),
        failed=sum(st.failed for st in stats),
        planned=sum(st.planned for st in stats),
        attempts=sum(st.tried for st in stats),
        short={st.composition: short_reason(st) for st in stats if st.target is not None and st.kept < st.target},
        unusable_photos=dict(sorted(unusable.items())),
        flagged_photos=dict(sorted(flagged.items())),
        segmenter=describe_segmenter(config.stages.segment),
    )
    write_bytes(join(out, "manifest.json"), manifest.model_dump_json(indent=2).encode())
    for name, data in entry_points.items():
        write_bytes(join(out, name), data)
    remove_unlisted(out, manifest)
    for rel in previous_shards - set(manifest.files):
        if exists(join(out, rel)):
            remove(join(out, rel))  # an earlier manifest of this dataset listed it
    return manifest


def short_reason(st: CompositionStats) -> str:
    """Why a composition has fewer kept images than its target: its yield and main drops."""
    top = main_reasons(st)
    why = ", ".join(f"{code} {n}" for code, n in top) or "no reasons recorded"
    budget = "budget spent" if st.out_of_budget else "stopped"
    return (f"{st.kept} of {st.target} kept: {budget} after {st.tried} attempts in {st.rounds} rounds "
            f"(yield {st.yield_rate:.0%}; main drops: {why})")


def _listed_shards(out: str) -> set[str]:
    """The Parquet shards the current manifest lists: replaced shards are deleted after the
    new manifest, as images are (a loader globs data/, so stale shards would add rows)."""
    try:
        return {p for p in read_manifest(out).files if _SHARD.fullmatch(p)}
    except BadInput:
        return set()


def remove_unlisted(out: str, manifest: Manifest) -> None:
    """Delete published files that an earlier manifest of this dataset listed (or that
    publishing noted it was placing, tasks/publishing/ownership.py) and this manifest no longer lists.

    Done after the manifest is written, so the manifest never lists a missing file; the
    images/ folders must hold only listed images because training scripts read whole
    folders. Nothing else is ever deleted: a file the factory did not publish (the user's,
    in a folder they gave as --out) is not the factory's to remove. Stage outputs and
    caches are left alone: they are keyed by content and an older manifest may be restored.
    """
    for uri in ownership.deletable(out, manifest):
        if exists(uri):
            remove(uri)
    ownership.record(out, manifest)


@task(name="collect", task_run_name="collect[{tally.samples.composition}]", cache_policy=NO_CACHE, persist_result=False)
def collect_task(tally: Tally, out: str, goal: Target) -> CompositionStats:
    return collect_composition(take(out, tally.samples), out, tally.samples.seconds, goal, tally.rounds)


@task(name="publish", cache_policy=NO_CACHE, persist_result=False)
def publish_task(config: DatasetConfig, out: str, stats: list[CompositionStats], cutouts: dict[str, list[Cutout]]) -> Manifest:
    return publish_dataset(config, out, stats, cutouts)
