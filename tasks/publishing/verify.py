"""Verify a published dataset against its manifest, the way a careful reader would.

`problems(out)` lists what is wrong (empty: the dataset is whole); `fingerprint(out)` is
everything a reader sees minus what may differ between two runs of one recipe (the time,
the location, the timings), so two datasets can be compared for equality.

The dataset is untrusted data (tasks/reader.py): a manifest or shard that is malformed,
too large, or names a path outside the dataset is a problem reported by name; nothing
outside the dataset is ever read or tested for existence.
"""

from __future__ import annotations

from gen4gen.infra.errors import BadInput
from gen4gen.infra.storage import inside, join, list_files, read_bytes, relative, sha256
from gen4gen.tasks.publishing.publish import IMAGES
from gen4gen.tasks.reader import read_manifest, read_shard

VOLATILE = {"created", "uri"}


def problems(out: str) -> list[str]:
    try:
        manifest = read_manifest(out)
    except BadInput as err:
        return [f"no usable manifest: {err}"]
    found: list[str] = []
    for rel, digest in manifest.files.items():
        try:
            if sha256(read_bytes(inside(out, rel, "manifest"))) != digest:
                found.append(f"{rel}: content does not match the manifest's sha256")
        except BadInput as err:
            found.append(f"{rel}: listed but unreadable ({err.reason})")
    for name, copy in manifest.index.items():
        try:
            if read_bytes(inside(out, name, "manifest")) != read_bytes(inside(out, copy, "manifest")):
                found.append(f"{name}: differs from {copy}, the copy the manifest lists")
        except BadInput as err:
            found.append(f"{name}: {err.reason}")
    ids: list[str] = []
    for st in manifest.compositions:
        try:
            samples = read_shard(out, st)
        except BadInput as err:
            found.append(f"{st.composition}: {err}")
            continue
        ids += [s.id for s in samples]
        if len(samples) != st.planned or sum(s.status == "kept" for s in samples) != st.kept:
            found.append(f"{st.composition}: shard counts differ from the manifest's")
        on_disk = {relative(u, out) for u in list_files(join(out, st.composition, IMAGES))}
        if on_disk != set(st.images):
            found.append(f"{st.composition}/{IMAGES}: holds {sorted(on_disk ^ set(st.images))} beyond the manifest")
    if len(ids) != len(set(ids)):
        found.append("a sample appears twice")
    if len(ids) != manifest.planned or manifest.kept + manifest.dropped + manifest.failed != manifest.planned:
        found.append("kept + dropped + failed differs from planned")
    return found


def fingerprint(out: str) -> dict:
    manifest = read_manifest(out)
    view = manifest.model_dump(mode="json", exclude=VOLATILE)
    for st in view["compositions"]:
        st.pop("seconds")
    files = {rel: sha256(read_bytes(inside(out, rel, "manifest"))) for rel in manifest.files}
    tops = {name: sha256(read_bytes(inside(out, name, "manifest"))) for name in manifest.index}
    return {"manifest": view, "files": files, "tops": tops}
