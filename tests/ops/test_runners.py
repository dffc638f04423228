"""The task runner comes from the recipe: threads by default, Dask, or Ray when installed."""

from __future__ import annotations

import importlib.util

import pytest
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import ValidationError

from conftest import run_recipe, small_recipe
from gen4gen.infra.runners import RunnerMissing, task_runner
from gen4gen.infra.records import RunConfig


def test_threads_by_default_as_wide_as_run_workers():
    runner = task_runner(RunConfig(workers=3))
    assert isinstance(runner, ThreadPoolTaskRunner) and runner == ThreadPoolTaskRunner(max_workers=3)


def test_dask_local_cluster_or_a_scheduler_address():
    from prefect_dask import DaskTaskRunner

    local = task_runner(RunConfig.model_validate({"workers": 3, "runner": {"kind": "dask", "workers": 2}}))
    assert isinstance(local, DaskTaskRunner) and local.cluster_kwargs["n_workers"] == 2
    remote = task_runner(RunConfig.model_validate({"runner": {"kind": "dask", "address": "tcp://10.0.0.5:8786"}}))
    assert remote.address == "tcp://10.0.0.5:8786"


@pytest.mark.skipif(importlib.util.find_spec("prefect_ray") is not None, reason="prefect-ray is installed here")
def test_ray_without_its_package_is_a_clear_error():
    with pytest.raises(RunnerMissing, match=r"run.runner.kind = 'ray' needs the (ray|prefect-ray) package"):
        task_runner(RunConfig.model_validate({"runner": {"kind": "ray", "gpus_per_task": 1}}))


def test_an_unknown_runner_is_refused_by_the_recipe():
    with pytest.raises(ValidationError, match="runner.kind"):
        RunConfig.model_validate({"runner": {"kind": "spark"}})


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_a_local_dask_cluster_of_two_workers_publishes_the_same_dataset(tmp_path):
    from gen4gen.infra import progress

    raw = small_recipe(tmp_path, samples=1, canvas=128)
    threads = run_recipe(raw, str(tmp_path / "threads"))
    raw["run"]["runner"] = {"kind": "dask", "workers": 2}
    here: list = []  # stages report progress in their own process: none may run in this one
    stop = progress.listen_computed(lambda comp, stage, n: here.append((comp, stage)))
    try:
        dask = run_recipe(raw, str(tmp_path / "dask"))
    finally:
        stop()
    assert here == [], f"stages ran in the flow's process, not on the Dask workers: {here}"
    assert dask.kept == threads.kept and dask.planned == threads.planned
    assert dask.files == threads.files  # every published file, byte for byte (sha256)
