"""Cache policy for stage tasks: a rerun with the same config recomputes nothing.

Prefect's default policy includes the run id, so it never hits across runs. Ours keys on
the task's inputs (records and URIs), the task's own source, and the source of every stage,
model and infra module, so changing a backend invalidates what it produced.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy


# Code that only reads or shows results: changing the report page must not recompute datasets.
# So is where tasks run and how many GPU tasks run at once.
NOT_STAGE_CODE = {
    "tasks/report.py", "tasks/verify.py", "tasks/gallery.py", "infra/artifacts.py",
    "infra/limits.py", "infra/runners.py", "infra/serve.py",
}


@lru_cache(maxsize=1)
def factory_source_hash() -> str:
    """Fingerprint of all the factory's stage, model and infra code.

    Part of every stage task's cache key: TASK_SOURCE only sees the thin wrapper, while a
    change in a backend must invalidate cached results too.
    """
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for pkg in ("tasks", "models", "infra"):
        for f in sorted((root / pkg).rglob("*.py")):
            if str(f.relative_to(root)) in NOT_STAGE_CODE:
                continue
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


@dataclass
class FactorySource(CachePolicy):
    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any) -> str:
        return factory_source_hash()


GENERATION = ".cache/generation"


def output_generation(out: str) -> str:
    """A token that names this incarnation of the dataset folder, made on first use.

    Part of the key of every task that writes under `out`: when the folder is deleted, the
    token goes with it, so results cached elsewhere (a separate results bucket) stop
    matching instead of pointing at files that are gone.
    """
    import uuid

    from gen4gen.infra.storage import exists, join, read_bytes, write_bytes

    uri = join(out, GENERATION)
    if not exists(uri):
        write_bytes(uri, uuid.uuid4().hex.encode())
    return read_bytes(uri).decode()


@dataclass
class OutputGeneration(CachePolicy):
    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        out = inputs.get("out")
        return output_generation(out) if isinstance(out, str) else None


STAGE_CACHE = INPUTS + TASK_SOURCE + FactorySource() + OutputGeneration()


RESULTS_ENV = "GEN4GEN_RESULT_STORAGE"
RESULTS_BLOCK = "remote-file-system/gen4gen-results"  # the block `gen4gen serve` saves


def result_storage_for(out: str, setting: str | None = None) -> "str | Path | None":
    """Where cached task results live (Prefect's `result_storage`).

    `setting` (the recipe's run.result_storage, else $GEN4GEN_RESULT_STORAGE) is a saved
    block's slug (`remote-file-system/gen4gen-results`: results in their own bucket or
    prefix, apart from the dataset's keys) or a URI. Without one, results go beside the
    dataset, `{out}/.cache/prefect-results`, on a local disk or on S3 alike: deleting the
    dataset then also forgets its cache, so a cache hit never points at files that are gone.
    Credentials are never part of a block we build: s3fs reads them from the environment.
    """
    from gen4gen.infra.storage import join, resolve

    setting = setting or os.environ.get(RESULTS_ENV) or None
    if setting and "://" not in setting and not setting.startswith(("/", ".", "~")):
        return setting  # a block slug: Prefect loads the saved block
    uri = resolve(setting) if setting else join(resolve(out), ".cache", "prefect-results")
    if uri.startswith("file://"):
        return Path(uri[len("file://") :])
    # Prefect takes only saved blocks as remote result storage: one per place, named by it.
    try:
        return save_results_block(uri, name=f"gen4gen-results-{hashlib.sha256(uri.encode()).hexdigest()[:12]}")
    except ValueError:
        # A file system Prefect's block refuses (no location after the scheme, such as the
        # tests' fault-injecting faulty:///path): Prefect's default result storage, as before.
        return None


def save_results_block(basepath: str, name: str = RESULTS_BLOCK.split("/", 1)[1]) -> str:
    """Save a result-storage block (no credentials in it) and return its slug."""
    from prefect.filesystems import RemoteFileSystem

    RemoteFileSystem(basepath=basepath).save(name, overwrite=True)
    return f"remote-file-system/{name}"
