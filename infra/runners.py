"""The task runner, chosen in the recipe's `run.runner`.

threads (default): a thread pool in the flow's process, `run.workers` wide.
dask: prefect-dask; a local cluster of `runner.workers` processes (default `run.workers`),
      or an existing scheduler at `runner.address`.
ray:  prefect-ray; a local Ray instance of `runner.workers` CPUs (default `run.workers`) on the
      loopback only, no dashboard UI, no usage stats, logs rotated at 64 MiB; or the cluster at
      `runner.address`. A Ray already started in the process (ray.init) is used as it is.
      GPU stages ask Ray for `runner.gpus_per_task` GPUs, CPU stages for none
      (infra/limits.py: submitting). Workers import gen4gen from the installed package.
"""

from __future__ import annotations

import contextlib
import os
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


# Read by Ray when it is imported or starts a node, so set before either (values set by the
# operator win: only unset ones are filled).
_RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}  # never phone home, nor ask
_LOCAL_RAY_ENV = {
    # A local node binds its servers to the host's address even when told 127.0.0.1 (Ray turns
    # localhost into the host IP) unless clusters are off, as on macOS: then all use loopback.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_ROTATION_MAX_BYTES": str(64 << 20),  # each log file at most 64 MiB (Ray's: 512 MiB x 5)
    "RAY_ROTATION_BACKUP_COUNT": "1",
}


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
        for name, value in {**_RAY_ENV, **({} if address else _LOCAL_RAY_ENV)}.items():
            os.environ.setdefault(name, value)
        _need(kind, "ray", "ray")
        RayTaskRunner = _need(kind, "prefect-ray", "prefect_ray").RayTaskRunner
        if address:
            return RayTaskRunner(address=address)
        # One CPU per task (Ray's default) and `width` CPUs: as many stage tasks at once as
        # Dask's workers. No dashboard UI (nothing here reads it; Ray still runs a minimal head
        # and its agents, on the loopback too).
        return RayTaskRunner(init_kwargs={"num_cpus": width, "include_dashboard": False})
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
