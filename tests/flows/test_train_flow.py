"""Tier 3: the train flow under the Prefect test server, and `gen4gen train` in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="module")
def dataset(prefect_harness):
    from tests.tiny.dataset import published_small

    return published_small()


@pytest.fixture(scope="module")
def base():
    from tests.tiny.dataset import tiny_base

    return tiny_base()


def landed(run: str, want: int = 1, timeout: float = 30, under: str = "") -> list[dict]:
    """Payloads of the run's checkpoint.landed events for checkpoints under `under`, read
    back from the test server (waits until `want` have arrived or the timeout passes). The
    same run id trains in other tests' folders too (same dataset and settings)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    query = EventFilter(event=EventNameFilter(name=["checkpoint.landed"]),
                        resource=EventResourceFilter(id_prefix=[f"gen4gen.checkpoint.{run}."]))
    deadline = time.monotonic() + timeout
    payloads: list[dict] = []
    while time.monotonic() < deadline and len(payloads) < want:
        with get_client(sync_client=True) as client:
            page = client.read_events(query, limit=50)
        payloads = [dict(e.payload, resource=e.resource.id) for e in page.events
                    if str(e.payload.get("checkpoint", "")).startswith(under)]
        time.sleep(0.5)
    return payloads


def task_run_names(flow_run_id) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return sorted(t.name for t in runs)


def test_flow_writes_checkpoints_and_announces_each(dataset, base, tmp_path):
    from gen4gen.flows.train import train
    from gen4gen.infra.checkpoint import finished, read_info

    out = str(tmp_path / "run")
    result = train({"dataset": dataset, "out": out, "base_model": base, "steps": 2, "batch_size": 1,
                    "resolution": 64, "checkpoint_every": 1})
    assert result.step == 2 and [s for s, _ in finished(out)] == [1, 2]
    info = read_info(result.latest)
    payloads = landed(result.run, want=2, under=result.latest.rsplit("/checkpoints/", 1)[0])
    by_step = {p["step"]: p for p in payloads}
    assert set(by_step) == {1, 2}
    last = by_step[2]
    assert last["checkpoint"] == result.latest and last["dataset"] == dataset
    assert last["dataset_version"] == info.dataset_version and last["resource"] == f"gen4gen.checkpoint.{result.run}.2"


def test_a_triggered_run_gets_its_own_folder_under_runs(dataset, base, tmp_path):
    """As the on-dataset deployment calls it: the event's dataset URI and a runs folder;
    the run lands in {runs}/{run id}, and settings that make another run, another folder."""
    from gen4gen.flows.train import train

    settings = {"base_model": base, "steps": 1, "batch_size": 1, "resolution": 64}
    runs = str(tmp_path / "runs")
    state = train(settings, dataset=dataset, runs=runs, return_state=True)
    first = state.result()
    assert task_run_names(state.state_details.flow_run_id) == ["train[small-v1]"]  # as in the UI
    assert first.latest.removeprefix("file://").startswith(f"{runs}/{first.run}/checkpoints/")
    other = train({**settings, "learning_rate": 2e-5}, dataset=dataset, runs=runs)
    assert other.run != first.run and other.latest.removeprefix("file://").startswith(f"{runs}/{other.run}/")


@pytest.mark.slow
def test_cli_run_killed_and_restarted_resumes_from_its_last_checkpoint(dataset, base, tmp_path):
    from diffusers import StableDiffusionPipeline
    from prefect.settings import PREFECT_API_URL

    from gen4gen.infra.checkpoint import finished, load_into

    # Killed after its first checkpoint, the rerun trains the rest: 10 steps show the resume
    # as well as 30 did (the suite's longest test at 30: 3 minutes on the 2-core machine).
    STEPS = 10
    out = tmp_path / "cli"
    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value())  # the test server: events can be read back
    args = [sys.executable, "-m", "gen4gen.flows.cli", "train", "--dataset", dataset, "--out", str(out), "--base", base,
            "--resolution", "64", "--batch-size", "2", "--micro-batch", "1", "--checkpoint-every", "1", "--steps", str(STEPS)]
    killed = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.monotonic() + 240
    while not finished(str(out)) and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    done = [s for s, _ in finished(str(out))]
    assert done and done[-1] < STEPS, "the first run was killed after its first checkpoint and before the end"
    rerun = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resumed from step {done[-1]}" in rerun.stderr and f"{STEPS}/{STEPS}" in rerun.stderr and "train: steps" in rerun.stderr
    latest = rerun.stdout.strip().splitlines()[-1]
    assert latest == f"file://{out}/checkpoints/step-{STEPS:06d}"
    pipe = StableDiffusionPipeline.from_pretrained(base, safety_checker=None)
    info = load_into(pipe, latest)
    assert info.step == STEPS and STEPS in {p["step"] for p in landed(info.run, want=STEPS - done[-1])}


def test_cli_refuses_a_missing_dataset_with_exit_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "gen4gen.flows.cli", "train", "--dataset", str(tmp_path / "nope"),
                             "--out", str(tmp_path / "o")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "manifest.json" in result.stderr and "Traceback" not in result.stderr
