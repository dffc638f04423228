"""The task runner, chosen in the recipe's `run.runner`.

threads (default): a thread pool in the flow's process, `run.workers` wide.
dask: prefect-dask; a local cluster of `runner.workers` processes (default `run.workers`),
      or an existing scheduler at `runner.address`.
ray:  prefect-ray; a local Ray or the cluster at `runner.address`; GPU stages ask Ray for
      `runner.gpus_per_task` GPUs (infra/limits.py: submitting). Not installed here.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from prefect.context import FlowRunContext
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from gen4gen.infra.records import RunConfig


class RunnerMissing(RuntimeError):
    """The recipe asks for a task runner whose package is not installed."""


def _need(kind: str, package: str, module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise RunnerMissing(
            f"run.runner.kind = {kind!r} needs the {package} package, which is not installed "
            f"({err}); install it (pip install {package}) or use kind 'threads'"
        ) from err


def task_runner(run: RunConfig):
    kind, address = run.runner.kind, run.runner.address
    width = run.runner.workers or run.workers
    if kind == "threads":
        return ThreadPoolTaskRunner(max_workers=run.workers)
    if kind == "dask":
        DaskTaskRunner = _need(kind, "prefect-dask", "prefect_dask").DaskTaskRunner
        if address:
            return DaskTaskRunner(address=address)
        # One thread per worker process: models are loaded once per process (registry), and a
        # stage task is a whole composition's work. No dashboard: it needs a free port and bokeh.
        return DaskTaskRunner(
            cluster_kwargs={"n_workers": width, "threads_per_worker": 1, "processes": True, "dashboard_address": None}
        )
    if kind == "ray":
        _need(kind, "ray", "ray")
        RayTaskRunner = _need(kind, "prefect-ray", "prefect_ray").RayTaskRunner
        if address:
            return RayTaskRunner(address=address)
        return RayTaskRunner(init_kwargs={"num_cpus": width})
    raise ValueError(f"run.runner.kind: unknown task runner {kind!r}")


@contextlib.contextmanager
def use(run: RunConfig) -> Iterator[TaskRunner]:
    """Inside a flow: submit the tasks of this block to the recipe's task runner.

    The recipe is a parameter, known only once the flow runs, and a deployment starts the
    flow on its default runner. Re-running the flow as a subflow on the right runner left an
    empty parent run (the one the UI links to); instead the run's context is entered again
    with the wanted runner (Prefect's contexts support entering a copy), so every task run
    and artifact belongs to the run that was started.
    """
    ctx = FlowRunContext.get()
    if ctx is None:
        raise RuntimeError("runners.use() is for the body of a flow")
    wanted = task_runner(run)
    if ctx.task_runner == wanted:  # already started on it (a caller chose it up front)
        yield ctx.task_runner
        return
    with wanted as started, ctx.model_copy(update={"task_runner": started}):
        yield started
