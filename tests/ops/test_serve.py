"""`gen4gen serve`: the local stack runs a deployed generate through its worker into its S3
server, and stops leaving no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import yaml

from conftest import REPO, _free_port, small_recipe

pytestmark = pytest.mark.slow


def wait_for(path, seconds: float, proc: subprocess.Popen):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited early ({proc.returncode}): {proc.stdout.read()}")
        if path.exists() and "worker" in json.loads(path.read_text())["processes"]:
            return json.loads(path.read_text())
        time.sleep(0.5)
    raise AssertionError("serve not ready in time")


def test_serve_runs_a_deployed_generate_into_s3_and_stops_clean(tmp_path):
    state = tmp_path / "state"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(small_recipe(tmp_path, samples=1, canvas=128)))
    port, s3_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_"))}
    cmd = [sys.executable, "-m", "gen4gen.flows.cli", "serve", "--state", str(state), "--port", str(port), "--s3-port", str(s3_port)]
    serve = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        info = wait_for(state / "serve.json", 240, serve)
        started = psutil.Process(serve.pid)
        client_env = {
            **env, "PREFECT_API_URL": info["api_url"], "PREFECT_HOME": str(tmp_path / "client-home"),
            "AWS_ENDPOINT_URL": info["s3_endpoint"], "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        # Deploy generate from this checkout onto the stack's pool and run it through the worker.
        script = f"""
import asyncio, sys
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment

async def deploy():
    async with get_client() as client:
        flow_id = await client.create_flow_from_name("generate")
        return await client.create_deployment(
            flow_id=flow_id, name="test", entrypoint="flows/generate.py:generate",
            work_pool_name={info['pool']!r},
            pull_steps=[{{"prefect.deployments.steps.set_working_directory": {{"directory": {str(REPO)!r}}}}}],
        )

deployment_id = asyncio.run(deploy())
run = run_deployment(deployment_id, parameters={{"config": {str(recipe)!r}, "out": "s3://gen4gen-datasets/small"}}, timeout=400, poll_interval=2)
print(run.state.type.value, run.state.message)
sys.exit(0 if run.state.is_completed() else 1)
"""
        done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=client_env, capture_output=True, text=True, timeout=480)
        worker_log = (state / "worker.log").read_text()[-3000:] if (state / "worker.log").exists() else ""
        assert done.returncode == 0, done.stdout + done.stderr[-3000:] + worker_log

        import boto3

        s3 = boto3.client("s3", endpoint_url=info["s3_endpoint"], aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1")
        datasets = [o["Key"] for o in s3.list_objects_v2(Bucket="gen4gen-datasets").get("Contents", [])]
        assert "small/manifest.json" in datasets and any(k.endswith(".png") and "/images/" in k for k in datasets)
        # Each stage's committed records are with the dataset; no Prefect result pickles.
        assert any(k.startswith("small/.stages/") and k.endswith(".json") for k in datasets)
        assert not any("prefect-results" in k for k in datasets)
        family = [started, *started.children(recursive=True)]
        assert len(family) >= 4  # serve, S3 server, Prefect server, worker

        stop = subprocess.run([*cmd, "--stop"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert stop.returncode == 0, stop.stderr
        serve.wait(timeout=60)
        assert serve.returncode == 0
        assert "stopped" in serve.stdout.read()
        gone, alive = psutil.wait_procs(family, timeout=10)
        assert not alive, f"left running: {[(p.pid, p.name()) for p in alive]}"
        assert not (state / "serve.json").exists()
    finally:
        if serve.poll() is None:
            serve.send_signal(signal.SIGINT)
            try:
                serve.wait(timeout=30)
            except subprocess.TimeoutExpired:
                serve.kill()
