"""What every stage shares: output keys, the per-sample loop, code fingerprints.

The per-sample loop is where "failures are data" is enforced: a BadInput fails that sample
with its reason and the loop goes on; any other exception (storage, network) propagates so
that the Prefect task retries the whole composition stage, whose writes are idempotent.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from gen4gen.infra import progress
from gen4gen.infra.errors import BadInput
from gen4gen.infra.records import Sample


def stage_path(composition: str, stage: str, sample: str, ext: str = "png") -> str:
    """The deterministic key of one stage's output, relative to the dataset URI.

    Records hold relative paths so a dataset stays valid when copied elsewhere (a local
    folder synced to S3) and two runs into different folders write identical records.
    """
    return f"{composition}/{stage}/{sample}.{ext}"


def each_sample(samples: list[Sample], stage: str, fn: Callable[[Sample], None]) -> list[Sample]:
    """Run fn on copies of the live samples, timing it and recording bad inputs.

    Copies, because in a thread-pool run the input records are the upstream task's
    results: changing them in place would change what that task returned.
    """
    samples = [s.model_copy(deep=True) for s in samples]
    for sample in samples:
        if not sample.alive:
            continue
        start = time.perf_counter()
        try:
            fn(sample)
        except BadInput as err:
            sample.fail(err.code, stage, str(err))
        sample.seconds[stage] = round(time.perf_counter() - start, 4)
    if samples:
        progress.advance(samples[0].composition, stage, len(samples))
    return samples


def digest(*parts: Any) -> str:
    """sha256 over JSON-serialised parts (pydantic records included), sorted keys."""
    h = hashlib.sha256()
    for part in parts:
        if hasattr(part, "model_dump"):
            part = part.model_dump(mode="json")
        h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()


def code_hash(obj: Any) -> str:
    """Fingerprint of the source file that defines obj (a class, function or module)."""
    module = inspect.getmodule(obj)
    path = Path(inspect.getsourcefile(module or obj))
    return _file_hash(str(path))


@lru_cache(maxsize=None)
def _file_hash(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def each_batch(samples: list[Sample], stage: str, size: int, fn: Callable[[list[Sample]], None]) -> list[Sample]:
    """Like each_sample, for a model that takes several samples per call (a GPU batch).

    fn(chunk) handles up to `size` live samples at once (and may fail single samples
    itself). When a chunk raises BadInput, the input that caused it is not known, so its
    samples are run again one at a time: only the bad one fails, with its reason. Each
    sample's time is its share of its chunk's.
    """
    samples = [s.model_copy(deep=True) for s in samples]
    live = [s for s in samples if s.alive]
    for start in range(0, len(live), max(1, size)):
        chunk = live[start : start + max(1, size)]
        began = time.perf_counter()
        try:
            fn(chunk)
            share = (time.perf_counter() - began) / len(chunk)
            for sample in chunk:
                sample.seconds[stage] = round(share, 4)
        except BadInput:
            for sample in chunk:
                one = time.perf_counter()
                try:
                    fn([sample])
                except BadInput as err:
                    sample.fail(err.code, stage, str(err))
                sample.seconds[stage] = round(time.perf_counter() - one, 4)
    if samples:
        progress.advance(samples[0].composition, stage, len(samples))
    return samples
