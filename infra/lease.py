"""An exclusive lease on a dataset URI, so two runs never publish into it at once.

Stage outputs need no lock: their keys are content hashes and every write is atomic, so two
runs writing the same key write the same bytes. Publishing is different: it rewrites the
shared index files and deletes images that the new manifest no longer lists, which must not
interleave with another run's publishing. The lease is a small JSON object at
`{out}/.lease`, created exclusively. A lease whose holder is dead (same host, process gone)
or whose time ran out is taken over, so a killed run never blocks the next one for long.

Exclusive creation is exact on local disks (O_EXCL). On object stores it is best effort
(write, wait, read back and compare the token); run one publisher per dataset there, which
the generate deployment's concurrency limit of 1 does.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from contextlib import contextmanager
from typing import Iterator

from gen4gen.infra.errors import BadInput
from gen4gen.infra.storage import exists, join, local_path, read_bytes, remove, write_bytes

LEASE = ".lease"
# A lease says when it expires by the holder's clock. One that claims to last longer than
# this from now is a skewed clock or a forged file: judged stale, so it cannot block
# publishing for ever (a real holder's lease lasts `ttl`, 300 s by default).
MAX_LEASE_AHEAD = 3600.0


def _holder_alive(info: object) -> bool:
    if not isinstance(info, dict):
        return False  # not a lease we wrote
    expires, pid = info.get("expires"), info.get("pid")
    if isinstance(expires, bool) or not isinstance(expires, (int, float)) or not expires == expires:
        return False
    now = time.time()
    if expires < now or expires > now + MAX_LEASE_AHEAD:
        return False
    if info.get("host") == socket.gethostname():
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
            return False  # pid 0 or -1 would signal a whole process group
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        except OverflowError:
            return False
    return True


def _try_create(uri: str, body: bytes) -> bool:
    path = local_path(uri)
    if path is not None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        return True
    if exists(uri):
        return False
    write_bytes(uri, body)
    time.sleep(0.2)  # let a concurrent writer's PUT land, then see who won
    return read_bytes(uri) == body


def _read(uri: str) -> bytes | None:
    try:
        return read_bytes(uri, limit=64 * 1024)  # a lease is ~150 bytes
    except (BadInput, OSError):
        return None


def _take_over_if_stale(uri: str) -> None:
    seen = _read(uri)
    try:
        info = json.loads(seen) if seen else {}
    except (ValueError, RecursionError):
        info = {}  # half-written by a killed run, or not ours: stale
    if seen is None or _holder_alive(info):
        return
    path = local_path(uri)
    if path is None:
        remove(uri)
        return
    # Move the stale lease aside; only one of two runs taking over wins the rename. If what
    # was moved is not what we judged stale (another run took over in between), put it back.
    aside = f"{path}.stale-{uuid.uuid4().hex}"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    with open(aside, "rb") as f:
        moved = f.read()
    if moved != seen:
        try:
            os.link(aside, path)  # fails if a third run already holds a new lease
        except FileExistsError:
            pass
    os.remove(aside)


@contextmanager
def lease(out: str, ttl: float = 300.0, wait: float = 600.0, poll: float = 0.25) -> Iterator[str]:
    """Hold the dataset's lease for the block; waits for another holder, up to `wait` s."""
    uri = join(out, LEASE)
    token = uuid.uuid4().hex
    body = json.dumps(
        {"token": token, "host": socket.gethostname(), "pid": os.getpid(), "expires": time.time() + ttl}
    ).encode()
    deadline = time.monotonic() + wait
    while not _try_create(uri, body):
        _take_over_if_stale(uri)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{uri}: another run has held the publishing lease for over {wait:.0f} s")
        time.sleep(poll)
    try:
        yield token
    finally:
        if _read(uri) == body:  # else it expired and was taken over: nothing of ours left
            remove(uri)
