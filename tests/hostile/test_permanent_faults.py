"""Class: permanent vs transient. A bad URI, scheme, loop, type or size is a bad input of
its samples, named and never retried; a full disk is reported as such, with no .tmp left."""

from __future__ import annotations

import errno
import subprocess
import sys
import time

import pytest

from gen4gen.infra import storage
from gen4gen.infra.errors import BadInput
from gen4gen.infra.records import Concept, StageConfig
from gen4gen.tasks.segment import segment_concept


@pytest.mark.parametrize("uri, code, words", [
    ("foo://x/y.png", "bad_uri", "unknown URI scheme 'foo'"),
    ("http://127.0.0.1:9/x.png", "bad_uri", "unknown URI scheme 'http'"),
    ("s3://", "bad_uri", "needs a bucket"),
    ("s3:///key.png", "bad_uri", "needs a bucket"),
    ("memory://x.png", "bad_uri", "unknown URI scheme"),
])
def test_bad_uris_are_permanent_bad_inputs(monkeypatch, uri, code, words):
    monkeypatch.setenv("GEN4GEN_IO_BACKOFF", "5")  # a retry would show as seconds of waiting
    start = time.monotonic()
    with pytest.raises(BadInput, match=words) as err:
        storage.read_input(uri)
    assert err.value.code == code and time.monotonic() - start < 2


def test_a_symlink_loop_is_a_bad_input_not_retried(tmp_path, monkeypatch):
    monkeypatch.setenv("GEN4GEN_IO_BACKOFF", "5")
    (tmp_path / "a.png").symlink_to(tmp_path / "b.png")
    (tmp_path / "b.png").symlink_to(tmp_path / "a.png")
    start = time.monotonic()
    with pytest.raises(BadInput, match="symbolic link loop"):
        storage.read_input(str(tmp_path / "a.png"))
    assert time.monotonic() - start < 2


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.ELOOP, errno.EROFS, errno.EDQUOT, errno.ENAMETOOLONG])
def test_os_errors_no_retry_fixes_are_permanent(code):
    assert not storage.is_transient(OSError(code, "x"))
    assert storage.is_transient(OSError(errno.ECONNRESET, "x")) and storage.is_transient(TimeoutError())


def test_the_segment_stage_records_bad_photos_and_keeps_the_good_one(tmp_path):
    photos = ["foo://x/y.png", "/dev/zero", str(tmp_path / "loop.png"), "pkgdata://skimage/data/coffee.png"]
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    concept = Concept(id="mug", category="mug", token="<mug>", photos=photos)
    cuts = segment_concept(concept, str(tmp_path / "out"), StageConfig())
    assert [c.error.code if c.error else None for c in cuts] == ["bad_uri", "not_a_file", "bad_uri", None]
    assert all(c.photo in c.error.detail for c in cuts if c.error)


FULL_DISK = r"""
import errno, os, resource, signal, sys
from gen4gen.infra import storage
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    storage.write_bytes(sys.argv[1] + "/big.bin", b"x" * 100_000)
except OSError as err:
    print(errno.errorcode[err.errno])
"""


def test_a_write_that_runs_out_of_room_fails_at_once_and_leaves_no_temporary_file(tmp_path):
    start = time.monotonic()
    env = {"GEN4GEN_IO_BACKOFF": "5", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", FULL_DISK, str(tmp_path)], capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.stdout.strip() == "EFBIG", result.stderr  # what RLIMIT_FSIZE gives; ENOSPC is alike
    assert time.monotonic() - start < 8  # not retried with 5 s backoff
    assert list(tmp_path.iterdir()) == []
