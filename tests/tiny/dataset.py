"""A small published dataset and a tiny base model for the training tests, built once per
test process (the generate flow on the small recipe at a 128 px canvas)."""

from __future__ import annotations

import tempfile
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def published_small() -> str:
    """URI of a published dataset (2 compositions, 2 samples each). Needs a Prefect server
    (the `prefect_harness` fixture) the first time."""
    from conftest import run_recipe, small_recipe

    folder = Path(tempfile.mkdtemp(prefix="gen4gen-train-data-"))
    return run_recipe(small_recipe(folder, samples=2, canvas=128)).uri


@lru_cache(maxsize=1)
def tiny_base() -> str:
    """Folder of a tiny StableDiffusionPipeline (random weights)."""
    from tests.tiny.sd import tiny_sd

    return str(tiny_sd(Path(tempfile.mkdtemp(prefix="gen4gen-tiny-sd-")) / "sd"))
