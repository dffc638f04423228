"""Publish: commit a dataset version, in the order that makes a crash harmless.

1. per composition (`collect`): the composition's samples-*.jsonl (every sample, kept or
   not, with its reasons) and its counts;
2. for the dataset (`publish`, holding the dataset's lease): the kept images copied to
   {composition}/images/, metadata.jsonl (the Hugging Face imagefolder index of the kept
   images), concepts_list.json (diffusers' Custom Diffusion format), and last the
   manifest, written atomically; then images older recipes left are removed. A reader trusts only what a manifest lists; a run killed
   anywhere before the manifest leaves the previous version readable and the rerun
   rewrites the same keys with the same bytes.
"""

from __future__ import annotations

import json
import platform
from collections import Counter, defaultdict
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata

from prefect import task

from prefect.cache_policies import NO_CACHE
from gen4gen.infra.errors import BadInput
from gen4gen.infra.lease import lease
from gen4gen.infra.storage import exists, join, read_bytes, remove, resolve, sha256, write_bytes
from gen4gen.infra.records import CompositionStats, Cutout, DatasetConfig, Manifest, Sample
from gen4gen.tasks import ownership
from gen4gen.tasks.card import dataset_card
from gen4gen.tasks.reader import read_manifest, read_shard  # noqa: F401 (read_manifest: for callers)

PACKAGES = ("gen4gen", "prefect", "pydantic", "numpy", "pillow", "opencv-python-headless", "scikit-image", "fsspec")
IMAGES = "images"
INDEX = ".index"  # content-named copies of the index files that manifests list


def published_path(sample: Sample) -> str:
    """A kept sample's image in the published tree, named by the sample and the key of the
    image it copies: a repaint setting changed later publishes under a new name, so no
    published name ever gets other bytes."""
    return f"{sample.composition}/{IMAGES}/{sample.id}-{sample.stage_keys['repaint']}.png"


def collect_composition(samples: list[Sample], out: str) -> CompositionStats:
    """Write the composition's samples-*.jsonl and count what happened to its samples.

    The shard holds no timings (they go to the stats), so the same recipe always writes
    the same bytes: a rerun, a resumed run and an uninterrupted run agree exactly.
    """
    composition = samples[0].composition
    ordered = sorted(samples, key=lambda s: s.plan.index)
    shard = "".join(s.model_dump_json(exclude={"seconds"}) + "\n" for s in ordered).encode()
    # Named by content: a run of another recipe never overwrites a shard that an existing
    # manifest lists.
    shard_path = f"{composition}/samples-{sha256(shard)[:16]}.jsonl"
    write_bytes(join(out, shard_path), shard)
    return composition_stats(samples, shard_path, sha256(shard))


def composition_stats(samples: list[Sample], shard: str = "", shard_sha256: str = "") -> CompositionStats:
    """Counts, first reasons and seconds per stage of one composition's samples.

    Apart from writing, so the review page can show the same numbers before anything is
    published (it passes no shard).
    """
    composition = samples[0].composition
    ordered = sorted(samples, key=lambda s: s.plan.index)
    reasons = Counter(r.code for s in samples if s.status in ("dropped", "failed") for r in s.reasons[:1])
    seconds: dict[str, float] = defaultdict(float)
    for s in samples:
        for stage, t in s.seconds.items():
            seconds[stage] += t
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
    """Copy each kept sample's final image to {composition}/images/ unless already there.

    Keys are content hashes written atomically, so a present file holds the right bytes.
    """
    for sample in samples:
        if sample.status != "kept":
            continue
        target = join(out, published_path(sample))
        if exists(target):
            continue
        data = read_bytes(join(out, sample.paths["repaint"]))
        if sha256(data) != sample.hashes["repaint"]:
            raise BadInput(join(out, sample.paths["repaint"]), "changed since the repaint stage wrote it")
        write_bytes(target, data)


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
        return _publish(config, out, stats, cutouts)


def _publish(config: DatasetConfig, out: str, stats: list[CompositionStats], cutouts: dict[str, list[Cutout]]) -> Manifest:
    ownership.remember_previous(out)
    samples = [s for st in stats for s in read_shard(out, st)]
    # Noted before they are written: a run killed before its manifest leaves only files
    # the ledger names, which a later publish may remove.
    ownership.intend(out, [published_path(s) for s in samples if s.status == "kept"] + [st.shard for st in stats])
    place_images(out, samples)
    files: dict[str, str] = {}
    for st in stats:
        files.update(st.images)
        files[st.shard] = st.shard_sha256
    rows = metadata_rows(samples)
    index = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()
    concepts = json.dumps(concepts_list(config, {st.composition: st.kept for st in stats}), indent=2).encode()
    entry_points = {"metadata.jsonl": index, "concepts_list.json": concepts}
    entry_points["README.md"] = dataset_card(config, stats)  # the dataset card (tasks/card.py), listed as they are
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
        unusable_photos=dict(sorted(unusable.items())),
    )
    write_bytes(join(out, "manifest.json"), manifest.model_dump_json(indent=2).encode())
    for name, data in entry_points.items():
        write_bytes(join(out, name), data)
    remove_unlisted(out, manifest)
    return manifest


def remove_unlisted(out: str, manifest: Manifest) -> None:
    """Delete published files that an earlier manifest of this dataset listed (or that
    publishing noted it was placing, tasks/ownership.py) and this manifest no longer lists.

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


@task(name="collect", task_run_name="collect[{composition}]", cache_policy=NO_CACHE, persist_result=False)
def collect_task(samples: list[Sample], out: str, composition: str) -> CompositionStats:
    return collect_composition(samples, out)


@task(name="publish", cache_policy=NO_CACHE, persist_result=False)
def publish_task(config: DatasetConfig, out: str, stats: list[CompositionStats], cutouts: dict[str, list[Cutout]]) -> Manifest:
    return publish_dataset(config, out, stats, cutouts)
