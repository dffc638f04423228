"""All bytes in and out of the factory go through here, over fsspec URLs.

`file://` (or a plain path) is the embedded default, `s3://` works with the same code
(s3fs; endpoint and credentials from the environment). `pkgdata://PACKAGE/PATH` reads a
file shipped inside an installed Python package (the demo's photos).

Writes are atomic: a reader sees the old bytes or the new bytes, never half a file. On a
local disk that is a write to a temporary name and a rename; an S3 PUT is atomic already.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import posixpath
import random
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


def resolve(uri: str) -> str:
    """Normalise a URI: plain paths become absolute file:// URLs, pkgdata:// becomes a path."""
    if uri.startswith("pkgdata://"):
        package, _, rel = uri[len("pkgdata://") :].partition("/")
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise BadInput(uri, f"package {package!r} is not installed")
        return "file://" + str(Path(list(spec.submodule_search_locations)[0]) / rel)
    if "://" not in uri:
        return "file://" + str(Path(uri).expanduser().resolve())
    return uri


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


def _fs(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(resolve(uri))
    return fs, path


# --------------------------------------------------------------------------- retries

_PERMANENT = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError)


def is_transient(err: BaseException) -> bool:
    """A fault worth retrying: the network, a timeout, a throttled or unavailable store."""
    if isinstance(err, (BadInput, *_PERMANENT)):
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


def read_bytes(uri: str) -> bytes:
    """Read a whole object. A missing object is a bad input; transient faults are retried."""
    fs, path = _fs(uri)
    try:
        return _retrying(lambda: fs.cat_file(path), uri)
    except FileNotFoundError as err:
        raise BadInput(uri, "not found") from err
    except IsADirectoryError as err:
        raise BadInput(uri, "is a folder, not a file") from err


def read_input(uri: str) -> bytes:
    """Read a source input (a photo): one that stays unreachable after the retries is a
    bad input of that sample (code `unreachable`), not a failure of the whole run."""
    try:
        return read_bytes(uri)
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
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
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


def list_files(uri: str) -> list[str]:
    """Every file below a URI, as URIs with the same protocol."""
    fs, path = _fs(uri)
    if not exists(uri):
        return []
    proto = resolve(uri).split("://", 1)[0]
    return sorted(f"{proto}://{p}" for p in _retrying(lambda: fs.find(path), uri))


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
            img = Image.open(io.BytesIO(data))
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
