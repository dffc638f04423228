"""Test set-up shared by the three tiers: offline, quiet, isolated Prefect home.

The environment is set at import time, before any test module imports Prefect, whose
settings are read once.

`make test` runs the suite on several processes (pytest-xdist, `-n N --dist loadgroup`).
Each worker imports this file itself, so everything set here is per worker: its own
temporary home (Prefect's database, HF cache), its own Prefect test server, its own S3
server, its own tiny models (the session fixtures below). What a test makes goes under its
`tmp_path` (per worker too). Tests that must not run beside one another, or that share an
expensive module fixture, are kept on one worker by `pytest_collection_modifyitems` below.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")  # gw0, gw1, ... under xdist
_HOME = tempfile.mkdtemp(prefix=f"gen4gen-tests-{_WORKER}-")
# Where `gen4gen weights fetch` put real weights before the run (CI fetches IS-Net's): only
# the tests that ask for them read it (`real_weights`). Every other test sees an empty
# GEN4GEN_CACHE, so `segment: auto` is `offline` for them whatever this machine has.
# xdist workers inherit the controller's environment, already pointed at its empty cache: the
# controller keeps the real one in GEN4GEN_REAL_CACHE for them.
REAL_CACHE = (os.environ.get("GEN4GEN_REAL_CACHE") or os.environ.get("GEN4GEN_CACHE")
              or os.path.join(os.path.expanduser("~"), ".cache", "gen4gen"))
os.environ["GEN4GEN_REAL_CACHE"] = REAL_CACHE
os.environ.update(
    {
        "GEN4GEN_CACHE": os.path.join(_HOME, "gen4gen-cache"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": os.path.join(_HOME, "hf"),
        "PREFECT_HOME": os.path.join(_HOME, "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        # tests/faults.py's fault-injecting file system, accepted like s3 (infra/storage.py).
        "GEN4GEN_EXTRA_SCHEMES": "faulty",
    }
)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "configs" / "demo.yaml"


def real_weights(size: str = "medium") -> Path:
    """The real IS-Net file `gen4gen weights fetch isnet` stored before the tests (skips the
    test, saying why, when it is not there or is not the pinned file)."""
    from gen4gen.models.segment import weights

    path = weights.weights_path(size, env={"GEN4GEN_CACHE": REAL_CACHE})
    if not path.is_file():
        pytest.skip(f"no real IS-Net {size} weights at {path} (`gen4gen weights fetch isnet` puts them there)")
    if weights.file_sha256(path) != weights.ISNET[size].sha256:
        pytest.skip(f"{path} is not the pinned IS-Net {size} model")
    return path


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server and database for every flow test of the session."""
    from prefect.testing.utilities import prefect_test_harness

    # Up to 3 start at once under xdist, beside the suite: a busy 2-core machine needs longer.
    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run on one torch thread: a 32-wide layer gains nothing from threads, and
    on a busy machine their spin-waiting made each call many times slower (measured 20x)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def _moto_endpoint():
    """One S3-API server (moto) per test process, on a port the OS picks (no race between
    workers); `s3_server` empties it for each test."""
    server_mod = pytest.importorskip("moto.server")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_server(_moto_endpoint, monkeypatch):
    """A real S3-API server (moto) on 127.0.0.1 with a bucket `factory`, empty at the start
    of each test (the server itself is started once per test process).

    The endpoint and credentials go into the environment, where s3fs (and any subprocess
    the test starts) find them.
    """
    endpoint = _moto_endpoint
    for key, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    import urllib.request

    import boto3
    import s3fs

    # Start each test from empty buckets, or it sees the files an earlier test left.
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="factory")
    s3fs.S3FileSystem.clear_instance_cache()
    yield "s3://factory"
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="session")
def demo_published(tmp_path_factory):
    """The shipped demo recipe, one sample per composition, published once per test process
    by the CLI as a user runs it (`gen4gen generate configs/demo.yaml --samples 1`, its own
    temporary Prefect server): (folder, the finished command). Tests read it and never
    write to it; a test that damages it copies it first."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("demo-published") / "demo"
    result = subprocess.run([sys.executable, "-m", "gen4gen.flows.cli", "generate", str(DEMO), "--out", str(out),
                             "--samples", "1"], cwd=REPO, capture_output=True, text=True, timeout=300)
    return out, result


def small_recipe(tmp_path: Path, samples: int = 2, canvas: int = 256, extra_concepts=(), extra_compositions=()) -> dict:
    """A small recipe on the demo's package photos: quick enough for flow tests."""
    concepts = [
        {"id": "chelsea", "category": "cat", "token": "<chelsea>", "photos": ["pkgdata://skimage/data/chelsea.png"]},
        {"id": "coffee", "category": "mug", "token": "<coffee>", "photos": ["pkgdata://skimage/data/coffee.png"]},
        {"id": "rocket", "category": "rocket", "token": "<rocket>", "photos": ["pkgdata://skimage/data/rocket.jpg"]},
        *extra_concepts,
    ]
    compositions = [
        {"id": "cat-mug", "concepts": ["chelsea", "coffee"], "samples": samples},
        {"id": "cat-mug-rocket", "concepts": ["chelsea", "coffee", "rocket"], "samples": samples},
        *extra_compositions,
    ]
    return {
        "name": "small",
        "canvas": canvas,
        "concepts": concepts,
        "compositions": compositions,
        "run": {"out": str(tmp_path / "out"), "workers": 2, "retries": 1, "retry_delay_seconds": 0},
    }


def run_recipe(raw: dict, out: str | None = None):
    """Validate a recipe and run the generate flow on it (under the test's Prefect server);
    returns the manifest. `out` overrides the recipe's own output."""
    from gen4gen.flows.generate import run_generate
    from gen4gen.infra.records import DatasetConfig

    config = DatasetConfig.model_validate(raw)
    return run_generate(config, out or config.out)


def write_uniform_photo(path: Path, value: int = 128) -> str:
    """A photo with nothing in it: the segmenter finds no foreground."""
    Image.fromarray(np.full((120, 160, 3), value, np.uint8)).save(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_vision(tmp_path_factory) -> dict:
    """Tiny CLIP and OWL-ViT (random weights) saved once per session: vision options
    {"clip": {...}, "owlvit": {...}} as a config would give them."""
    from tests.tiny.vision import tiny_clip, tiny_owlvit

    root = tmp_path_factory.mktemp("tiny-vision")
    return {"clip": tiny_clip(root / "clip"), "owlvit": {"model": str(tiny_owlvit(root / "owlvit")), "device": "cpu"}}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> dict:
    """A tiny SD base model and two checkpoints (steps 100, 200) of one training run in the
    CONTRACTS.md format, built once per session (tests/tiny/checkpoint.py)."""
    from tests.tiny.checkpoint import tiny_run as build

    return build(tmp_path_factory.mktemp("tiny-run"))


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the groups set here
def pytest_collection_modifyitems(config, items):
    _skip_gpu_tests(items)
    _keep_together(items)
    _long_ones_first(config, items)


def _skip_gpu_tests(items) -> None:
    """Tests marked `gpu` run only where torch sees a CUDA device (skipped, with the reason,
    on the project's CPU machines)."""
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if item.get_closest_marker("gpu"):
                item.add_marker(skip)


# Module fixtures cheap enough to set up again on every worker that runs one of the tests.
_CHEAP_MODULE_FIXTURES = {"one_torch_thread", "prompt_file"}
# Session fixtures that cost a whole run: the tests that read one share a group (a worker).
_SHARED_SESSION_FIXTURES = ("demo_published",)


def _keep_together(items) -> None:
    """Under `--dist loadgroup` a test goes to any free worker unless it is in an xdist
    group. A test that uses a module fixture (a published dataset, tiny models) joins its
    module's group, so that fixture is built once, on one worker, as in a serial run.
    Tests that must not run beside each other (Ray or Dask clusters, signals) carry an
    explicit `@pytest.mark.xdist_group(name)` in their module, which wins."""
    for item in items:
        if item.get_closest_marker("xdist_group"):
            continue
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        shared = [name for name in _SHARED_SESSION_FIXTURES if name in info.names_closure]
        if shared:  # its readers on one worker: built once
            item.add_marker(pytest.mark.xdist_group(shared[0]))
            continue
        for name in info.names_closure:
            defs = info.name2fixturedefs.get(name)
            if defs and defs[-1].scope in ("module", "class") and name not in _CHEAP_MODULE_FIXTURES:
                item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
                break


class _GroupsInNodeIds:
    """xdist's loadgroup tells the scheduler a test's group by appending `@group` to its
    node id, through `item._nodeid`, which pytest 9.2 no longer reads (pytest-xdist issue
    1386, fix proposed in its PR 1388): every group is silently ignored. Until a release
    does it, the suffix is put where pytest 9.2 keeps the id; a no-op where it took."""

    @pytest.hookimpl(trylast=True)  # after xdist's own hook
    def pytest_collection_modifyitems(self, config, items):
        if not config.getvalue("loadgroup"):
            return
        from _pytest.nodeid import NodeId

        for item in items:
            names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                            for m in item.iter_markers("xdist_group")})
            suffix = "@" + "_".join(names)
            if names and not item.nodeid.endswith(suffix) and isinstance(getattr(item, "_id", None), NodeId):
                item._id = NodeId.parse(item.nodeid + suffix)


def pytest_configure(config):
    if hasattr(config, "workerinput"):  # an xdist worker
        config.pluginmanager.register(_GroupsInNodeIds(), "gen4gen-xdist-group-ids")


def _weight(item) -> int:
    """0 for a test that runs a whole flow, the CLI or a server (marked `slow`), 1 for one
    that needs the Prefect test server or a tiny model, 2 for the rest."""
    if item.get_closest_marker("slow"):
        return 0
    names = set(getattr(getattr(item, "_fixtureinfo", None), "names_closure", ()))
    return 1 if names & {"prefect_harness", "tiny_run", "tiny_vision"} else 2


def _long_ones_first(config, items) -> None:
    """Under xdist the workers take work in collection order (`--no-loadscope-reorder`):
    the long tests go first, so that none starts last and runs alone at the end. A group
    moves with its longest test (one unit of work). A serial run keeps the files' order,
    each module in one piece (no module fixture is built twice)."""
    if hasattr(config, "workerinput"):
        items.sort(key=_weight)  # stable
