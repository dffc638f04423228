"""Reading a published dataset as untrusted data: bounded, checked, paths kept inside.

A dataset folder may come from anyone (a copied dataset, a shared bucket prefix), so what
`verify`, `report` and the factory itself read from it is checked before use (DESIGN.md §4,
hostile input): each file is read with a size limit, JSON is parsed with a depth limit,
every path a manifest or a record names must be a plain relative path inside the dataset
(`storage.inside`), and every failure is a `BadInput` naming the file and what is wrong,
never a traceback.
"""

from __future__ import annotations

import json
import os

from pydantic import ValidationError

from gen4gen.infra.errors import BadInput
from gen4gen.infra.records import CompositionStats, Manifest, Sample
from gen4gen.infra.storage import inside, join, read_bytes, resolve, sha256

MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = int(os.environ.get("GEN4GEN_MAX_MANIFEST_BYTES", 64 * 2**20))
MAX_SHARD_BYTES = int(os.environ.get("GEN4GEN_MAX_SHARD_BYTES", 256 * 2**20))
MAX_JSON_DEPTH = 32  # our records nest 5 deep


def _depth(value) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, d = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, d)
            stack.extend((v, d + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def load_json(data: bytes, name: str, max_depth: int = MAX_JSON_DEPTH, object_pairs_hook=None):
    """JSON from bytes: BadInput (code `malformed`) naming `name` for anything unusable.
    `object_pairs_hook`: json.loads's (a dict subclass keeps the depth check working)."""
    try:
        value = json.loads(data.decode("utf-8-sig"), object_pairs_hook=object_pairs_hook)
    except UnicodeDecodeError as err:
        raise BadInput(name, f"not UTF-8 text (byte {err.start})", code="malformed") from err
    except RecursionError as err:
        raise BadInput(name, f"JSON nested over {max_depth} levels deep", code="malformed") from err
    except ValueError as err:  # JSONDecodeError, and the int-digits limit
        raise BadInput(name, f"not valid JSON: {err}", code="malformed") from err
    if _depth(value) > max_depth:
        raise BadInput(name, f"JSON nested over {max_depth} levels deep", code="malformed")
    return value


def _errors(err: ValidationError, limit: int = 3) -> str:
    shown = [f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in err.errors()[:limit]]
    more = len(err.errors()) - limit
    return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")


def read_manifest(out: str, expect_sha256: str | None = None) -> Manifest:
    """The dataset's manifest, whole and with every path it names inside the dataset.
    `expect_sha256`: the manifest's bytes must have this sha256 (the version a checkpoint
    was trained on), else BadInput `changed` (the folder was published again since)."""
    uri = join(resolve(out), MANIFEST)
    data = read_bytes(uri, limit=MAX_MANIFEST_BYTES)
    if expect_sha256 is not None and sha256(data) != expect_sha256:
        raise BadInput(uri, f"is no longer the version {expect_sha256[:12]}", code="changed")
    raw = load_json(data, uri)
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as err:
        raise BadInput(uri, f"not a manifest of this project: {_errors(err)}", code="malformed") from err
    check_manifest_paths(out, manifest)
    return manifest


def dataset_label(out: str, expect_sha256: str | None = None) -> tuple[str, str] | None:
    """(name, version) from the dataset's manifest, for labels and lineage; None when it
    cannot be read here, or is not the expected version any more (`read_manifest`)."""
    try:
        m = read_manifest(out, expect_sha256)
    except Exception:  # a label: whoever needs the dataset itself reads it and fails with the reason
        return None
    return m.dataset, m.version


def check_manifest_paths(out: str, manifest: Manifest) -> None:
    """Refuse a manifest naming any path outside the dataset (`../`, absolute, a URI)."""
    where = join(resolve(out), MANIFEST)
    for rel in manifest.files:
        inside(out, rel, f"{where}: files")
    for name, copy in manifest.index.items():
        inside(out, name, f"{where}: index")
        inside(out, copy, f"{where}: index[{name!r}]")
    for st in manifest.compositions:
        inside(out, st.shard, f"{where}: {st.composition}.shard")
        for rel in st.images:
            inside(out, rel, f"{where}: {st.composition}.images")


def read_shard(out: str, stats: CompositionStats) -> list[Sample]:
    """A composition's samples, read through its manifest entry: path inside the dataset,
    bounded size, the recorded hash, one valid record per line with inside paths."""
    return read_samples(out, stats.shard, stats.shard_sha256, stats.composition, "shard")


def read_samples(out: str, path: str, sha: str, composition: str, what: str) -> list[Sample]:
    """Sample records, one per line, of one composition (a shard, or the set a stage task
    handed on), checked as read_shard says."""
    uri = inside(out, path, f"{composition}: {what}")
    data = read_bytes(uri, limit=MAX_SHARD_BYTES)
    if sha256(data) != sha:
        raise BadInput(uri, "does not match the hash its composition recorded", code="changed")
    samples = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        raw = load_json(line, f"{uri}: line {number}")
        try:
            sample = Sample.model_validate(raw)
        except ValidationError as err:
            raise BadInput(uri, f"line {number}: not a sample record: {_errors(err)}", code="malformed") from err
        if sample.composition != composition:
            raise BadInput(uri, f"line {number}: sample of {sample.composition!r} in {composition!r}'s {what}",
                           code="malformed")
        for stage, rel in sample.paths.items():
            inside(out, rel, f"{uri}: line {number}: paths.{stage}")
        samples.append(sample)
    return samples


BACKGROUND_VERDICTS = ".cache/background"  # tasks/plan.py: vet_pool writes one per photo and detector
MAX_VERDICT_BYTES = 64 * 2**10


def background_verdicts(out: str, photos: set[str]) -> dict[str, str]:
    """Background photo -> why the class checks left it out, from the verdicts planning kept
    beside the dataset; only photos of the recipe (`photos`) are named, whatever a file says."""
    from gen4gen.infra.storage import list_files

    found: dict[str, str] = {}
    try:
        uris = list_files(join(out, BACKGROUND_VERDICTS))
    except (BadInput, FileNotFoundError):
        return found
    for uri in uris:
        if not uri.endswith(".json"):
            continue
        try:
            verdict = load_json(read_bytes(uri, limit=MAX_VERDICT_BYTES), uri)
        except (BadInput, ValueError):
            continue  # a damaged verdict is asked again by the next run
        if isinstance(verdict, dict) and verdict.get("photo") in photos and isinstance(verdict.get("why"), str):
            found[verdict["photo"]] = verdict["why"]
    return found
