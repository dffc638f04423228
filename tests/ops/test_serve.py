"""`gen4gen serve`: the local stack runs the factory's chain through its worker, into its S3
server, and stops leaving no process behind.

generate, train and evaluate are deployed from this checkout with prefect.yaml's entrypoints,
parameters and event triggers (tiny models set as deployment parameters, as a user would);
one generate run publishes, its `dataset.published` event starts training, and every
`checkpoint.landed` event an evaluation. The lineage is then read back through Prefect's API.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from conftest import REPO, _free_port, small_recipe

pytestmark = pytest.mark.slow

SPEC = {d["name"]: d for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]}
PROMPT_SET = "chain-heldout"


def wait_for(path, seconds: float, proc: subprocess.Popen):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited early ({proc.returncode}): {proc.stdout.read()}")
        if path.exists() and "worker" in json.loads(path.read_text())["processes"]:
            return json.loads(path.read_text())
        time.sleep(0.5)
    raise AssertionError("serve not ready in time")


def deploy(name: str, pool: str, parameters: dict, triggers: bool = True):
    """prefect.yaml's deployment `name` (entrypoint, parameters, triggers, as `prefect deploy`
    creates them) on the stack's pool, run from this checkout instead of a clone."""
    from prefect.cli.deploy._triggers import _create_deployment_triggers, _initialize_deployment_triggers
    from prefect.client.orchestration import get_client

    spec = SPEC[name]
    flow_name = spec["entrypoint"].split(":")[1]

    async def create():
        async with get_client() as client:
            flow_id = await client.create_flow_from_name(flow_name)
            deployment_id = await client.create_deployment(
                flow_id=flow_id, name=name, entrypoint=spec["entrypoint"], work_pool_name=pool,
                parameters={**spec.get("parameters", {}), **parameters},
                pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}],
            )
            if triggers:
                specs = [dict(t) for t in spec.get("triggers", [])]
                await _create_deployment_triggers(client, deployment_id, _initialize_deployment_triggers(name, specs))
            return deployment_id

    return asyncio.run(create())


def runs_of(client, deployment_id) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))


def poll(what: str, seconds: float, check, log):
    """check() -> a truthy value when done; raises with the worker log's tail at the deadline."""
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds:.0f} s\n{log()}")
        time.sleep(1)


def finished(runs: list, log) -> list:
    """The final runs among `runs`; a failed or crashed one fails the test with its message."""
    done = [r for r in runs if r.state and r.state.is_final()]
    bad = [r for r in done if not r.state.is_completed()]
    assert not bad, f"{[(r.name, r.state.type.value, r.state.message) for r in bad]}\n{log()}"
    return done


def events(client, name: str) -> list:
    from prefect.events.filters import EventFilter, EventNameFilter

    return client.read_events(EventFilter(event=EventNameFilter(name=[name])), limit=50).events


def related(event) -> dict[str, str]:
    return {r.id: r.role for r in event.related}


def latest_artifact(client, key: str):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                  sort=ArtifactSort.CREATED_DESC, limit=1)
    return found[0] if found else None


def table(artifact) -> list[dict]:
    return json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data


def prompt_set(tmp_path: Path, vision: dict) -> str:
    path = tmp_path / "prompts.yaml"
    path.write_text(yaml.safe_dump({
        "name": PROMPT_SET, "samples": 1, "generation": {"steps": 1, "size": 64},
        "concepts": [
            {"id": "chelsea", "category": "cat", "token": "<chelsea>", "photos": ["pkgdata://skimage/data/chelsea.png"]},
            {"id": "coffee", "category": "mug", "token": "<coffee>", "photos": ["pkgdata://skimage/data/coffee.png"]},
        ],
        "vision": vision,
        "prompts": [{"composition": "cat-mug", "concepts": ["chelsea", "coffee"],
                     "prompt": "On the moon, a <chelsea> cat and a <coffee> mug."}],
    }))
    return str(path)


def test_serve_runs_generate_train_evaluate_chain_into_s3_and_stops_clean(tmp_path, tiny_vision):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from gen4gen.infra.artifacts import artifact_key
    from tests.tiny.dataset import tiny_base

    state = tmp_path / "state"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(small_recipe(tmp_path, samples=1, canvas=128)))
    prompts = prompt_set(tmp_path, tiny_vision)
    base = tiny_base()
    port, s3_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_"))}
    cmd = [sys.executable, "-m", "gen4gen.flows.cli", "serve", "--state", str(state), "--port", str(port), "--s3-port", str(s3_port)]
    serve = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def log() -> str:
        path = state / "worker.log"
        return "worker log tail:\n" + (path.read_text(errors="replace")[-4000:] if path.exists() else "(none)")

    try:
        info = wait_for(state / "serve.json", 240, serve)
        started = psutil.Process(serve.pid)
        with temporary_settings({PREFECT_API_URL: info["api_url"]}):
            pool = info["pool"]
            # prefect.yaml's three deployments: train at the tiny base model, 2 steps, a
            # checkpoint each; evaluate on a tiny prompt set (tiny CLIP and OWL-ViT), on the CPU.
            generate_id = deploy("demo-nightly", pool, {"config": str(recipe), "out": "s3://gen4gen-datasets/small"},
                                 triggers=False)
            train_id = deploy("on-dataset", pool, {"config": {
                "base_model": base, "steps": 2, "checkpoint_every": 1, "batch_size": 1, "resolution": 64, "device": "cpu"}})
            eval_id = deploy("on-checkpoint", pool, {"prompts": prompts, "samples": 1, "device": "cpu"})
            with get_client(sync_client=True) as client:
                names = {a.name for a in client.read_automations()}
            assert {t["name"] for n in ("on-dataset", "on-checkpoint") for t in SPEC[n]["triggers"]} <= names

            t0 = time.monotonic()
            generated = run_deployment(generate_id, timeout=300, poll_interval=2)
            assert generated.state.is_completed(), f"{generated.state}\n{log()}"
            t_generate = time.monotonic() - t0

            import boto3

            s3 = boto3.client("s3", endpoint_url=info["s3_endpoint"], aws_access_key_id="x", aws_secret_access_key="x",
                              region_name="us-east-1")
            datasets = [o["Key"] for o in s3.list_objects_v2(Bucket="gen4gen-datasets", Prefix="small/").get("Contents", [])]
            assert "small/manifest.json" in datasets and any(k.endswith(".png") and "/images/" in k for k in datasets)
            # Each stage's committed records are with the dataset; no Prefect result pickles.
            assert any(k.startswith("small/.stages/") and k.endswith(".json") for k in datasets)
            assert not any("prefect-results" in k for k in datasets)

            with get_client(sync_client=True) as client:
                # dataset.published -> automation -> train/on-dataset through the worker
                trained = poll("a completed train run", 180,
                               lambda: finished(runs_of(client, train_id), log), log)
                t_train = time.monotonic() - t0
                # checkpoint.landed (x2) -> evaluate/on-checkpoint (x2)
                evaluated = poll("two completed evaluate runs", 180,
                                 lambda: (lambda d: d if len(d) >= 2 else None)(finished(runs_of(client, eval_id), log)), log)
                t_eval = time.monotonic() - t0
                together = max(r.start_time for r in evaluated) < min(r.end_time for r in evaluated)
                print(f"generate {t_generate:.0f} s, train done {t_train:.0f} s, evaluations done {t_eval:.0f} s"
                      f" ({'side by side' if together else 'one after the other'})")

                # (a) the training run names the dataset version and the generate run
                assert len(trained) == 1
                train_run, gen_run = trained[0], str(generated.id)
                assert train_run.parameters["dataset"] == "s3://gen4gen-datasets/small"
                assert train_run.parameters["upstream"] == gen_run
                assert train_run.name.startswith("train-small-v1-")
                landed = [e for e in events(client, "checkpoint.landed") if e.payload.get("flow_run") == str(train_run.id)]
                assert sorted(e.payload["step"] for e in landed) == [1, 2]
                run = landed[0].payload["run"]
                lineage = latest_artifact(client, artifact_key(run, "lineage"))
                assert lineage is not None and lineage.flow_run_id == train_run.id
                assert "small v1" in lineage.data and gen_run in lineage.data

                # (b) each checkpoint points at its training run, the dataset version, the generate run
                version = "gen4gen.dataset-version.small.v1"
                for e in landed:
                    links = related(e)
                    assert e.resource.id == f"gen4gen.checkpoint.{run}.{e.payload['step']}"
                    assert links[f"gen4gen.training-run.{run}"] == "training-run"
                    assert links[version] == "dataset-version"
                    assert links[f"prefect.flow-run.{gen_run}"] == "dataset-run"
                    assert links[f"prefect.flow-run.{train_run.id}"] == "flow-run"

                # (c) each evaluation points at its checkpoint, the training run, the dataset version
                assert len(evaluated) == 2
                assert {r.parameters["upstream"] for r in evaluated} == {str(train_run.id)}
                done = poll("two evaluation.completed events", 30, lambda: (lambda es: es if len(es) >= 2 else None)(
                    [e for e in events(client, "evaluation.completed") if e.payload.get("run") == run]), log)
                assert sorted(e.payload["step"] for e in done) == [1, 2]
                for e in done:
                    step, links = e.payload["step"], related(e)
                    assert e.resource.id == f"gen4gen.evaluation.{run}.{step}"
                    assert links[f"gen4gen.checkpoint.{run}.{step}"] == "checkpoint"
                    assert links[f"gen4gen.training-run.{run}"] == "training-run"
                    assert links[version] == "dataset-version"
                    assert links[f"prefect.flow-run.{train_run.id}"] == "training-flow-run"
                    assert math.isfinite(e.payload["cp_clip"]) and math.isfinite(e.payload["ti_clip"])

                # (d) the run's evaluation history has both checkpoints, however close together
                # the two evaluations finished, with real CP-CLIP / TI-CLIP numbers
                history = latest_artifact(client, artifact_key("eval", run, PROMPT_SET, "history"))
                assert history is not None and history.flow_run_id in {r.id for r in evaluated}
                rows = table(history)
                assert [r["step"] for r in rows] == [1, 2], rows
                for r in rows:
                    for metric in ("CP-CLIP", "TI-CLIP"):
                        assert isinstance(r[metric], float) and -1 <= r[metric] <= 1, r

                # (e) the dataset's history has the published version
                dataset_history = latest_artifact(client, "small-history")
                assert dataset_history is not None and dataset_history.flow_run_id == generated.id
                assert [r["version"] for r in table(dataset_history)] == ["v1"]

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


def test_the_stacks_prefect_keeps_flow_runs_and_events_for_a_bounded_time(tmp_path):
    """The served database does not grow without bound: Prefect's own vacuum service is on
    for flow runs (and so their task runs, logs and artifacts) and events."""
    from gen4gen.infra.serve import Stack

    env = {k: v for k, v in Stack(tmp_path).env().items() if not k.startswith("PREFECT_API_URL")}
    code = ("from prefect.settings import get_current_settings as g; s = g(); v = s.server.services.db_vacuum; "
            "print(sorted(v.enabled), v.retention_period.days, s.server.events.retention_period.days)")
    shown = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert shown.stdout.split() == ["['events',", "'flow_runs']", "30", "7"], shown.stderr[-2000:]
