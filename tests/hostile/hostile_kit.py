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
    """A published dataset from the stage functions called in order (no Prefect)."""
    from gen4gen.infra.records import DatasetConfig
    from gen4gen.tasks.caption import caption_samples
    from gen4gen.tasks.composite import composite_samples
    from gen4gen.tasks.filter import filter_samples
    from gen4gen.tasks.plan import plan_dataset
    from gen4gen.tasks.publish import collect_composition, publish_dataset
    from gen4gen.tasks.repaint import repaint_samples
    from gen4gen.tasks.segment import cutouts_by_photo, segment_concept

    config = DatasetConfig.model_validate(raw)
    out = config.out
    cutouts = {c.id: segment_concept(c, out, config.stages.segment) for c in config.concepts}
    planned = plan_dataset(config, cutouts)
    stats = []
    for comp in config.compositions:
        s = composite_samples(planned[comp.id], cutouts_by_photo(cutouts, comp.concepts), out)
        s = repaint_samples(s, out, config.stages.repaint)
        s = filter_samples(caption_samples(s, config), out, config.stages.filter)
        stats.append(collect_composition(s, out))
    return publish_dataset(config, out, stats, cutouts)


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Path:
    """A published tiny dataset; tests copy it before damaging it."""
    tmp = tmp_path_factory.mktemp("published")
    publish_without_prefect(tiny_recipe(tmp, tmp / "ds"))
    return tmp / "ds"


@pytest.fixture
def dataset(published, tmp_path) -> Path:
    import shutil

    copy = tmp_path / "ds"
    shutil.copytree(published, copy)
    return copy
