"""Cache policy for stage tasks: a rerun with the same config recomputes nothing.

Prefect's default policy includes the run id, so it never hits across runs. Ours keys on
the task's inputs (records and URIs), the task's own source, and the source of every stage,
model and infra module, so changing a backend invalidates what it produced.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy


# Code that only reads or shows results: changing the report page must not recompute datasets.
NOT_STAGE_CODE = {"tasks/report.py", "tasks/verify.py", "tasks/gallery.py", "infra/artifacts.py"}


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


STAGE_CACHE = INPUTS + TASK_SOURCE + FactorySource()


def result_storage_for(out: str) -> Path | None:
    """Where cached task results live: beside the dataset when it is on a local disk.

    Keeping them inside the output folder means deleting the dataset also forgets the
    cache, so a cache hit never points at files that are gone. For remote outputs the
    worker's default result storage is used (a saved S3 block comes with deployments).
    """
    from infra.storage import resolve

    uri = resolve(out)
    if uri.startswith("file://"):
        return Path(uri[len("file://") :]) / ".cache" / "prefect-results"
    return None
