"""Whose folder is `--out`: the factory writes only into its own datasets and deletes only
what its own earlier manifests listed (DESIGN.md §4, hostile input).

- `claim(out, config, recipe)` runs before any work: an output folder that holds files but
  is no dataset of this project, or holds another recipe's dataset (another `name`), is
  refused with an `OwnershipError` naming both, unless `force`. It then records the owner
  in `{out}/.gen4gen/owner.json`, so a run killed before its first manifest is still ours.
- `intend(out, paths)` notes files publishing is about to place, and `deletable(out,
  manifest)` is what publishing may delete after writing `manifest`: files an earlier
  manifest of this dataset listed (or publishing intended) that this one does not. The
  record of those is `{out}/.gen4gen/published.json`, written by `record(out, manifest)`.
  Entries are checked like any path read from storage: relative, inside the dataset, and
  only where publishing writes (images/, .index/, samples-*.jsonl), so an edited record
  cannot make the factory delete anything else.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from gen4gen.infra.errors import BadInput
from gen4gen.infra.records import DatasetConfig, Manifest
from gen4gen.infra.storage import check_output, exists, filesystem, inside, join, read_bytes, read_head, write_bytes
from gen4gen.tasks.reader import MANIFEST, load_json, read_manifest

OWNER = ".gen4gen/owner.json"
# How `report --out` knows its own pages: the report's template writes this tag in its head.
GENERATOR = '<meta name=generator content="gen4gen report">'
LEDGER = ".gen4gen/published.json"
# What desktops leave in any folder: not the user's data.
IGNORABLE = {".DS_Store", "Thumbs.db", "desktop.ini"}
# Where publishing writes the files a manifest lists, so the only places it ever deletes.
_PUBLISHED = re.compile(
    r"[^/]+/images/[^/]+|\.index/[^/]+|[^/]+/samples-[^/]+\.jsonl|data/shard-\d{5}-[0-9a-f]{16}\.parquet")
MAX_RECORD_BYTES = 64 * 2**20


class OwnershipError(ValueError):
    """An output folder the factory must not write into; the message says whose it is."""


def _entries(out: str) -> list[str]:
    """Names at the top of the folder (one listing, not a walk); [] when it does not exist."""
    fs, path = filesystem(out)
    if not fs.exists(path):
        return []
    if not fs.isdir(path):
        raise OwnershipError(f"--out {out}: is a file, not a folder")
    return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False) if p.rstrip("/") != path.rstrip("/"))


def _read_record(uri: str) -> dict | None:
    try:
        raw = load_json(read_bytes(uri, limit=MAX_RECORD_BYTES), uri)
    except BadInput as err:
        if err.reason == "not found":
            return None
        raise
    if not isinstance(raw, dict):
        raise BadInput(uri, "expected a JSON object", code="malformed")
    return raw


def owner(out: str) -> dict | None:
    """{name, version, recipe, claimed} of the dataset at `out`, from its owner record or,
    for a dataset published before owner records, its manifest; None if neither is there."""
    try:
        found = _read_record(join(out, OWNER))
    except BadInput:
        found = None  # a broken owner record: judge by the manifest
    if found and isinstance(found.get("name"), str):
        return found
    if not exists(join(out, MANIFEST)):
        return None
    try:
        m = read_manifest(out)
    except BadInput as err:
        raise OwnershipError(f"--out {out}: holds a {MANIFEST} that is not a usable manifest ({err.reason}); "
                             "choose another --out, or pass --force to write over it") from err
    return {"name": m.dataset, "version": m.version, "recipe": None}


def claim(out: str, config: DatasetConfig, recipe: str | None = None, force: bool = False) -> str:
    """Refuse an `out` that is not ours to write (see the module docstring); record the
    owner and return the resolved URI."""
    out = check_output(out)
    theirs = owner(out)
    if theirs is None:
        user_files = [n for n in _entries(out) if n not in IGNORABLE]
        if user_files and not force:
            shown = ", ".join(user_files[:5]) + (" ..." if len(user_files) > 5 else "")
            raise OwnershipError(
                f"--out {out}: the folder holds files ({shown}) and is not a dataset of this project; "
                "choose an empty or new folder, or pass --force to write into it (files where published "
                "files go would be replaced)"
            )
    elif theirs["name"] != config.name and not force:
        by = f" made by recipe {theirs['recipe']}" if theirs.get("recipe") else ""
        raise OwnershipError(
            f"--out {out}: holds dataset {theirs['name']!r}{by}; recipe {recipe or '(given)'} makes dataset "
            f"{config.name!r}. Choose another --out, or pass --force to replace {theirs['name']!r} with it"
        )
    record_owner(out, config, recipe)
    return out


def record_owner(out: str, config: DatasetConfig, recipe: str | None = None) -> None:
    body = {"name": config.name, "version": config.version, "recipe": recipe,
            "claimed": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    current = None
    try:
        current = _read_record(join(out, OWNER))
    except BadInput:
        pass
    if current and {k: current.get(k) for k in ("name", "version", "recipe")} == {k: body[k] for k in ("name", "version", "recipe")}:
        return  # unchanged: do not rewrite it on every run
    write_bytes(join(out, OWNER), json_bytes(body))


def json_bytes(value) -> bytes:
    import json

    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()


def check_report_out(target: str, datasets: list[str], force: bool = False) -> str:
    """Where `gen4gen report --out` may write: never inside a dataset (the one reported,
    the one compared, or any folder above the target holding a manifest or owner record),
    and over an existing file only when it is a report page (or `force`)."""
    try:
        uri = check_output(target)
    except ValueError as err:
        raise OwnershipError(str(err).replace("--out", "report --out", 1)) from err
    for d in datasets:
        root = check_output(d)
        if uri == root or uri.startswith(root + "/"):
            raise OwnershipError(f"report --out {target}: is inside the dataset {root}; write the page elsewhere")
    parent = uri.rsplit("/", 1)[0]
    while parent.split("://", 1)[1].strip("/"):
        if exists(join(parent, MANIFEST)) or exists(join(parent, OWNER)):
            raise OwnershipError(f"report --out {target}: is inside the dataset {parent}; write the page elsewhere")
        parent = parent.rsplit("/", 1)[0]
    if exists(uri) and not force:
        try:
            head = read_head(uri, 4096)
        except BadInput as err:
            raise OwnershipError(f"report --out {target}: {err.reason}") from err
        if GENERATOR.encode() not in head:
            raise OwnershipError(f"report --out {target}: exists and is not a report page; "
                                 "choose another name, or pass --force to overwrite it")
    return uri


# --------------------------------------------------------------------------- deleting


def _ledger(out: str) -> tuple[set[str], set[str]]:
    """(listed by earlier manifests, intended by publishing), each entry checked."""
    try:
        raw = _read_record(join(out, LEDGER)) or {}
    except BadInput:
        return set(), set()  # unreadable: delete nothing rather than guess

    def paths(key: str) -> set[str]:
        items = raw.get(key) if isinstance(raw.get(key), list) else []
        ok = set()
        for rel in items:
            try:
                inside(out, rel, join(out, LEDGER))
            except BadInput:
                continue
            if _PUBLISHED.fullmatch(rel):
                ok.add(rel)
        return ok

    return paths("listed"), paths("intended")


def _write_ledger(out: str, listed: set[str], intended: set[str]) -> None:
    write_bytes(join(out, LEDGER), json_bytes({"listed": sorted(listed), "intended": sorted(intended)}))


def intend(out: str, paths) -> None:
    """Before publishing places files: note them, so a run killed before its manifest
    leaves nothing that a later run may not clean up."""
    listed, intended = _ledger(out)
    new = {p for p in paths if _PUBLISHED.fullmatch(p)} - listed - intended
    if new:
        _write_ledger(out, listed, intended | new)


def remember_previous(out: str) -> None:
    """Before a new manifest replaces the current one: add what the current one lists to
    the record (datasets published before the record existed)."""
    try:
        previous = read_manifest(out)
    except BadInput:
        return
    listed, intended = _ledger(out)
    new = {p for p in previous.files if _PUBLISHED.fullmatch(p)} - listed
    if new:
        _write_ledger(out, listed | new, intended)


def deletable(out: str, manifest: Manifest) -> list[str]:
    """Files publishing may delete now that `manifest` is written (URIs)."""
    listed, intended = _ledger(out)
    return [join(out, rel) for rel in sorted((listed | intended) - set(manifest.files))]


def record(out: str, manifest: Manifest) -> None:
    """After deleting: the current manifest's files are what a later run may delete."""
    _write_ledger(out, {p for p in manifest.files if _PUBLISHED.fullmatch(p)}, set())
