"""Publish: commit a dataset version, in the order that makes a crash harmless.

1. per composition (`collect`): the kept images are copied to {composition}/images/, then
   the composition's samples.jsonl (every sample, kept or not, with its reasons);
2. for the dataset (`publish`): metadata.jsonl (the Hugging Face imagefolder index of the
   kept images), concepts_list.json (diffusers' Custom Diffusion format), and last the
   manifest, written atomically. A reader trusts only what a manifest lists; a run killed
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

from infra.caching import STAGE_CACHE
from infra.errors import BadInput
from infra.storage import join, list_files, read_bytes, relative, remove, resolve, sha256, write_bytes
from tasks.records import CompositionStats, Cutout, DatasetConfig, Manifest, Sample

PACKAGES = ("gen4gen", "prefect", "pydantic", "numpy", "pillow", "opencv-python-headless", "scikit-image", "fsspec")
IMAGES = "images"


def published_path(sample: Sample) -> str:
    return f"{sample.composition}/{IMAGES}/{sample.id}.png"


def collect_composition(samples: list[Sample], out: str) -> CompositionStats:
    """Copy the kept images into place and write the composition's samples.jsonl."""
    composition = samples[0].composition
    images: dict[str, str] = {}
    for sample in samples:
        if sample.status != "kept":
            continue
        data = read_bytes(sample.uris["repaint"])
        if sha256(data) != sample.hashes["repaint"]:
            raise BadInput(sample.uris["repaint"], "changed since the repaint stage wrote it")
        path = published_path(sample)
        write_bytes(join(out, path), data)
        images[path] = sample.hashes["repaint"]
    shard = "".join(s.model_dump_json() + "\n" for s in sorted(samples, key=lambda s: s.plan.index)).encode()
    shard_path = f"{composition}/samples.jsonl"
    write_bytes(join(out, shard_path), shard)
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
        shard=shard_path,
        shard_sha256=sha256(shard),
        images=images,
    )


def read_shard(out: str, stats: CompositionStats) -> list[Sample]:
    data = read_bytes(join(out, stats.shard))
    if sha256(data) != stats.shard_sha256:
        raise BadInput(join(out, stats.shard), "does not match the hash its composition recorded")
    return [Sample.model_validate_json(line) for line in data.decode().splitlines() if line]


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
    """Write the dataset's index files, then the manifest last; returns the manifest."""
    samples = [s for st in stats for s in read_shard(out, st)]
    files: dict[str, str] = {}
    for st in stats:
        files.update(st.images)
        files[st.shard] = st.shard_sha256
    rows = metadata_rows(samples)
    index = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()
    concepts = json.dumps(concepts_list(config, {st.composition: st.kept for st in stats}), indent=2).encode()
    for name, data in (("metadata.jsonl", index), ("concepts_list.json", concepts)):
        write_bytes(join(out, name), data)
        files[name] = sha256(data)
    unusable = {c.photo: c.error.detail for cuts in cutouts.values() for c in cuts if c.error is not None}
    manifest = Manifest(
        dataset=config.name,
        version=config.version,
        uri=resolve(out),
        created=datetime.now(timezone.utc),
        config_sha256=sha256(config.model_dump_json().encode()),
        packages=package_versions(),
        compositions=stats,
        files=dict(sorted(files.items())),
        kept=sum(st.kept for st in stats),
        dropped=sum(st.dropped for st in stats),
        failed=sum(st.failed for st in stats),
        planned=sum(st.planned for st in stats),
        unusable_photos=dict(sorted(unusable.items())),
    )
    write_bytes(join(out, "manifest.json"), manifest.model_dump_json(indent=2).encode())
    remove_stale_images(out, stats)
    return manifest


def remove_stale_images(out: str, stats: list[CompositionStats]) -> None:
    """Delete published images an earlier recipe left that this manifest no longer lists.

    Done after the manifest is written, so the manifest never lists a missing file; the
    images/ folders must hold only listed images because training scripts read whole folders.
    """
    for st in stats:
        for uri in list_files(join(out, st.composition, IMAGES)):
            if relative(uri, out) not in st.images:
                remove(uri)


def read_manifest(out: str) -> Manifest:
    return Manifest.model_validate_json(read_bytes(join(out, "manifest.json")))


@task(name="collect", cache_policy=STAGE_CACHE, persist_result=True)
def collect_task(samples: list[Sample], out: str) -> CompositionStats:
    return collect_composition(samples, out)


@task(name="publish")
def publish_task(config: DatasetConfig, out: str, stats: list[CompositionStats], cutouts: dict[str, list[Cutout]]) -> Manifest:
    return publish_dataset(config, out, stats, cutouts)
