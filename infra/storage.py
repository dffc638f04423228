"""All bytes in and out of the factory go through here, over fsspec URLs.

`file://` (or a plain path) is the embedded default, `s3://` works with the same code
(s3fs; endpoint and credentials from the environment). `pkgdata://PACKAGE/PATH` reads a
file shipped inside an installed Python package (the demo's photos), found without
importing the package. Other schemes are refused (`SCHEMES`).

Every read is bounded (DESIGN.md §4, hostile input): in size (`limit`, read with a limit,
never whole), in time (`READ_TIMEOUT`), and to regular files (a FIFO or a device is
refused before it is opened for reading). A permanent fault (missing, too large, not a file,
a symlink loop, an unknown scheme) is a `BadInput` and is never retried; only network and
storage faults are.

Writes are atomic: a reader sees the old bytes or the new bytes, never half a file. On a
local disk that is a write to a temporary name and a rename; an S3 PUT is atomic already.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import io
import os
import posixpath
import random
import re
import stat
import threading
import time
import uuid
import warnings
from pathlib import Path

import fsspec
import numpy as np
from PIL import Image, ImageOps

from gen4gen.infra.errors import BadInput

# A decompression bomb is refused before decoding: 64 megapixels is far above any photo
# a concept needs and far below what would exhaust memory.
MAX_PIXELS = 64_000_000
# A strip 1000 pixels wide and 10 high is not a photo of an object; no box can hold it.
MAX_ASPECT = 20.0
# Only these formats are decoded (JPEG covers MPO, what phones write): Pillow's other plugins (EPS runs Ghostscript, and the
# rarely used ones are where decoder bugs live) are never reached by data we are given.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")


def _env_number(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


# Limits; each a module constant with an environment override (README "What survives what").
MAX_READ_BYTES = int(_env_number("GEN4GEN_MAX_READ_BYTES", 512 * 2**20))  # any one object
MAX_PHOTO_BYTES = int(_env_number("GEN4GEN_MAX_PHOTO_BYTES", 64 * 2**20))  # a source photo
READ_TIMEOUT = _env_number("GEN4GEN_READ_TIMEOUT", 60.0)  # seconds for one read request
# URI schemes the factory reads and writes; anything else is a bad input, not a crash.
# GEN4GEN_EXTRA_SCHEMES: file systems a deployment registers with fsspec itself (and the
# tests' fault-injecting one); read and written like s3.
_EXTRA = tuple(filter(None, os.environ.get("GEN4GEN_EXTRA_SCHEMES", "").split(",")))
SCHEMES = ("file", "s3", "pkgdata", *_EXTRA)
OUTPUT_SCHEMES = ("file", "s3", *_EXTRA)
_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def resolve(uri: str) -> str:
    """Normalise a URI: plain paths become absolute file:// URLs, pkgdata:// becomes a path."""
    if not isinstance(uri, str) or not uri or "\x00" in uri:
        raise BadInput(ascii(uri), "not a usable URI", code="bad_uri")
    if uri.startswith("pkgdata://"):
        return "file://" + _package_file(uri)
    if "://" not in uri:
        try:
            return "file://" + str(Path(uri).expanduser().resolve())
        except (RuntimeError, OSError):  # a symlink loop: the read names it
            return "file://" + os.path.abspath(os.path.expanduser(uri))
    return uri


def _package_file(uri: str) -> str:
    """The path of pkgdata://PACKAGE[.SUB]/PATH, found without importing anything.

    Only the top-level package is looked up (importlib.util.find_spec on a name without a
    dot locates it and runs none of its code; a dotted name would import the parents), and
    SUB and PATH are folders below it: the file must stay inside the package's folder.
    """
    package, _, rel = uri[len("pkgdata://") :].partition("/")
    parts = package.split(".")
    if not all(p.isidentifier() for p in parts) or not rel:
        raise BadInput(uri, "expected pkgdata://PACKAGE/PATH with a Python package name", code="bad_uri")
    try:
        spec = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError) as err:
        raise BadInput(uri, f"package {parts[0]!r} cannot be located: {err}", code="bad_uri") from err
    if spec is None or not spec.submodule_search_locations:
        raise BadInput(uri, f"package {package!r} is not installed")
    root = os.path.realpath(list(spec.submodule_search_locations)[0])
    path = os.path.realpath(os.path.join(root, *parts[1:], rel))
    if os.path.commonpath([root, path]) != root:
        raise BadInput(uri, f"path {rel!r} leaves the package's folder", code="path_escape")
    return path


def local_path(uri: str) -> str | None:
    """The local file system path of a file:// URI (or plain path); None for remote URIs."""
    uri = resolve(uri)
    return uri[len("file://") :] if uri.startswith("file://") else None


def join(base: str, *parts: str) -> str:
    """Join a URI and relative parts with '/', on any protocol."""
    base = base.rstrip("/")
    return "/".join([base, *(p.strip("/") for p in parts)])


def relative(uri: str, base: str) -> str:
    """The part of `uri` below `base` (both resolved), e.g. 'comp/image/s1.png'."""
    uri, base = resolve(uri), resolve(base).rstrip("/") + "/"
    if not uri.startswith(base):
        raise ValueError(f"{uri} is not below {base}")
    return uri[len(base) :]


def scheme(uri: str) -> str:
    return resolve(uri).split("://", 1)[0].lower()


def _fs(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    resolved = resolve(uri)
    proto = resolved.split("://", 1)[0].lower()
    if proto not in SCHEMES:
        raise BadInput(uri, f"unknown URI scheme {proto!r}; accepted: {', '.join(SCHEMES)}", code="bad_uri")
    if proto == "s3" and not _S3_BUCKET.fullmatch(resolved[5:].split("/", 1)[0]):
        raise BadInput(uri, "an s3:// URI needs a bucket name: s3://BUCKET/PREFIX", code="bad_uri")
    try:
        fs, path = fsspec.core.url_to_fs(resolved)
    except (ValueError, ImportError) as err:
        raise BadInput(uri, f"cannot be opened: {err}", code="bad_uri") from err
    return fs, path


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec file system and path of a URI, its scheme checked (see `SCHEMES`)."""
    return _fs(uri)


def check_output(uri: str) -> str:
    """The resolved dataset URI, or a ValueError saying why it cannot hold a dataset
    (`--out s3://` without a bucket, an unknown scheme)."""
    try:
        resolved = resolve(uri)
        if resolved.split("://", 1)[0].lower() not in OUTPUT_SCHEMES:
            raise BadInput(uri, f"a dataset goes to a folder or s3://BUCKET/PREFIX; accepted: {', '.join(OUTPUT_SCHEMES)}", code="bad_uri")
        _fs(resolved)
    except BadInput as err:
        raise ValueError(f"--out {uri!r}: {err.reason}") from err
    return resolved.rstrip("/")


def inside(root: str, rel: object, what: str) -> str:
    """`root` joined with `rel`, where rel was read from a record or a manifest: it must be
    a plain relative path below root ('a/b.png'), never absolute, a URI, '..' or odd."""
    bad = (
        not isinstance(rel, str) or not rel or len(rel) > 1024 or rel.startswith("/")
        or "://" in rel or "\\" in rel or any(ord(ch) < 32 for ch in rel)
        or any(part in ("", ".", "..") for part in rel.split("/"))
    )
    if bad:
        raise BadInput(what, f"path {ascii(rel)[:200]} is not a relative path inside {root}", code="path_escape")
    return join(root, rel)


# --------------------------------------------------------------------------- retries

_PERMANENT = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError)
# OSErrors that no retry fixes: a loop, a bad name, a full or read-only disk.
_PERMANENT_ERRNOS = {
    errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.ELOOP,
    errno.ENAMETOOLONG, errno.EINVAL, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS,
    errno.EEXIST, errno.ENXIO, errno.ENODEV,
}


def is_transient(err: BaseException) -> bool:
    """A fault worth retrying: the network, a timeout, a throttled or unavailable store."""
    if isinstance(err, (BadInput, *_PERMANENT)):
        return False
    if isinstance(err, OSError) and err.errno in _PERMANENT_ERRNOS:
        return False
    if isinstance(err, (ConnectionError, TimeoutError, OSError)):
        return True  # s3fs and aiohttp report failed requests as OSError subclasses
    name = type(err).__name__
    return any(k in name for k in ("Connection", "Timeout", "Throttl", "SlowDown", "Unavailable"))


def _retrying(fn, uri: str):
    """Call fn, retrying transient faults with exponential backoff and jitter.

    Storage calls retry here, one request at a time; only a fault that outlasts these
    retries fails the stage, which Prefect then retries as a whole.
    """
    attempts = int(os.environ.get("GEN4GEN_IO_RETRIES", "5"))
    backoff = float(os.environ.get("GEN4GEN_IO_BACKOFF", "0.2"))
    for attempt in range(attempts + 1):
        try:
            return fn()
        except Exception as err:
            if attempt == attempts or not is_transient(err):
                raise
            time.sleep(backoff * (2**attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def exists(uri: str) -> bool:
    fs, path = _fs(uri)
    return _retrying(lambda: fs.exists(path), uri)


def _too_large(uri: str, size: int, limit: int) -> BadInput:
    return BadInput(uri, f"{size:,} bytes or more is over the {limit:,} byte limit", code="too_large")


def _with_deadline(fn, seconds: float, uri: str):
    """fn() in a helper thread, or TimeoutError (transient) when it has not returned in
    time: a stuck read (a hung mount, a server that never answers) cannot hang the run."""
    box: dict = {}

    def call():
        try:
            box["value"] = fn()
        except BaseException as err:  # handed to the caller's thread
            box["error"] = err

    worker = threading.Thread(target=call, name="gen4gen-read", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise TimeoutError(f"{uri}: no answer in {seconds:g} s (GEN4GEN_READ_TIMEOUT)")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _read_local(path: str, uri: str, limit: int) -> bytes:
    # stat before open: opening a FIFO blocks and opening some devices does things.
    try:
        st = os.stat(path)
    except FileNotFoundError as err:
        raise BadInput(uri, "not found") from err
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise BadInput(uri, "a symbolic link loop", code="bad_uri") from err
        if err.errno in (errno.ENOTDIR, errno.ENAMETOOLONG):
            raise BadInput(uri, f"not a usable path: {err.strerror}", code="bad_uri") from err
        raise
    if not stat.S_ISREG(st.st_mode):
        if stat.S_ISDIR(st.st_mode):
            raise BadInput(uri, "is a folder, not a file", code="not_a_file")
        raise BadInput(uri, f"is {_kind(st.st_mode)}, not a regular file", code="not_a_file")
    if st.st_size > limit:
        raise _too_large(uri, st.st_size, limit)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as err:
        raise BadInput(uri, "not found") from err
    except PermissionError as err:
        raise BadInput(uri, "permission denied", code="unreadable") from err
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # swapped between stat and open
            raise BadInput(uri, "is not a regular file", code="not_a_file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise _too_large(uri, len(data), limit)
    return data


def _read_remote(fs: fsspec.AbstractFileSystem, path: str, uri: str, limit: int) -> bytes:
    try:
        info = fs.info(path)
    except FileNotFoundError as err:
        raise BadInput(uri, "not found") from err
    if info.get("type") != "file":
        raise BadInput(uri, f"is a {info.get('type', 'non-file')}, not a file", code="not_a_file")
    if (info.get("size") or 0) > limit:
        raise _too_large(uri, info["size"], limit)
    try:
        data = fs.cat_file(path, start=0, end=limit + 1)
    except FileNotFoundError as err:
        raise BadInput(uri, "not found") from err
    if len(data) > limit:
        raise _too_large(uri, len(data), limit)
    return data


def read_bytes(uri: str, limit: int | None = None, timeout: float | None = None) -> bytes:
    """Read an object of at most `limit` bytes (default MAX_READ_BYTES), each request within
    `timeout` seconds (default READ_TIMEOUT). A missing, oversized or non-regular object is
    a bad input; transient faults are retried."""
    limit = MAX_READ_BYTES if limit is None else limit
    timeout = READ_TIMEOUT if timeout is None else timeout
    fs, path = _fs(uri)
    local = local_path(uri)
    if local is not None:
        one = lambda: _read_local(local, uri, limit)  # noqa: E731
    else:
        one = lambda: _read_remote(fs, path, uri, limit)  # noqa: E731
    try:
        return _retrying(lambda: _with_deadline(one, timeout, uri), uri)
    except IsADirectoryError as err:
        raise BadInput(uri, "is a folder, not a file", code="not_a_file") from err


def read_head(uri: str, n: int) -> bytes:
    """The first `n` bytes of a regular file (however large it is), within READ_TIMEOUT."""
    fs, path = _fs(uri)
    local = local_path(uri)

    def head() -> bytes:
        if local is not None:
            st = os.stat(local)
            if not stat.S_ISREG(st.st_mode):
                raise BadInput(uri, f"is {_kind(st.st_mode)}, not a regular file", code="not_a_file")
            with open(local, "rb") as f:
                return f.read(n)
        with fs.open(path, "rb") as f:
            return f.read(n)

    return _retrying(lambda: _with_deadline(head, READ_TIMEOUT, uri), uri)


def read_input(uri: str, limit: int | None = None, timeout: float | None = None) -> bytes:
    """Read a source input (a photo, at most MAX_PHOTO_BYTES): one that stays unreachable
    after the retries is a bad input of that sample (code `unreachable`), not a failure of
    the whole run; a permanent fault (bad scheme, loop, type, size) is one at once."""
    try:
        return read_bytes(uri, MAX_PHOTO_BYTES if limit is None else limit, timeout)
    except BadInput:
        raise
    except Exception as err:
        if is_transient(err):
            raise BadInput(uri, f"unreachable after retries: {type(err).__name__}: {err}", code="unreachable") from err
        raise


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole object atomically (temporary name + rename on local disks)."""
    fs, path = _fs(uri)
    _retrying(lambda: _write(fs, path, data), uri)


def _write(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    if "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as err:
            # A full disk or an interrupt leaves no half-written temporary file behind.
            try:
                os.remove(tmp)
            except OSError:
                pass
            if isinstance(err, OSError) and not err.filename:
                # f.write() names no file: a full disk must say where (flows/cli.py: _cause).
                raise OSError(err.errno, err.strerror or str(err), path) from err
            raise
    else:
        fs.pipe_file(path, data)


def signed_url(uri: str, seconds: int) -> str | None:
    """An HTTP(S) URL a browser can open for a stored object (presigned on S3), or None
    where the store has no such thing (a local disk)."""
    fs, path = _fs(uri)
    try:
        return fs.sign(path, expiration=seconds)
    except NotImplementedError:
        return None


def remove(uri: str) -> None:
    fs, path = _fs(uri)
    _retrying(lambda: fs.rm_file(path), uri)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str) -> str:
    """sha256 of a local file, read in 1 MiB blocks (weights and shards do not fit in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def list_files(uri: str) -> list[str]:
    """Every file below a URI, as URIs with the same protocol."""
    fs, path = _fs(uri)
    if not exists(uri):
        return []
    proto = resolve(uri).split("://", 1)[0]
    return sorted(f"{proto}://{p}" for p in _retrying(lambda: fs.find(path), uri))


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def glob(pattern: str) -> list[str]:
    """The image files a pattern (`file:///photos/garden/*.jpg`, `s3://bucket/bg/*`) matches,
    as URIs, sorted; only names with an image suffix, so a pattern cannot pick up a licence
    file or a folder."""
    uri = resolve(pattern)
    fs, path = _fs(uri)
    proto = uri.split("://", 1)[0]
    hits = _retrying(lambda: fs.glob(path), uri)
    return sorted(f"{proto}://{p}" for p in hits if p.lower().endswith(IMAGE_SUFFIXES))


# --------------------------------------------------------------------------- images


def decode_image(data: bytes, name: str) -> Image.Image:
    """Decode bytes into an upright PIL image, refusing what is not a usable photo.

    Respects EXIF orientation, refuses decompression bombs, takes the first frame of an
    animation, and raises BadInput naming the input for anything undecodable.
    """
    if not data:
        raise BadInput(name, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.init()  # registers every plugin, so each accepted format is known by name
            img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise BadInput(name, f"decompression bomb refused: {w}x{h} is over the {MAX_PIXELS:,} pixel limit")
            img.seek(0)
            img.load()
            img = ImageOps.exif_transpose(img)
    except BadInput:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise BadInput(name, f"decompression bomb refused: {err}") from err
    except Image.UnidentifiedImageError as err:
        raise BadInput(name, f"cannot decode image: not one of the accepted formats ({', '.join(IMAGE_FORMATS)})") from err
    except Exception as err:  # PIL raises many types for broken files
        raise BadInput(name, f"cannot decode image: {type(err).__name__}: {err}") from err
    w, h = img.size
    if min(w, h) < 8:
        raise BadInput(name, f"image is {w}x{h}: too small to use")
    if max(w, h) / min(w, h) > MAX_ASPECT:
        raise BadInput(name, f"image is {w}x{h}: an aspect ratio over {MAX_ASPECT:.0f}:1 is not a photo of an object")
    return img


def to_rgb_alpha(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """RGB uint8 array, plus the alpha channel in [0,1] when the image has a real one."""
    alpha = None
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        a = np.asarray(rgba)[..., 3]
        if a.min() < 250:  # an all-opaque alpha carries no mask
            alpha = a.astype(np.float32) / 255.0
        img = rgba
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() or 1.0
        img = Image.fromarray((arr * (255.0 / hi)).round().astype(np.uint8))
    if img.mode == "RGBA":
        # Transparent pixels hold arbitrary colours; flatten on mid grey.
        rgba = np.asarray(img).astype(np.float32)
        a = rgba[..., 3:4] / 255.0
        rgb = rgba[..., :3] * a + 128.0 * (1.0 - a)
        return rgb.round().astype(np.uint8), alpha
    return np.asarray(img.convert("RGB")), alpha


def read_image(uri: str) -> Image.Image:
    return decode_image(read_bytes(uri), uri)


def read_photo(uri: str) -> np.ndarray:
    """A source photo as RGB, through read_input (unreachable photos are bad inputs)."""
    return to_rgb_alpha(decode_image(read_input(uri), uri))[0]


def read_rgb(uri: str) -> np.ndarray:
    return to_rgb_alpha(read_image(uri))[0]


def read_mask(uri: str) -> np.ndarray:
    """A soft mask stored as 8-bit greyscale PNG, returned as float32 in [0,1]."""
    img = read_image(uri)
    return np.asarray(img.convert("L"), dtype=np.float32) / 255.0


def encode_png(arr: np.ndarray) -> bytes:
    """PNG bytes of a uint8 RGB/greyscale array, or a float mask in [0,1].

    Deterministic: no timestamps or other metadata, fixed compression level. Level 1:
    four times faster than the default 6 for about 10% more bytes on photo-like images,
    and encoding was the largest single cost of a sample.
    """
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def write_png(uri: str, arr: np.ndarray) -> str:
    """Write an array as PNG atomically; returns the sha256 of the bytes written."""
    data = encode_png(arr)
    write_bytes(uri, data)
    return sha256(data)


def basename(uri: str) -> str:
    return posixpath.basename(uri.rstrip("/"))
