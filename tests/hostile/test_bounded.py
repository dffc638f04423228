"""Class: unbounded reads and hangs. Size limits on photos, recipes, decisions and JSON;
only regular files as photos; YAML aliases refused past a small expansion; a time limit on
every read."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from gen4gen.infra import storage
from gen4gen.infra.config import ConfigError, MAX_YAML_NODES, load_config, parse_yaml
from gen4gen.infra.errors import BadInput
from gen4gen.tasks.reader import load_json
from gen4gen.tasks.views.report import DecisionsError, MAX_DECISIONS_BYTES, parse_decisions


def _quick(fn, seconds=5.0):
    start = time.monotonic()
    result = fn()
    assert time.monotonic() - start < seconds
    return result


@pytest.mark.parametrize("path, words", [("/dev/zero", "character device"), ("/dev/null", "character device"),
                                         ("/", "folder")])
def test_devices_and_folders_are_not_photos(path, words):
    with pytest.raises(BadInput, match=words) as err:
        _quick(lambda: storage.read_input(path))
    assert err.value.code == "not_a_file"


def test_a_fifo_is_refused_at_once_not_waited_on(tmp_path):
    fifo = tmp_path / "photo.png"
    os.mkfifo(fifo)
    with pytest.raises(BadInput, match="FIFO"):
        _quick(lambda: storage.read_input(str(fifo)))


def test_a_photo_over_the_limit_is_refused_without_reading_it(tmp_path):
    big = tmp_path / "big.png"
    with open(big, "wb") as f:
        f.truncate(storage.MAX_PHOTO_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(BadInput, match="byte limit") as err:
        _quick(lambda: storage.read_input(str(big)))
    assert err.value.code == "too_large"
    assert storage.read_bytes(str(big), limit=storage.MAX_PHOTO_BYTES + 1)[:4] == b"\0\0\0\0"


def test_a_symlink_to_a_device_is_refused(tmp_path):
    link = tmp_path / "photo.jpg"
    link.symlink_to("/dev/urandom")
    with pytest.raises(BadInput, match="character device"):
        storage.read_input(str(link))


def test_billion_laughs_is_refused_before_it_is_built():
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]")
    with pytest.raises(ConfigError, match=f"over {MAX_YAML_NODES:,} nodes"):
        _quick(lambda: parse_yaml("\n".join(lines).encode(), "bomb.yaml"), 2.0)


def test_small_alias_use_is_fine():
    raw = parse_yaml(b"base: &b {backend: offline}\nstages: {plan: *b, segment: *b}\n", "ok.yaml")
    assert raw["stages"]["plan"] == {"backend": "offline"}


@pytest.mark.parametrize("text, words", [
    (b"a: &x [1, *x]", "circular YAML alias"),
    (b"[" * 100_000, "nests"),
    (b"a: " + b"[" * 70 + b"]" * 70, "nests over"),
    (b"name: a\nname: b\n", "given twice"),
    (b"\xff\xfe\x00n\x00a", "not UTF-8"),
])
def test_yaml_shapes_that_are_refused(text, words):
    with pytest.raises(ConfigError, match=words):
        _quick(lambda: parse_yaml(text, "r.yaml"))


def test_a_huge_recipe_is_refused_by_size(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes(b"# " + b"x" * (2**20 + 10))
    with pytest.raises(BadInput, match="byte limit"):
        load_config(str(recipe))


def test_decisions_files_are_bounded_in_size_and_depth():
    with pytest.raises(DecisionsError, match="byte limit"):
        parse_decisions(b"{" + b" " * MAX_DECISIONS_BYTES + b"}", "d.json")
    with pytest.raises(DecisionsError, match="nested"):
        parse_decisions(b'{"ratings": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "d.json")
    with pytest.raises(BadInput, match="nested over"):
        load_json(b"[" * 40 + b"]" * 40, "x.json")


@pytest.fixture
def silent_s3(monkeypatch):
    """An S3 endpoint on 127.0.0.1 that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held, stop = [], threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
    for k, v in {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("GEN4GEN_IO_RETRIES", "1")
    monkeypatch.setenv("GEN4GEN_IO_BACKOFF", "0.01")
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    yield
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()
    s3fs.S3FileSystem.clear_instance_cache()


def test_a_read_that_never_answers_ends_within_the_time_limit(silent_s3):
    start = time.monotonic()
    with pytest.raises(BadInput, match="no answer in 1 s") as err:
        storage.read_input("s3://bucket/photo.png", timeout=1.0)
    assert err.value.code == "unreachable"  # transient: retried once, then the sample's bad input
    assert time.monotonic() - start < 6
