"""Fault injection for tests and benchmarks: storage that fails a seeded share of requests.

`faulty://PATH` is the local file system at PATH, except that each request (read, write,
exists, list, delete) fails with ConnectionError at the configured rate, drawn from a
seeded generator, the way a flaky network or an overloaded object store fails.
"""

from __future__ import annotations

import random
import threading

import fsspec
from fsspec.implementations.local import LocalFileSystem


class Faults:
    rate = 0.0
    injected = 0
    _rng = random.Random(0)
    _lock = threading.Lock()

    @classmethod
    def configure(cls, rate: float, seed: int = 0) -> None:
        with cls._lock:
            cls.rate, cls.injected, cls._rng = rate, 0, random.Random(seed)

    @classmethod
    def maybe_fail(cls, what: str, path: str) -> None:
        with cls._lock:
            fail = cls._rng.random() < cls.rate
            if fail:
                cls.injected += 1
        if fail:
            raise ConnectionError(f"injected fault: {what} {path}")


class FaultyFileSystem(LocalFileSystem):
    protocol = ("faulty",)

    @classmethod
    def _strip_protocol(cls, path):
        return LocalFileSystem._strip_protocol(path.removeprefix("faulty://"))

    def cat_file(self, path, start=None, end=None, **kw):
        Faults.maybe_fail("read", path)
        return super().cat_file(path, start, end, **kw)

    def pipe_file(self, path, value, **kw):
        Faults.maybe_fail("write", path)
        self.makedirs(self._parent(path), exist_ok=True)
        return super().pipe_file(path, value, **kw)

    def exists(self, path, **kw):
        Faults.maybe_fail("exists", path)
        return super().exists(path, **kw)

    def find(self, path, *args, **kw):
        Faults.maybe_fail("list", path)
        return super().find(path, *args, **kw)

    def rm_file(self, path):
        Faults.maybe_fail("delete", path)
        return super().rm_file(path)


def register() -> None:
    fsspec.register_implementation("faulty", FaultyFileSystem, clobber=True)
