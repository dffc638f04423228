"""Model files fetched on request: IS-Net (DIS), the paper's segmenter, as ONNX.

The weights come from the npm package `@imgly/background-removal-data@1.4.5` (136 MB), the
one place they are published as plain files: `npm pack` of that pinned version into a
temporary folder, or a tarball the user copied in (`--from`, for machines without npm or a
network). In the tarball `package/dist/resources.json` maps `/models/medium` and
`/models/small` to chunks named by their sha256 (files in `package/dist/`) with their byte
offsets; the chunks, in order, are the ONNX file. Each chunk is checked against its name and
offsets, the whole against the digest pinned here, and only then is it stored, atomically,
as `isnet-<size>.onnx` in `weights_dir()` (`$GEN4GEN_CACHE/weights`, default
`~/.cache/gen4gen/weights`).

The tarball is read as untrusted input (models/npm.py, shared with NanoDet's fetch): one
streamed pass per read, only the members needed, regular files only (no link is followed),
every member's name checked to stay inside `package/`, sizes bounded.

`resolve_segment` turns the recipe's segment stage into the one that runs (`auto` -> `isnet`
or `offline`) and puts the weights file's sha256 into an `isnet` stage's options, so the
mask cache key (tasks/segment.py hashes the options) changes with the weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from pydantic import Field

from gen4gen.infra.records import DatasetConfig, StageConfig
from gen4gen.models import npm
from gen4gen.models.npm import (MAX_MEMBERS, MAX_TARBALL_BYTES, WeightsError, WeightsMissing,  # noqa: F401
                                 cache_root, file_sha256, weights_dir)
from gen4gen.models.options import Options, parse

# The isnet backend's options (models/segment/isnet.py), here so that resolving them needs no
# model code: isnet imports this module, never the other way round.
WHAT = "stages.segment (isnet)"


class IsNetOptions(Options):
    weights: str | None = Field(default=None, description="a local IS-Net ONNX file (absolute, or relative "
                                "to the recipe's folder); default: the fetched model of `size`")
    size: Literal["medium", "small"] = Field(default="medium", description="which fetched model")
    threads: int | None = Field(default=None, ge=1, le=1024,
                                description="CPU threads; default: the worker's share")
    feather: float = Field(default=2.0, ge=0, le=64, description="Gaussian sigma of the soft edge, in pixels")
    weights_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$",
                                       description="the weights file's digest (set when the run is planned)")


def parse_options(options: dict) -> IsNetOptions:
    return parse(IsNetOptions, options, WHAT)


PACKAGE = "@imgly/background-removal-data"
PACKAGE_VERSION = "1.4.5"
SOURCE = f"npm package {PACKAGE}@{PACKAGE_VERSION}"
TARBALL = f"imgly-background-removal-data-{PACKAGE_VERSION}.tgz"  # the name `npm pack` gives it
FETCH_COMMAND = "gen4gen weights fetch isnet"
NPM_SECONDS = 900  # `npm pack` of 136 MB; a stuck registry must not hang the command


@dataclass(frozen=True)
class Pinned:
    """One model file as published: what it is called here, where it is in the package, and
    the bytes it must be."""

    size: str
    resource: str  # key in resources.json
    bytes: int
    sha256: str

    @property
    def filename(self) -> str:
        return f"isnet-{self.size}.onnx"


ISNET = {
    "medium": Pinned("medium", "/models/medium", 88_188_479,
                     "b6e8497ba978a6f5fbb647e419d2696cd80df5a23cb6a8ea532021911bd76acb"),
    "small": Pinned("small", "/models/small", 44_342_436,
                    "7001d60734fdc112dd9c062635fb59cd401fb82a9d4213134bce4dbd655c803a"),
}
SIZES = tuple(ISNET)

# Bounds on what a tarball may make us read: a chunk is 4 MiB in the real package.
MAX_META_BYTES = 4 << 20  # resources.json, the licence files
MAX_CHUNK_BYTES = 64 << 20
MAX_MODEL_BYTES = 512 << 20
# The tarball as a whole is bounded by models/npm.py (MAX_TARBALL_BYTES, MAX_MEMBERS).
_HEX64 = re.compile(r"[0-9a-f]{64}")
_META = {"package/dist/resources.json", "package/ThirdPartyLicenses.json", "package/LICENSE.md",
         "package/package.json"}


# --------------------------------------------------------------------------- where


def weights_path(size: str = "medium", env: dict[str, str] | None = None) -> Path:
    """Where `gen4gen weights fetch isnet --size SIZE` stores the model."""
    return weights_dir(env) / _pinned(size).filename


def _pinned(size: str) -> Pinned:
    if size not in ISNET:
        raise WeightsError(f"isnet size {size!r}: known sizes are {', '.join(SIZES)}")
    return ISNET[size]


def missing_message(path: Path | str, size: str = "medium", own: bool = False) -> str:
    if own:
        return f"stages.segment (isnet): weights file {path} does not exist (option 'weights')"
    flag = "" if size == "medium" else f" --size {size}"
    return (f"stages.segment (isnet): no weights at {path}; fetch them with `{FETCH_COMMAND}{flag}` "
            f"(or `--from TARBALL` of {TARBALL} on a machine without npm)")


# --------------------------------------------------------------------------- resolve


def resolve_segment(stage: StageConfig, env: dict[str, str] | None = None) -> tuple[StageConfig, str | None]:
    """The segment stage that runs, and a warning to show on the run (or None).

    `auto` (the default) is `isnet` on the fetched medium model, else on the fetched small
    one, else `offline` with a warning naming the command that fetches the weights. A file
    found there is used and its digest recorded whether or not it is the pinned one (a file
    put there by hand is the user's choice); one that is not gets a warning. `isnet` gets
    `weights_sha256` (its file's digest) in its options: the cache key then follows the
    weights, whatever path they are at. Other backends are returned unchanged. Pure but for
    reading the weights files: call it once per run, before any key is made.
    """
    if stage.backend == "auto":
        if stage.options:
            raise WeightsError(
                f"stages.segment.options = {stage.options!r}: backend 'auto' takes no options "
                "(it picks isnet or offline); name the backend to give it options")
        for size in SIZES:
            path = weights_path(size, env)
            if path.is_file():
                options = {} if size == "medium" else {"size": size}
                return resolve_segment(StageConfig(backend="isnet", options=options), env)
        return StageConfig(backend="offline"), (
            "segment: IS-Net weights not found, so the offline segmenter (GrabCut) cuts the objects "
            f"out; its cut-outs often carry background. `{FETCH_COMMAND}` makes them better "
            "(88 MB, once)")
    if stage.backend != "isnet":
        return stage, None
    opts = parse_options(stage.options)
    path = weights_file(opts.weights, opts.size, env)
    digest = file_sha256(path)
    if opts.weights_sha256 and opts.weights_sha256 != digest:
        raise WeightsError(
            f"stages.segment (isnet): weights file {path} has sha256 {digest}, the recipe's "
            f"weights_sha256 is {opts.weights_sha256}")
    note = None
    pin = ISNET[opts.size]
    if opts.weights is None and digest != pin.sha256:
        note = (f"segment: {path} is not the pinned IS-Net {opts.size} model (sha256 {digest}, "
                f"expected {pin.sha256}); it is used as it is. `{FETCH_COMMAND}` replaces it")
    return stage.model_copy(update={"options": {**stage.options, "weights_sha256": digest}}), note


def weights_file(weights: str | None, size: str = "medium", env: dict[str, str] | None = None) -> Path:
    """The ONNX file an isnet stage loads: the user's own (`weights`), or the fetched one of
    `size`. Missing: WeightsMissing naming the path (and the fetch command)."""
    path = Path(weights).expanduser() if weights else weights_path(size, env)
    if not path.is_file():
        raise WeightsMissing(missing_message(path, size, own=weights is not None))
    return path


def resolve_config(config: DatasetConfig, env: dict[str, str] | None = None) -> tuple[DatasetConfig, list[str]]:
    """The recipe with its segment stage resolved (`resolve_segment`), and the warnings."""
    stage, note = resolve_segment(config.stages.segment, env)
    if stage != config.stages.segment:
        stages = config.stages.model_copy(update={"segment": stage})
        config = config.model_copy(update={"stages": stages})
    return config, [note] if note else []


def as_run(config: DatasetConfig) -> DatasetConfig:
    """A recipe as a run resolved it: one still saying `segment: auto` (a caller that did
    not resolve it) is resolved now; any other is returned as it is."""
    return resolve_config(config)[0] if config.stages.segment.backend == "auto" else config


def describe_segmenter(stage: StageConfig) -> dict[str, str]:
    """What cut the objects out, for the manifest and the card: the backend and, for isnet,
    the model file's name and sha256 (as the resolved options hold them)."""
    out = {"backend": stage.backend}
    if stage.backend == "isnet":
        weights = stage.options.get("weights")
        size = str(stage.options.get("size", "medium"))
        out["model"] = Path(str(weights)).name if weights else ISNET.get(size, ISNET["medium"]).filename
        if stage.options.get("weights_sha256"):
            out["model_sha256"] = str(stage.options["weights_sha256"])
    return out


# --------------------------------------------------------------------------- fetch


@dataclass
class Fetched:
    path: Path
    size: str
    bytes: int
    sha256: str
    source: str
    licences: dict[str, str] = field(default_factory=dict)  # what the package's files say


def fetch_isnet(size: str = "medium", tarball: str | Path | None = None, *, expected: Pinned | None = None,
                dest: Path | None = None, say: Callable[[str], None] = print,
                npm_seconds: float = NPM_SECONDS) -> Fetched:
    """Fetch the IS-Net model of `size` into `dest` (default `weights_dir()`), checked
    against `expected` (default: the pinned file of that size). From `tarball`, or from
    `npm pack` of the pinned package version into a temporary folder. Raises WeightsError
    (nothing stored) when npm is missing or fails, the tarball is not the package's layout,
    a chunk differs from its name or offsets, or the result is not the expected file."""
    pin = expected or _pinned(size)
    dest = Path(dest) if dest is not None else weights_dir()
    with tempfile.TemporaryDirectory(prefix="gen4gen-weights-") as tmp:
        work = Path(tmp)
        if tarball is None:
            source_tgz = _npm_pack(work, say, npm_seconds)
            source = f"{SOURCE} (npm pack)"
        else:
            source_tgz = Path(tarball).expanduser()
            if not source_tgz.is_file():
                raise WeightsError(f"--from {tarball}: no such file")
            source = f"{SOURCE}, tarball {source_tgz.resolve()}"
        meta = npm.read_members(source_tgz, lambda name: name in _META, work / "meta", MAX_META_BYTES)
        if "package/dist/resources.json" not in meta:
            raise WeightsError(f"{source_tgz}: no package/dist/resources.json; not the {PACKAGE} tarball")
        chunks = _chunks(meta["package/dist/resources.json"], pin.resource, source_tgz)
        wanted = {f"package/dist/{c}" for c, _ in chunks}
        parts = npm.read_members(source_tgz, lambda name: name in wanted, work / "chunks", MAX_CHUNK_BYTES)
        dest.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkstemp(dir=dest, prefix=f".{pin.filename}.", suffix=".part")[1])
        try:
            digest, total = _assemble(chunks, parts, partial, source_tgz)
            if total != pin.bytes or digest != pin.sha256:
                raise WeightsError(
                    f"{source}: the assembled {pin.resource} is {total} bytes with sha256 {digest}; "
                    f"expected {pin.bytes} bytes with sha256 {pin.sha256}. Nothing was stored")
            target = dest / pin.filename
            os.replace(partial, target)  # atomic: a reader sees the old file or the whole new one
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        licences = _licences(meta)
    say(f"stored {target} ({total:,} bytes, sha256 {digest})")
    say(f"from {source}")
    package = f"AGPL-3.0 (LICENSE.md: {licences.get('package') or 'missing'})"
    model = f"ISNET {licences.get('model') or 'MIT (https://github.com/xuebinqin/DIS)'} (ThirdPartyLicenses.json)"
    say(f"licence: the npm package {package}; the model {model}")
    return Fetched(target, pin.size, total, digest, source, licences)


def _npm_pack(work: Path, say: Callable[[str], None], seconds: float) -> Path:
    return npm.npm_pack(f"{PACKAGE}@{PACKAGE_VERSION}", work, say, seconds, what="136 MB",
                        fetch_command=FETCH_COMMAND, tarball=TARBALL)


def _chunks(resources: Path, key: str, tgz: Path) -> list[tuple[str, tuple[int, int]]]:
    """(chunk name, (start, end)) in order, checked to tile the resource from 0 to its size."""
    try:
        table = json.loads(resources.read_bytes())
        entry = table[key]
        size = int(entry["size"])
        chunks = [(str(c["hash"]), (int(c["offsets"][0]), int(c["offsets"][1]))) for c in entry["chunks"]]
    except (ValueError, KeyError, TypeError, IndexError) as err:
        raise WeightsError(f"{tgz}: resources.json has no usable entry {key!r} "
                           f"({type(err).__name__}: {err})") from None
    at = 0
    for name, (start, end) in chunks:
        if not _HEX64.fullmatch(name):
            raise WeightsError(f"{tgz}: resources.json names chunk {name!r}, not a sha256")
        if start != at or end <= start:
            raise WeightsError(f"{tgz}: resources.json: chunk {name} covers {start}-{end}, "
                               f"expected to start at {at}")
        at = end
    if at != size or size > MAX_MODEL_BYTES:
        raise WeightsError(f"{tgz}: resources.json: {key} chunks end at {at}, its size is {size}")
    return chunks


def _assemble(chunks: list[tuple[str, tuple[int, int]]], parts: dict[str, Path], target: Path,
              tgz: Path) -> tuple[str, int]:
    whole = hashlib.sha256()
    total = 0
    with target.open("wb") as out:
        for name, (start, end) in chunks:
            path = parts.get(f"package/dist/{name}")
            if path is None:
                raise WeightsError(f"{tgz}: chunk package/dist/{name} is missing")
            data = path.read_bytes()
            if len(data) != end - start:
                raise WeightsError(f"{tgz}: chunk {name} is {len(data)} bytes, its offsets say {end - start}")
            if hashlib.sha256(data).hexdigest() != name:
                raise WeightsError(f"{tgz}: chunk {name}'s bytes do not match its name (sha256 "
                                   f"{hashlib.sha256(data).hexdigest()}); refused")
            whole.update(data)
            out.write(data)
            total += len(data)
        out.flush()
        os.fsync(out.fileno())
    return whole.hexdigest(), total


def _licences(meta: dict[str, Path]) -> dict[str, str]:
    """What the package's own files say: LICENSE.md's title, ThirdPartyLicenses.json's ISNET."""
    found: dict[str, str] = {}
    lic = meta.get("package/LICENSE.md")
    if lic is not None:
        lines = lic.read_text("utf-8", "replace").splitlines()
        first = next((ln.strip("# ").strip() for ln in lines if ln.strip()), "")
        found["package"] = first
    third = meta.get("package/ThirdPartyLicenses.json")
    if third is not None:
        try:
            isnet = json.loads(third.read_bytes()).get("ISNET", {})
            found["model"] = f"{isnet.get('license', '?')} ({isnet.get('source', '?')})"
        except (ValueError, AttributeError):
            pass
    return found


# --------------------------------------------------------------------------- list


@dataclass
class Present:
    name: str
    path: Path
    bytes: int | None  # None: not there
    sha256: str | None
    pinned: Pinned

    @property
    def matches(self) -> bool:
        return self.sha256 == self.pinned.sha256 and self.bytes == self.pinned.bytes


def present(env: dict[str, str] | None = None) -> list[Present]:
    """Each known model file: where it goes, and its size and digest when it is there."""
    rows = []
    for size, pin in ISNET.items():
        path = weights_path(size, env)
        there = path.is_file()
        rows.append(Present(f"isnet {size}", path, path.stat().st_size if there else None,
                            file_sha256(path) if there else None, pin))
    return rows

