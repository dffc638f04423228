"""A generate run against an S3-API server: dataset keys and cached task results both on S3."""

from __future__ import annotations

import json

import boto3
import pytest

from conftest import run_recipe, small_recipe
from gen4gen.infra import progress
from gen4gen.infra.caching import save_results_block
from gen4gen.infra.storage import read_bytes
from gen4gen.tasks.verify import problems

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def keys(s3, bucket: str) -> list[str]:
    return [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket) for o in page.get("Contents", [])]


def test_generate_on_s3_with_results_in_a_saved_block_and_cache_hits_on_rerun(s3_server, tmp_path):
    import os

    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    s3.create_bucket(Bucket="results")
    slug = save_results_block("s3://results/prefect-results", name="test-results")
    raw = small_recipe(tmp_path, samples=1, canvas=128)
    raw["run"]["result_storage"] = slug
    out = f"{s3_server}/datasets/small"

    first = run_recipe(raw, out)
    assert first.uri == out and first.kept > 0
    assert problems(out) == []  # every listed file is there with its hash
    rows = [json.loads(line) for line in read_bytes(f"{out}/metadata.jsonl").decode().splitlines()]
    assert len(rows) == first.kept
    image = read_bytes(f"{out}/{rows[0]['file_name']}")
    assert image.startswith(b"\x89PNG")
    results = keys(s3, "results")
    assert results and all(k.startswith("prefect-results/") for k in results)
    assert not [k for k in keys(s3, "factory") if "/.cache/prefect-results/" in k]  # apart from the dataset

    calls: list = []
    stop = progress.listen(lambda comp, stage, n: calls.append((comp, stage)))
    try:
        second = run_recipe(raw, out)
    finally:
        stop()
    assert calls == [], f"stages ran again instead of hitting the S3 result cache: {calls}"
    assert second.files == first.files

    # The dataset is deleted, its results (in their own bucket) are not: no stale cache hit.
    for key in keys(s3, "factory"):
        s3.delete_object(Bucket="factory", Key=key)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # s3fs caches listings; this process deleted behind its back
    third = run_recipe(raw, out)
    assert third.files == first.files and problems(out) == []


def test_results_default_to_a_saved_block_beside_an_s3_dataset_and_hold_no_credentials(s3_server, monkeypatch):
    from prefect.blocks.core import Block

    from gen4gen.infra.caching import result_storage_for

    monkeypatch.delenv("GEN4GEN_RESULT_STORAGE", raising=False)
    slug = result_storage_for(f"{s3_server}/datasets/x")
    block = Block.load(slug)
    assert block.basepath == f"{s3_server}/datasets/x/.cache/prefect-results"
    assert "testing" not in block.model_dump_json()  # the credentials stay in the environment
    assert result_storage_for("ignored", "remote-file-system/gen4gen-results") == "remote-file-system/gen4gen-results"
    monkeypatch.setenv("GEN4GEN_RESULT_STORAGE", "s3://results/elsewhere")
    assert Block.load(result_storage_for(f"{s3_server}/datasets/x")).basepath == "s3://results/elsewhere"
