"""GPU tasks hold a slot of the worker's Prefect concurrency limit; CPU tasks do not."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner

from gen4gen.infra import limits
from gen4gen.models import registry
from gen4gen.infra.records import DatasetConfig, StagesConfig
from gen4gen.tasks.stage import uses_gpu

pytestmark = pytest.mark.usefixtures("prefect_harness")

HOLD = 1.0
TRY_MEET = 20.0  # long enough for two tasks to start on a busy machine


# Tasks that must be inside together meet here: a limit that serialised them would
# break the barrier on its timeout. Timing-free, so a busy machine cannot fake a result.
together: dict[str, threading.Barrier] = {}


@task
def stage(kind: str, backend: str, spans: list, lock: threading.Lock) -> bool:
    with limits.gpu_slot(registry.uses_gpu("repaint", backend)) as held:
        start = time.monotonic()
        if kind in together:
            try:
                together[kind].wait(timeout=TRY_MEET)
            except threading.BrokenBarrierError:
                pass  # could not meet: the test reads that from the barrier
        else:
            time.sleep(HOLD)
        with lock:
            spans.append((kind, start, time.monotonic()))
    return held


def overlaps(spans: list[tuple[str, float, float]]) -> bool:
    spans = sorted(spans, key=lambda s: s[1])
    return any(b[1] < a[2] for a, b in zip(spans, spans[1:]))


def test_two_gpu_tasks_never_overlap_under_one_slot_while_cpu_tasks_do(monkeypatch):
    monkeypatch.setenv("GEN4GEN_WORKER_ID", f"test-{uuid.uuid4().hex[:8]}")
    name = limits.ensure(1)
    together.clear()
    together["cpu"] = threading.Barrier(2)
    together["gpu"] = threading.Barrier(2, timeout=TRY_MEET)
    assert name == limits.limit_name()
    spans: list = []
    lock = threading.Lock()

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=4))
    def side_by_side():
        futures = [stage.submit(k, b, spans, lock) for k, b in (("gpu", "sdxl"), ("gpu", "sdxl"), ("cpu", "offline"), ("cpu", "offline"))]
        return [f.result() for f in futures]

    held = side_by_side()
    assert held == [True, True, False, False]
    gpu = [s for s in spans if s[0] == "gpu"]
    cpu = [s for s in spans if s[0] == "cpu"]
    assert not overlaps(gpu), f"GPU tasks overlapped under a limit of 1: {gpu}"
    assert together["gpu"].broken  # the first waited in vain: the second could not enter
    assert overlaps(cpu) and not together["cpu"].broken, f"CPU tasks ran one after the other: {cpu}"


def test_two_slots_let_two_gpu_tasks_run_together(monkeypatch):
    monkeypatch.setenv("GEN4GEN_WORKER_ID", f"test-{uuid.uuid4().hex[:8]}")
    limits.ensure(2)
    together.clear()
    together["gpu"] = threading.Barrier(2)
    spans: list = []
    lock = threading.Lock()

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
    def two():
        return [f.result() for f in [stage.submit("gpu", "sdxl", spans, lock) for _ in range(2)]]

    assert two() == [True, True]  # each passed the barrier: both held a slot at once
    assert overlaps(spans) and not together["gpu"].broken


def test_a_worker_without_a_limit_gets_one_slot_not_an_unlimited_gpu(monkeypatch):
    from prefect.client.orchestration import get_client

    monkeypatch.setenv("GEN4GEN_WORKER_ID", f"fresh-{uuid.uuid4().hex[:8]}")
    with limits.gpu_slot(registry.uses_gpu("segment", "sam")) as held:
        assert held
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(limits.limit_name()).limit == 1


def test_gpu_knowledge_lives_in_the_registry():
    assert not any(registry.uses_gpu(f, b) for f, b in [("segment", "offline"), ("repaint", "offline"), ("caption", "template"), ("filter", "rules"), ("plan", "openai")])
    assert all(registry.uses_gpu(f, b) for f, b in [("segment", "sam"), ("repaint", "sdxl"), ("repaint", "sd-inpaint"), ("caption", "llava"), ("filter", "clip")])

    @registry.register("caption", "test-gpu-captioner", gpu=True)
    def _factory(**_):
        return None

    try:
        assert registry.uses_gpu("caption", "test-gpu-captioner")
        stages = StagesConfig.model_validate({"caption": {"backend": "test-gpu-captioner"}})
        assert uses_gpu(stages) and not uses_gpu(DatasetConfig.model_fields["stages"].default)
    finally:
        registry.unregister("caption", "test-gpu-captioner")


def test_limit_names_are_safe_for_the_server():
    assert limits.limit_name("gpu node/1 & 2") == "gen4gen-gpu-gpu-node-1-2"


def test_train_and_evaluate_take_no_gpu_slot_on_the_cpu():
    """Their models run in the flow's own tasks: a slot only when the device is CUDA."""
    from gen4gen.infra.limits import device_slot
    from gen4gen.models import hf

    with device_slot(hf.device("auto")) as held:  # as train and evaluate resolve it
        assert held is False
    with pytest.raises(ValueError, match="no CUDA device"):
        with device_slot(hf.device("cuda")):
            pass
