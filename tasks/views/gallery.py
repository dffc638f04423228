"""Gallery: one small markdown artifact per composition, to see in the Prefect UI what the
run made of it: counts and drop reasons, the dropped and failed samples with their reasons
(capped), a few kept ones (source photos -> mask -> composite -> final, caption, verdict),
and the command that writes the full report.

Its cost is bounded per composition, not per sample: it shows at most `DROPPED_ROWS +
KEPT_ROWS` rows, so the artifact stays far under Prefect's 1.5 MB event limit at any size
and thumbnails only those rows' images. Thumbnails live in storage (`.thumbs/`, a view
outside the manifest), named by the sha256 of the image they show, so a source photo is
thumbnailed once for every sample and composition that uses it, and the report reuses them
(tasks/views/report.py: thumb_path). They are linked, never inlined: on S3 by a presigned
HTTP(S) URL the UI shows as an image, on a local disk by a file:// link (a browser will not
load those into a web page; `gen4gen report` is the way to see them there).

A composition's gallery is keyed by its shard's sha256 (which changes with any of its
samples): an unchanged composition's rows are read back from `.thumbs/{composition}/
gallery-{sha}.json` and nothing is decoded again.
"""

from __future__ import annotations

import json

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from gen4gen.infra.artifacts import artifact_key
from gen4gen.infra.errors import BadInput
from gen4gen.infra.records import CompositionStats, Cutout, DatasetConfig, Sample
from gen4gen.infra.storage import exists, join, read_bytes, read_input, resolve, signed_url, write_bytes
from gen4gen.tasks.reader import read_shard
from gen4gen.tasks.views.report import THUMB, THUMBS, thumb_path, thumbnail_jpeg

SIZE = THUMB  # the report's size, so the report reuses these thumbnails
LINK_SECONDS = 7 * 24 * 3600  # presigned links last a week, the life of a run in the UI
DROPPED_ROWS = 20  # dropped and failed samples shown with their reasons (the first ones)
KEPT_ROWS = 8  # kept samples shown, spread evenly over the composition
DETAIL_CHARS = 200  # a reason's detail is cut here: a traceback-sized detail must not grow the artifact
VIEW_FORMAT = 2  # bump when the cached view's fields change


def gallery_key(config: DatasetConfig, composition: str) -> str:
    return artifact_key(config.name, config.version, composition, "gallery")


def _link(uri: str, name: str) -> str:
    """Markdown for a stored thumbnail: an image where the UI can load it, else a link."""
    url = signed_url(uri, LINK_SECONDS)
    return f"![{name}]({url})" if url else f"[{name}]({uri})"


def _thumbnail(out: str, sha: str | None, source: str, photo: bool, grey: bool = False) -> tuple[str | None, str]:
    """(path of the image's thumbnail relative to the dataset, or None; why not)."""
    if not sha:
        return None, "no image"
    rel = thumb_path(sha, SIZE)
    uri = join(out, rel)
    if exists(uri):  # named by content: whoever made it made the same bytes
        return rel, ""
    try:
        data = read_input(source) if photo else read_bytes(source)
        write_bytes(uri, thumbnail_jpeg(data, source, SIZE, grey))
    except BadInput as err:  # a broken file is shown as such: that is what a gallery is for
        return None, err.reason
    return rel, ""


def _row(sample: Sample, out: str, photos: dict[str, Cutout]) -> dict:
    cells = []
    for cid in sample.concepts:
        uri = sample.plan.photos.get(cid)
        cut = photos.get(uri) if uri else None
        rel, note = _thumbnail(out, cut.photo_sha256 if cut else None, uri or "", photo=True)
        cells.append([f"photo-{cid}", rel, note])
    for stage, name in (("mask", "mask"), ("composite", "composite"), ("repaint", "final")):
        if stage not in sample.paths:
            cells.append([name, None, "-"])  # never reached
            continue
        rel, note = _thumbnail(out, sample.hashes.get(stage), join(out, sample.paths[stage]), False, stage == "mask")
        cells.append([name, rel, note])
    reasons = "; ".join(f"{r.code} ({r.detail[:DETAIL_CHARS]})" for r in sample.reasons)
    return {"id": sample.id, "status": sample.status, "caption": sample.caption or "-", "reasons": reasons, "cells": cells}


def _chosen(samples: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    """The dropped/failed samples to show (the first ones) and the kept ones (spread out)."""
    ordered = sorted(samples, key=lambda s: s.plan.index)
    bad = [s for s in ordered if s.status in ("dropped", "failed")][:DROPPED_ROWS]
    kept = [s for s in ordered if s.status == "kept"]
    step = max(1, len(kept) / KEPT_ROWS)
    return bad, [kept[int(i * step)] for i in range(min(KEPT_ROWS, len(kept)))]


def gallery_view(out: str, stats: CompositionStats, photos: dict[str, Cutout],
                 backgrounds: frozenset[str] = frozenset()) -> dict:
    """The rows a gallery shows, thumbnails made; read back when the shard is unchanged.
    `backgrounds`: the recipe's background photos; those the samples stand on are
    thumbnailed too, for the report (a URI a record names is read only when the recipe has it)."""
    cache = join(out, THUMBS, stats.composition, f"gallery-{stats.shard_sha256[:16]}.json")
    if exists(cache):
        try:
            view = json.loads(read_bytes(cache))
            if isinstance(view, dict) and view.get("format") == VIEW_FORMAT:
                return view
        except (BadInput, ValueError):
            pass  # unreadable: build it again
    samples = read_shard(out, stats)
    bad, kept = _chosen(samples)
    used = {(s.plan.background.photo, s.plan.background.sha256) for s in samples
            if s.plan.background is not None and s.plan.background.photo in backgrounds}
    view = {
        "format": VIEW_FORMAT,
        # Every photo of the composition's concepts, and the background photos its samples
        # stand on, for the report (made once per photo).
        "photos": {uri: rel for uri, sha in sorted({(u, c.photo_sha256) for u, c in photos.items()} | used)
                   if (rel := _thumbnail(out, sha, uri, photo=True)[0])},
        "dropped": [_row(s, out, photos) for s in bad],
        "kept": [_row(s, out, photos) for s in kept],
    }
    write_bytes(cache, json.dumps(view).encode())
    return view


def _table(out: str, rows: list[dict]) -> list[str]:
    lines = ["| sample | photos | mask | composite | final | caption | verdict |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        cells = {name: (_link(resolve(join(out, rel)), name) if rel else f"{name}: {note}" if note != "-" else "-")
                 for name, rel, note in row["cells"]}
        photos = " ".join(c for name, c in cells.items() if name.startswith("photo-"))
        verdict = row["status"] + (": " + row["reasons"] if row["reasons"] else "")
        caption = row["caption"].replace("<", "&lt;").replace(">", "&gt;")
        line = [f"`{row['id']}`", photos, cells.get("mask", "-"), cells.get("composite", "-"), cells.get("final", "-"),
                caption, verdict]
        lines.append("| " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in line) + " |")
    return lines


def gallery_markdown(config: DatasetConfig, out: str, stats: CompositionStats, view: dict) -> str:
    st, uri = stats, resolve(out)
    bad = st.dropped + st.failed
    reasons = ", ".join(f"`{code}` {n}" for code, n in sorted(st.reasons.items(), key=lambda kv: -kv[1])) or "none"
    parts = [
        f"## {config.name} {config.version}: {st.composition}",
        f"**{st.kept} kept** of {st.planned} planned; {st.dropped} dropped, {st.failed} failed. Reasons: {reasons}.",
        f"Every sample, with filters and ratings: `gen4gen report {uri} --out report.html`",
    ]
    if view["dropped"]:
        parts += [f"### Dropped and failed: the first {len(view['dropped'])} of {bad}", "\n".join(_table(out, view["dropped"]))]
    if view["kept"]:
        parts += [f"### Kept: {len(view['kept'])} of {st.kept}", "\n".join(_table(out, view["kept"]))]
    return "\n\n".join(parts)


def write_gallery(config: DatasetConfig, out: str, stats: CompositionStats, photos: dict[str, Cutout]) -> str:
    """Make (or read back) the composition's view and publish its artifact; returns the key."""
    key = gallery_key(config, stats.composition)
    create_markdown_artifact(
        gallery_markdown(config, out, stats, gallery_view(
            out, stats, photos, frozenset(p for bg in config.backgrounds for p in bg.photos))), key=key,
        description=f"{config.name} {config.version}: {stats.composition}, counts and a sample of its images",
    )
    return key


@task(name="gallery", task_run_name="gallery[{stats.composition}]", cache_policy=NO_CACHE, persist_result=False)
def gallery_task(config: DatasetConfig, out: str, stats: CompositionStats, photos: dict[str, Cutout]) -> str:
    """A composition's gallery artifact (`photos`: photo URI -> its cut-out, for the sha)."""
    return write_gallery(config, out, stats, photos)
