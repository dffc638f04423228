"""GPU slots: at most `run.gpu_slots` GPU tasks at once on each worker machine.

A task whose stage runs on a GPU backend (its stage declaration says so, tasks/stage.py) holds one slot
of a Prefect global concurrency limit named after its worker, as in Prefect's per-worker
task concurrency example: the server coordinates the slots, so the limit holds across the
flow runs (separate processes) a worker runs side by side and across Dask workers, while
CPU tasks run as wide as the task runner allows. Offline backends never touch the limit.

The worker's name comes from GEN4GEN_WORKER_ID (or WORKER_ID, as in Prefect's example),
else the host name: start one worker per GPU with its own id to get a limit per GPU.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
from typing import Iterator

_known: set[str] = set()
_lock = threading.Lock()


def worker_id() -> str:
    return os.environ.get("GEN4GEN_WORKER_ID") or os.environ.get("WORKER_ID") or socket.gethostname()


def limit_name(worker: str | None = None) -> str:
    # Limit names may not hold '/', '%', '&', '>' or '<': keep letters, digits, '-', '_', '.'.
    return "gen4gen-gpu-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", worker or worker_id())


def ensure(slots: int, name: str | None = None) -> str:
    """Create this worker's GPU limit with `slots` slots, or resize it; returns its name."""
    from prefect.client.orchestration import get_client

    name = name or limit_name()
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(name, slots)
    with _lock:
        _known.add(name)
    return name


def _exists(name: str) -> None:
    """A process that finds no limit (a remote Dask worker's host) creates one of 1 slot:
    one task per GPU is the safe default, never an unlimited GPU."""
    with _lock:
        if name in _known:
            return
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.upsert_global_concurrency_limit_by_name(name, 1)
    with _lock:
        _known.add(name)


@contextlib.contextmanager
def gpu_slot(needed: bool) -> Iterator[bool]:
    """Hold a GPU slot while the body runs when `needed` (the stage's backend is on a GPU);
    yields whether it did."""
    if not needed:
        yield False
        return
    with _hold():
        yield True


@contextlib.contextmanager
def device_slot(device: str) -> Iterator[bool]:
    """Train and evaluate run their model in the flow itself: they hold a slot of the same
    limit while they run on a CUDA device (`device` as resolved by models/hf.py)."""
    if not device.startswith("cuda"):
        yield False
        return
    with _hold():
        yield True


@contextlib.contextmanager
def _hold() -> Iterator[None]:
    from prefect.concurrency.sync import concurrency

    name = limit_name()
    _exists(name)
    with concurrency(name, occupy=1, strict=True):
        yield


def submitting(run, gpu: bool):
    """Context for submitting a stage's task: on Ray, a GPU stage asks for GPUs per task
    (prefect-ray's remote_options); elsewhere nothing (the slot is taken inside the task)."""
    if run.runner.kind != "ray" or not gpu:
        return contextlib.nullcontext()
    from prefect_ray.context import remote_options

    return remote_options(num_gpus=run.runner.gpus_per_task)
