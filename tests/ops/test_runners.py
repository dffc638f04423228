"""The task runner comes from the recipe: threads by default, Dask, or Ray when installed."""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import sys
import threading
import time
from collections import Counter

import psutil
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


HAS_RAY = importlib.util.find_spec("prefect_ray") is not None and importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="needs the ray extra (pip install -e '.[ray]')")
# The tests that start a local Ray node run one after the other, on one worker under xdist.
one_ray_node = pytest.mark.xdist_group("ray")


@needs_ray
def test_ray_local_instance_or_a_cluster_address():
    from prefect_ray import RayTaskRunner

    local = task_runner(RunConfig.model_validate({"workers": 3, "runner": {"kind": "ray", "workers": 2}}))
    assert isinstance(local, RayTaskRunner) and local.address is None
    assert local.init_kwargs["num_cpus"] == 2 and local.init_kwargs["include_dashboard"] is False
    remote = task_runner(RunConfig.model_validate({"runner": {"kind": "ray", "address": "ray://head:10001"}}))
    assert remote.address == "ray://head:10001"


def test_ray_without_its_package_is_a_clear_error(monkeypatch):
    # As on a machine without the `ray` extra: a None in sys.modules makes the import fail.
    monkeypatch.setitem(sys.modules, "prefect_ray", None)
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
    bar: Counter = Counter()  # what the CLI's bar is told here, in the flow's process
    stop = progress.listen_computed(lambda comp, stage, n: here.append((comp, stage)))
    stop_bar = progress.listen(lambda comp, stage, n: bar.update({stage: n}))
    try:
        dask = run_recipe(raw, str(tmp_path / "dask"))
    finally:
        stop(), stop_bar()
    assert here == [], f"stages ran in the flow's process, not on the Dask workers: {here}"
    # The bar still counts every sample of every stage once, told as each stage task ends.
    assert {k: bar[k] for k in ("composite", "repaint", "caption", "filter")} == dict.fromkeys(
        ("composite", "repaint", "caption", "filter"), dask.planned)
    assert dask.kept == threads.kept and dask.planned == threads.planned
    assert dask.files == threads.files  # every published file, byte for byte (sha256)

    # A cached rerun on threads: each sample counted once per stage (told in the stage's
    # thread, then settled without counting it again), not stuck at 0.
    raw["run"]["runner"] = {"kind": "threads"}
    bar.clear()
    stop_bar = progress.listen(lambda comp, stage, n: bar.update({stage: n}))
    try:
        run_recipe(raw, str(tmp_path / "threads"))
    finally:
        stop_bar()
    assert {k: bar[k] for k in ("composite", "repaint", "caption", "filter")} == dict.fromkeys(
        ("composite", "repaint", "caption", "filter"), threads.planned)


@pytest.fixture
def ray_tmpdir(monkeypatch):
    """Ray's files (sockets, logs, spilled objects) in a folder of the test's own, removed
    after: a short path, as a Unix socket's may be at most 107 bytes (tmp_path's are long)."""
    import shutil
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp(prefix="g4g-ray-"))
    monkeypatch.setenv("RAY_TMPDIR", str(folder))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _ray_children() -> list[psutil.Process]:
    """This process's descendants that are Ray's (its servers, agents and workers)."""
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            name, cmd = p.name(), " ".join(p.cmdline())
        except psutil.Error:
            continue
        if name in ("raylet", "gcs_server") or name.startswith("ray::") or "site-packages/ray/" in cmd:
            found.append(p)
    return found


def _assert_no_ray_left(within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while (left := _ray_children()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"Ray processes still running: {[(p.pid, p.name()) for p in left]}"


class _Listening(threading.Thread):
    """Notes, every half second, the addresses Ray's processes listen on."""

    def __init__(self):
        super().__init__(daemon=True)
        self.seen: set[tuple[str, str]] = set()
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.wait(0.5):
            pids = {p.pid: p for p in _ray_children()}
            for c in psutil.net_connections("inet"):
                if c.status == psutil.CONN_LISTEN and c.pid in pids:
                    self.seen.add((pids[c.pid].name(), c.laddr.ip))


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    return addr.is_loopback or bool(getattr(addr, "ipv4_mapped", None) and addr.ipv4_mapped.is_loopback)


@needs_ray
@one_ray_node
@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_a_local_ray_instance_publishes_the_same_dataset_on_the_loopback_only(tmp_path, ray_tmpdir):
    from gen4gen.infra import progress

    raw = small_recipe(tmp_path, samples=1, canvas=128)
    threads = run_recipe(raw, str(tmp_path / "threads"))
    raw["run"]["runner"] = {"kind": "ray", "workers": 2}
    here: list = []  # stages report progress in their own process: none may run in this one
    stop = progress.listen_computed(lambda comp, stage, n: here.append((comp, stage)))
    listening = _Listening()
    listening.start()
    try:
        on_ray = run_recipe(raw, str(tmp_path / "ray"))
    finally:
        stop()
        listening.stopped.set()
        listening.join()
    assert here == [], f"stages ran in the flow's process, not on Ray's workers: {here}"
    assert on_ray.kept == threads.kept and on_ray.planned == threads.planned
    assert on_ray.files == threads.files  # every published file, byte for byte (sha256)
    assert {name for name, _ in listening.seen} >= {"raylet", "gcs_server"}, listening.seen
    beyond = {(name, ip) for name, ip in listening.seen if not _loopback(ip)}
    assert not beyond, f"Ray listened beyond the loopback: {beyond}"
    assert (ray_tmpdir / "ray").is_dir()  # Ray's files went where it was told
    _assert_no_ray_left()  # the runner shut down the instance it started


@needs_ray
@one_ray_node
@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_on_ray_a_gpu_stage_asks_for_gpus_per_task_and_a_cpu_stage_for_none(
    tmp_path, ray_tmpdir, monkeypatch
):
    from pathlib import Path

    import ray_probe

    notes = tmp_path / "notes"
    notes.mkdir()
    monkeypatch.setenv(ray_probe.NOTES, str(notes))  # Ray's processes inherit it
    monkeypatch.setenv("PYTHONPATH", str(Path(ray_probe.__file__).parent))  # ...and import it
    raw = small_recipe(tmp_path, samples=1, canvas=96)
    raw["stages"] = {"caption": {"backend": "noting-gpu"}, "filter": {"backend": "noting-cpu"}}
    raw["run"]["runner"] = {"kind": "ray", "workers": 2, "gpus_per_task": 0.5}
    raw["run"]["gpu_slots"] = 2  # both compositions caption at once (the Ray GPU holds two)
    task_runner(RunConfig.model_validate(raw["run"]))  # Ray's environment, before Ray starts
    import ray

    ray_probe.register()
    # Ray counts a GPU it is told of (no device needed). Started here, for the workers' hook;
    # the flow's runner uses a Ray already started and leaves it running.
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False,
             runtime_env={"worker_process_setup_hook": "ray_probe.register"})
    try:
        run_recipe(raw, str(tmp_path / "out"))
    finally:
        ray.shutdown()
        ray_probe.unregister()
    _assert_no_ray_left()
    got = sorted((f.name.split("-")[0], json.loads(f.read_text())) for f in notes.iterdir())
    # One caption and one filter task per composition, each noting what Ray gave it.
    assert got == [("caption", {"CPU": 1.0, "GPU": 0.5})] * 2 + [("filter", {"CPU": 1.0})] * 2, got
