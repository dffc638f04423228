"""A generate run against an S3-API server: dataset keys and the stages' committed records on S3."""

from __future__ import annotations

import json

import boto3
import pytest

from conftest import run_recipe, small_recipe
from gen4gen.infra import progress
from gen4gen.infra.storage import read_bytes
from gen4gen.tasks.publishing.verify import problems

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def keys(s3, bucket: str) -> list[str]:
    return [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket) for o in page.get("Contents", [])]


def test_generate_on_s3_commits_every_sample_beside_the_dataset_and_a_rerun_computes_nothing(s3_server, tmp_path):
    import os

    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    raw = small_recipe(tmp_path, samples=1, canvas=128)
    out = f"{s3_server}/datasets/small"

    first = run_recipe(raw, out)
    assert first.uri == out and first.kept > 0
    assert problems(out) == []  # every listed file is there with its hash
    rows = [json.loads(line) for line in read_bytes(f"{out}/metadata.jsonl").decode().splitlines()]
    assert len(rows) == first.kept
    image = read_bytes(f"{out}/{rows[0]['file_name']}")
    assert image.startswith(b"\x89PNG")
    stored = keys(s3, "factory")
    # Each stage's per-sample records live with the dataset; no Prefect pickles anywhere.
    assert [k for k in stored if k.startswith("datasets/small/.stages/cat-mug/repaint/") and k.endswith(".json")]
    assert not [k for k in stored if "prefect-results" in k]

    calls: list = []
    stop = progress.listen_computed(lambda comp, stage, n: calls.append((comp, stage, n)))
    try:
        second = run_recipe(raw, out)
    finally:
        stop()
    assert calls == [], f"stages ran again instead of reading their committed records: {calls}"
    assert second.files == first.files

    # The dataset is deleted, records and all: the rerun computes it again, the same bytes.
    for key in stored:
        s3.delete_object(Bucket="factory", Key=key)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # s3fs caches listings; this process deleted behind its back
    third = run_recipe(raw, out)
    assert third.files == first.files and problems(out) == []
