"""Gallery: one markdown artifact per composition, to see in the Prefect UI what each stage
did to each sample: source photos -> mask -> composite -> final image, caption, verdict.

Thumbnails are written to storage beside the dataset (`.thumbs/`, not listed in the
manifest: they are a view, rebuilt at will). In the markdown each thumbnail links to where
a browser can open it from the UI: a presigned HTTP(S) URL when the dataset is on S3 (the
endpoint's own address when AWS_ENDPOINT_URL points at one), and the image itself inlined
as a data URI when the dataset is on a local disk, which a browser will not open from a
web page by its file:// address.
"""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact

from gen4gen.infra.artifacts import artifact_key
from gen4gen.infra.errors import BadInput
from gen4gen.infra.storage import exists, join, read_bytes, read_input, signed_url, write_bytes
from gen4gen.infra.records import DatasetConfig, Sample
from gen4gen.tasks.report import data_uri, thumbnail_jpeg

SIZE = 120  # pixels: a row of four stays under 20 KB
LINK_SECONDS = 7 * 24 * 3600  # presigned links last a week, the life of a run in the UI


def gallery_key(config: DatasetConfig, composition: str) -> str:
    return artifact_key(config.name, config.version, composition, "gallery")


def _link(uri: str, jpeg: bytes) -> str:
    return signed_url(uri, LINK_SECONDS) or data_uri(jpeg)


def _sources(sample: Sample, out: str) -> list[tuple[str, str, bool]]:
    """(name, URI of the full image, greyscale?) for every image the sample has."""
    found = [(f"photo-{cid}", photo, False) for cid, photo in sample.plan.photos.items()]
    for stage, name in (("mask", "mask"), ("composite", "composite"), ("repaint", "final")):
        if stage in sample.paths:
            found.append((name, join(out, sample.paths[stage]), stage == "mask"))
    return found


def _cell(sample: Sample, out: str, name: str, uri: str, grey: bool) -> str:
    # Sample ids hash the plan, photos, settings and code, so a thumbnail already written
    # for this id shows the same image: a rerun reuses it instead of decoding again.
    thumb_uri = join(out, ".thumbs", sample.composition, sample.id, f"{name}.jpg")
    try:
        jpeg = read_bytes(thumb_uri) if exists(thumb_uri) else None
        if jpeg is None:
            data = read_input(uri) if name.startswith("photo-") else read_bytes(uri)
            jpeg = thumbnail_jpeg(data, uri, SIZE, grey)
            write_bytes(thumb_uri, jpeg)
    except BadInput as err:  # a broken file is shown as such: that is what a gallery is for
        return f"{name}: {err.reason}"
    return f"![{name}]({_link(thumb_uri, jpeg)})"


def sample_row(sample: Sample, out: str) -> str:
    cells = {name: _cell(sample, out, name, uri, grey) for name, uri, grey in _sources(sample, out)}
    photos = " ".join(c for name, c in cells.items() if name.startswith("photo-"))
    stages = [cells.get(name, "-") for name in ("mask", "composite", "final")]  # "-": never reached
    verdict = sample.status
    if sample.reasons:
        verdict += ": " + "; ".join(f"{r.code} ({r.detail})" for r in sample.reasons)
    caption = (sample.caption or "-").replace("<", "&lt;").replace(">", "&gt;")
    row = [f"`{sample.id}`", photos, *stages, caption, verdict]
    return "| " + " | ".join(cell.replace("|", "/") for cell in row) + " |"


def gallery_markdown(config: DatasetConfig, samples: list[Sample], out: str) -> str:
    composition = samples[0].composition
    kept = sum(s.status == "kept" for s in samples)
    head = (
        f"## {config.name} {config.version}: {composition}\n\n{kept} kept of {len(samples)}.\n\n"
        "| sample | photos | mask | composite | final | caption | verdict |\n|---|---|---|---|---|---|---|"
    )
    return "\n".join([head, *(sample_row(s, out) for s in sorted(samples, key=lambda s: s.plan.index))])


@task(name="gallery")
def gallery_task(config: DatasetConfig, samples: list[Sample], out: str) -> str:
    """Write the composition's thumbnails and its gallery artifact; returns the artifact key."""
    key = gallery_key(config, samples[0].composition)
    create_markdown_artifact(
        gallery_markdown(config, samples, out), key=key, description=f"{config.name} {config.version}: stages of every sample"
    )
    return key
