"""The stage layer: each generate stage declared once, and the one loop that runs it.

A `Stage` says what a stage is: its name (a verb), the registry family of its backend and
the Protocol that backend implements (models/contracts.py), the slice of the recipe it
reads (`settings`, part of its key), the stage its input comes from (`after`), its own
code (modules whose source is its code version), and what it needs to run (a GPU, from
its backend's declaration in models/registry.py). Where it runs (threads, Dask, Ray) is
the flow's business; how its model is set up, kept and released is the registry's.

Identity follows the data. A sample's id is its plan's key; every later stage's key hashes
the key of the output it reads, its own settings and its own code version:

    key(stage) = sha256(key(after), settings(stage), code(stage) [+ inputs(stage)])

so a change recomputes that stage and those after it, never those before, and code outside
the stages (train, evaluate, report, the CLI) changes no key. Each sample's output is
committed by a small JSON record written after its files (`{composition}/{stage}/
{sample}-{key}.json`, a completion marker as in datatrove): a stage skips every sample
whose record exists, so the unit of resume and of incremental work is the sample. Records
are plain JSON the factory validates on reading, never pickles (no code runs from data).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from gen4gen.infra import progress
from gen4gen.infra.errors import BadInput
from gen4gen.infra.limits import gpu_slot
from gen4gen.infra.records import Composition, Cutout, DatasetConfig, Sample, SampleSet, StagesConfig
from gen4gen.infra.storage import exists, inside, join, list_files, read_bytes, sha256, write_bytes
from gen4gen.models import registry
from gen4gen.tasks.common import digest
from gen4gen.tasks.reader import read_samples

# How stage images are encoded (infra/storage.py: encode_png), in the key of every stage that
# writes images: the encoder lives in the foundation, outside any stage's code version, so a
# change there that alters bytes must bump this.
IMAGE_FORMAT = "png/1"
# Stage outputs live in a hidden folder: loaders (datasets' imagefolder, training scripts) skip
# dot-folders, so they see only the published tree.
STAGES_DIR = ".stages"
KEY_LENGTH = 12  # hex digits of a key in a file name: 48 bits, no collision at any real size
# What a sample-stage's record may change on the sample; the rest (id, plan, tokens, keys)
# is the input's, so a token renamed since the record was written is never brought back.
STATE = ("paths", "hashes", "caption", "status", "reasons", "measures", "notes")


@dataclass(frozen=True)
class Job:
    """What one stage task works on: one composition's samples, as the recipe says."""

    out: str
    config: DatasetConfig  # the recipe as this composition sees it (its concepts only)
    composition: Composition
    cutouts: dict[str, Cutout] = field(default_factory=dict)  # photo URI -> cut-out
    refresh: bool = False  # recompute even where a record exists (--no-cache)


Process = Callable[[list[Sample], Job, Any], None]


@dataclass(frozen=True)
class Stage:
    """One declared generate stage. `process(samples, job, model)` fills each sample's
    outputs in place (`model`: the backend held for the call, or None without a family)."""

    name: str
    family: str | None
    contract: type | None
    modules: tuple[str, ...]
    settings: Callable[[DatasetConfig, Composition], Any]
    after: str | None = None
    process: Process | None = None
    inputs: Callable[[Sample, Job], Any] | None = None  # more input identity (composite: masks)
    options: Callable[[DatasetConfig, Job | None], dict] | None = None  # backend options

    def backend(self, config: DatasetConfig) -> str | None:
        return getattr(config.stages, self.family).backend if self.family else None

    def backend_options(self, config: DatasetConfig, job: Job | None = None) -> dict:
        if self.options is not None:
            return self.options(config, job)
        return dict(getattr(config.stages, self.family).options) if self.family else {}

    def gpu(self, config: DatasetConfig) -> bool:
        """Whether this stage needs a GPU on this recipe (its backend's declaration)."""
        return bool(self.family) and registry.uses_gpu(self.family, self.backend(config))

    def code_version(self, config: DatasetConfig) -> str:
        return self.code_for(self.backend(config))

    def code_for(self, backend: str | None) -> str:
        """The stage's own modules and its backend's (models/registry.py: code_version)."""
        own = registry.modules_hash(self.modules)
        theirs = registry.code_version(self.family, backend) if self.family and backend else ""
        return hashlib.sha256((own + theirs).encode()).hexdigest()

    def key(self, sample: Sample, job: Job) -> str:
        extra = self.inputs(sample, job) if self.inputs else None
        upstream = sample.stage_keys[self.after] if self.after else sample.id
        return digest(upstream, extra, self.settings(job.config, job.composition),
                      self.code_version(job.config))[:KEY_LENGTH]

    def path(self, sample: Sample, ext: str = "png", output: str | None = None) -> str:
        """Where this stage's output `output` (default: the stage's name) of a sample goes,
        relative to the dataset URI, named by the sample and its key at this stage."""
        return f"{STAGES_DIR}/{sample.composition}/{output or self.name}/{sample.id}-{sample.stage_keys[self.name]}.{ext}"


def uses_gpu(stages: StagesConfig) -> bool:
    """Whether any stage of a recipe's stages runs on a GPU backend."""
    return any(registry.uses_gpu(f, getattr(getattr(stages, f), "backend", None))
               for f in ("plan", "segment", "repaint", "caption", "filter"))


# --------------------------------------------------------------------------- the sample loop


def run_samples(stage: Stage, samples: list[Sample], job: Job) -> list[Sample]:
    """Run one stage over one composition's samples: reuse every sample's committed record,
    compute the rest in one call to `stage.process`, commit each one's record after its files.

    Works on copies: in a thread-pool run the input records are the upstream task's results.
    The model is loaded, and a GPU slot taken, only when some sample needs computing.
    """
    samples = [s.model_copy(deep=True) for s in samples]
    live = [s for s in samples if s.alive]
    for s in live:
        s.stage_keys[stage.name] = stage.key(s, job)
    committed = set() if job.refresh else committed_names(job.out, job.composition.id, stage.name)
    todo = []
    for s in live:
        start = time.perf_counter()
        record = stage.path(s, "json")
        cached = read_record(job.out, record) if record.rsplit("/", 1)[1] in committed else None
        if cached is None or cached.id != s.id:
            todo.append(s)
            continue
        for name in STATE:
            setattr(s, name, getattr(cached, name))
        s.seconds[stage.name] = round(time.perf_counter() - start, 4)
    if todo:
        with gpu_slot(stage.gpu(job.config)):
            if stage.family:
                backend = stage.backend(job.config)
                with registry.use(stage.family, backend, stage.backend_options(job.config, job)) as model:
                    if stage.contract is not None and not isinstance(model, stage.contract):
                        raise TypeError(f"stages.{stage.family}.backend {backend!r}: "
                                        f"{type(model).__name__} does not implement {stage.contract.__name__}")
                    stage.process(todo, job, model)
            else:
                stage.process(todo, job, None)
        for s in todo:
            # After the sample's files: a record that exists points at whole outputs.
            write_bytes(join(job.out, stage.path(s, "json")), s.model_dump_json(exclude={"seconds"}).encode())
        progress.computed(job.composition.id, stage.name, len(todo))
    if samples:
        progress.advance(job.composition.id, stage.name, len(samples))
    return samples


# --------------------------------------------------------------------------- hand-over


def run_set(stage: Stage, given: SampleSet, job: Job) -> SampleSet:
    """What a stage task does: take the set the previous task handed on, run the stage
    over it, hand its own set on.

    A set the stage made before from the same input, at the same sample keys, is handed on
    as it is (a note in the stage's folder, `from-{key}.json`, names it): an unchanged
    composition costs a few files however many samples it has. Where anything differs the
    sample loop decides per sample, as always.
    """
    start = time.perf_counter()
    samples = take(job.out, given)
    keys = [stage.key(s, job) if s.alive else "" for s in samples]
    note = join(job.out, STAGES_DIR, job.composition.id, stage.name,
                f"from-{digest(given.sha256, keys)[:KEY_LENGTH]}.json")
    made = None if job.refresh else _read_set(job.out, note)
    if made is not None:
        progress.advance(job.composition.id, stage.name, len(samples))
        return made.model_copy(update={"seconds": {**given.seconds, stage.name: round(time.perf_counter() - start, 4)}})
    handed = hand_on(job.out, stage.name, run_samples(stage, samples, job), given.seconds)
    write_bytes(note, handed.model_dump_json(exclude={"seconds"}).encode())  # after the set it names
    return handed


def _read_set(out: str, note: str) -> SampleSet | None:
    """The set a note names, when the note is readable and its set is still there."""
    try:
        made = SampleSet.model_validate_json(read_bytes(note))
        return made if exists(inside(out, made.path, note)) else None
    except (BadInput, FileNotFoundError, ValueError):
        return None


def hand_on(out: str, stage: str, samples: list[Sample], seconds: dict[str, float] | None = None) -> SampleSet:
    """Write one composition's samples after `stage` as a JSONL in the stage's folder and
    return its SampleSet; `seconds` are the stage seconds so far, to which this stage's add.

    Named by content, without timings: a rerun of the same recipe writes no new file, and
    a damaged or swapped file is found by its hash when it is taken.
    """
    composition = samples[0].composition
    data = "".join(s.model_dump_json(exclude={"seconds"}) + "\n" for s in samples).encode()
    digest_ = sha256(data)
    path = f"{STAGES_DIR}/{composition}/{stage}/set-{digest_[:16]}.jsonl"
    if not exists(join(out, path)):
        write_bytes(join(out, path), data)
    total = stage_seconds(samples, seconds)
    return SampleSet(composition=composition, stage=stage, path=path, sha256=digest_, samples=len(samples),
                     alive=sum(s.alive for s in samples), seconds={k: round(v, 4) for k, v in total.items()})


def stage_seconds(samples: list[Sample], so_far: dict[str, float] | None = None) -> dict[str, float]:
    """Seconds per stage summed over the samples, added to `so_far`."""
    total = dict(so_far or {})
    for s in samples:
        for name, t in s.seconds.items():
            total[name] = total.get(name, 0.0) + t
    return total


def take(out: str, given: SampleSet) -> list[Sample]:
    """The samples of a SampleSet, read and checked (tasks/reader.py: read_samples)."""
    return read_samples(out, given.path, given.sha256, given.composition, f"{given.stage} set")


def committed_names(out: str, composition: str, stage: str) -> set[str]:
    """Names of the records in a composition's stage folder: one listing instead of a
    request per sample (on S3, a LIST of up to 1000 keys per call)."""
    try:
        return {uri.rsplit("/", 1)[1] for uri in list_files(join(out, STAGES_DIR, composition, stage)) if uri.endswith(".json")}
    except (BadInput, FileNotFoundError):
        return set()


def read_record(out: str, path: str) -> Sample | None:
    """A committed record, or None when it is unreadable (then the sample is recomputed and
    the record rewritten: a damaged record costs a recomputation, never a wrong result)."""
    try:
        return Sample.model_validate_json(read_bytes(join(out, path)))
    except (BadInput, ValueError):
        return None


def each_sample(samples: list[Sample], stage: str, fn: Callable[[Sample], None]) -> None:
    """Run fn on each live sample, timing it and recording bad inputs (in place).

    A BadInput fails that sample with its reason and the loop goes on; any other exception
    (storage, network) propagates so the Prefect task retries the composition's stage,
    whose committed samples are then skipped.
    """
    for sample in samples:
        if not sample.alive:
            continue
        start = time.perf_counter()
        try:
            fn(sample)
        except BadInput as err:
            sample.fail(err.code, stage, str(err))
        sample.seconds[stage] = round(time.perf_counter() - start, 4)


def each_batch(samples: list[Sample], stage: str, size: int, fn: Callable[[list[Sample]], None]) -> None:
    """Like each_sample, for a model that takes several samples per call (a GPU batch).

    fn(chunk) handles up to `size` live samples at once (and may fail single samples
    itself). When a chunk raises BadInput, the input that caused it is not known, so its
    samples are run again one at a time: only the bad one fails, with its reason. Each
    sample's time is its share of its chunk's.
    """
    live = [s for s in samples if s.alive]
    step = max(1, int(size))
    for start in range(0, len(live), step):
        chunk = live[start : start + step]
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
