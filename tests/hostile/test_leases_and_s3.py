"""Classes found beyond the issue's list: clock skew and forged leases, concurrent writers,
and S3 edge cases against the moto server."""

from __future__ import annotations

import json
import socket
import threading
import time

import boto3
import pytest

from gen4gen.infra import storage
from gen4gen.infra.errors import BadInput
from gen4gen.infra.lease import LEASE, lease


@pytest.mark.parametrize("body", [
    {"token": "x", "host": "other-host", "pid": 1, "expires": time.time() + 10 * 365 * 86400},  # skew / forgery
    {"token": "x", "host": socket.gethostname(), "pid": "1; rm -rf /", "expires": time.time() + 100},
    {"token": "x", "host": socket.gethostname(), "pid": 0, "expires": time.time() + 100},  # 0: our process group
    {"token": "x", "host": socket.gethostname(), "pid": 10**30, "expires": time.time() + 100},
    [1, 2, 3],
    {"expires": "tomorrow"},
])
def test_a_lease_that_cannot_be_honest_does_not_block_publishing(tmp_path, body):
    (tmp_path / LEASE).write_text(json.dumps(body))
    start = time.monotonic()
    with lease(str(tmp_path), wait=5, poll=0.05):
        assert json.loads((tmp_path / LEASE).read_text())["token"] != "x"
    assert time.monotonic() - start < 3 and not (tmp_path / LEASE).exists()


def test_a_live_lease_is_still_respected(tmp_path):
    (tmp_path / LEASE).write_text(json.dumps({"token": "x", "host": "other-host", "pid": 1, "expires": time.time() + 60}))
    with pytest.raises(TimeoutError, match="publishing lease"):
        with lease(str(tmp_path), wait=0.3, poll=0.05):
            pass


def test_concurrent_writers_of_one_key_leave_one_whole_file_and_no_temporaries(tmp_path):
    target = str(tmp_path / "k.bin")
    blobs = [bytes([i]) * 200_000 for i in range(8)]
    threads = [threading.Thread(target=storage.write_bytes, args=(target, b)) for b in blobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert storage.read_bytes(target) in blobs and [p.name for p in tmp_path.iterdir()] == ["k.bin"]


def test_s3_edges_against_the_s3_api(s3_server):
    s3 = boto3.client("s3")
    s3.put_object(Bucket="factory", Key="ds/photo.png", Body=b"x" * 5000)
    s3.put_object(Bucket="factory", Key="ds/folder/inner.png", Body=b"y")
    s3.put_object(Bucket="factory", Key="ds/../escape.png", Body=b"z")  # a key S3 stores literally
    with pytest.raises(BadInput, match="byte limit") as err:
        storage.read_input(f"{s3_server}/ds/photo.png", limit=1000)
    assert err.value.code == "too_large"
    with pytest.raises(BadInput, match="not a file") as err:
        storage.read_input(f"{s3_server}/ds/folder")
    assert err.value.code == "not_a_file"
    with pytest.raises(BadInput, match="not found"):
        storage.read_input(f"{s3_server}/ds/missing.png")
    with pytest.raises(BadInput, match="not a relative path inside"):
        storage.inside(f"{s3_server}/ds", "../escape.png", "manifest")
    with pytest.raises(BadInput, match="needs a bucket"):
        storage.read_input("s3://UPPER_case/x.png")
    with pytest.raises(ValueError, match="--out 's3://'"):
        storage.check_output("s3://")
    assert storage.check_output(f"{s3_server}/new/") == f"{s3_server}/new"
