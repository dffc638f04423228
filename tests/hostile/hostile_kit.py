"""Shared by the hostile corpus (issue 14): inputs a careless or hostile user gives the factory, one
test module per class. Datasets are made by the stage functions chained without Prefect
(fast); the CLI runs in a subprocess, as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, small_recipe  # noqa: F401  (REPO: re-exported)

GEN4GEN = [sys.executable, "-m", "gen4gen.flows.cli"]


def gen4gen(*args: str, timeout: int = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*GEN4GEN, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, **kw)


def tiny_recipe(tmp: Path, out: Path | None = None) -> dict:
    raw = small_recipe(tmp, samples=1, canvas=128)
    raw["compositions"] = raw["compositions"][:1]
    raw["concepts"] = raw["concepts"][:2]
    if out is not None:
        raw["run"]["out"] = str(out)
    return raw


def publish_without_prefect(raw: dict):
    """A published dataset from the declared stages walked in a plain loop (no Prefect)."""
    from gen4gen.infra.records import DatasetConfig
    from gen4gen.tasks.pipeline import run_local

    return run_local(DatasetConfig.model_validate(raw))[0]


_PUBLISHED: list[Path] = []  # built once per test process, whichever module asks first


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Path:
    """A published tiny dataset, the same one for every module of the corpus; never
    written to: tests copy it before damaging it (`dataset`)."""
    if not _PUBLISHED:
        tmp = tmp_path_factory.mktemp("published")
        publish_without_prefect(tiny_recipe(tmp, tmp / "ds"))
        _PUBLISHED.append(tmp / "ds")
    return _PUBLISHED[0]


@pytest.fixture
def dataset(published, tmp_path) -> Path:
    import shutil

    copy = tmp_path / "ds"
    shutil.copytree(published, copy)
    return copy
