"""Secrets never leave the environment: not in logs, outputs, records, results or errors."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import boto3
import pytest
import yaml

from conftest import REPO, small_recipe

SECRETS = {
    "AWS_SECRET_ACCESS_KEY": f"aws-secret-{uuid.uuid4().hex}",
    "OPENAI_API_KEY": f"sk-secret-{uuid.uuid4().hex}",
}


def find_secrets(blob: bytes) -> list[str]:
    return [name for name, value in SECRETS.items() if value.encode() in blob]


@pytest.mark.slow
def test_secrets_appear_in_no_output(s3_server, tmp_path, monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)  # moto accepts any credentials
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.put_object(Bucket="factory", Key="photos/cat.png", Body=_chelsea())
    raw = small_recipe(tmp_path, samples=1)
    raw["concepts"][0]["photos"] = ["s3://factory/photos/cat.png", "s3://factory/photos/missing.png"]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    home = tmp_path / "prefect-home"
    env = {**os.environ, "PREFECT_HOME": str(home), "GEN4GEN_IO_RETRIES": "1", "GEN4GEN_IO_BACKOFF": "0.01"}
    env.pop("PREFECT_API_URL", None)

    def gen4gen(out: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "gen4gen.flows.cli", "generate", str(recipe), "--out", out, "--verbose"]
        return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, timeout=300)

    good = gen4gen("s3://factory/datasets/small")
    assert good.returncode == 0, good.stderr.decode()[-2000:]
    bad = gen4gen("s3://no-such-bucket/datasets/small")  # the run fails: its error is printed
    assert bad.returncode == 1

    leaks: dict[str, list[str]] = {}
    for name, blob in (("good stdout", good.stdout), ("good stderr", good.stderr), ("bad stdout", bad.stdout), ("bad stderr", bad.stderr)):
        if found := find_secrets(blob):
            leaks[name] = found
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="factory") for o in page.get("Contents", [])]
    assert any(k.endswith("manifest.json") for k in keys)
    for key in keys:
        if found := find_secrets(s3.get_object(Bucket="factory", Key=key)["Body"].read()):
            leaks[f"s3://factory/{key}"] = found
    for path in [*home.rglob("*"), *tmp_path.rglob("*")]:  # Prefect's database, logs, results
        if path.is_file() and (found := find_secrets(path.read_bytes())):
            leaks[str(path)] = found
    assert not leaks, leaks


def _chelsea() -> bytes:
    from gen4gen.infra.storage import read_bytes

    return read_bytes("pkgdata://skimage/data/chelsea.png")
