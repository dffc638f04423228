"""The train flow: a published dataset version -> Custom Diffusion checkpoints + events.

Wiring only: the training loop, prompts and checkpoint format live in tasks/training/train.py,
infra/checkpoint.py and models/train/custom_diffusion.py. Each checkpoint, once completely
written, is announced with a `checkpoint.landed` event (CONTRACTS.md), which the evaluation
deployment's trigger listens for. Rerunning the same flow on the same `out` resumes from
the newest checkpoint instead of starting over.
"""

from __future__ import annotations

from datetime import datetime, timezone

from prefect import flow, get_run_logger
from prefect.context import FlowRunContext

from gen4gen.infra.artifacts import artifact_key
from gen4gen.infra.checkpoint import CheckpointInfo
from gen4gen.infra import limits, lineage
from gen4gen.models import hf
from gen4gen.infra.storage import join
from gen4gen.tasks import reader
from gen4gen.tasks.training.train import TrainConfig, TrainResult, read_training_set, run_id, train_task

LANDED_EVENT = lineage.LANDED_EVENT


def dataset_label(uri: str) -> tuple[str, str]:
    """(name, version) from a dataset's manifest; ("?", "?") when it cannot be read here
    (the flow then fails on reading it, with the reason)."""
    return reader.dataset_label(uri) or ("?", "?")


def run_name() -> str:
    params = FlowRunContext.get().parameters
    config = params.get("config")
    raw = config.model_dump() if isinstance(config, TrainConfig) else dict(config or {})
    uri = params.get("dataset") or raw.get("dataset")
    name, version = dataset_label(uri) if uri else ("?", "?")
    return f"train-{name}-{version}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"


def announcer(name: str, version: str, upstream: str | None):
    """`checkpoint.landed` for each completely written checkpoint, related to its training
    run, the dataset version and the run that published it (`upstream`)."""
    def announce(uri: str, info: CheckpointInfo) -> None:
        lineage.emit(
            LANDED_EVENT,
            lineage.checkpoint(info.run, info.step),
            [lineage.training_run(info.run), lineage.dataset_version(name, version, uri=info.dataset),
             *lineage.flow_run(upstream, "dataset-run")],
            {"checkpoint": uri, "step": info.step, "run": info.run,
             "dataset": info.dataset, "dataset_version": info.dataset_version},
        )
    return announce


announce = announcer("?", "?", None)  # for callers outside a flow (tests, scripts)


@flow(name="train", flow_run_name=run_name, log_prints=True)
def train(
    config: TrainConfig | dict | None = None,
    dataset: str | None = None,
    out: str | None = None,
    runs: str | None = None,
    upstream: str | None = None,
) -> TrainResult:
    """Train on `config`; `dataset` and `out` replace its fields when given. `runs` (instead
    of `out`) is a folder of runs: the run goes to `{runs}/{run id}`, so a deployment
    triggered by every `dataset.published` event trains each new dataset version in a new
    folder (a run's folder refuses checkpoints of another dataset version). `upstream`: the
    id of the flow run that published the dataset (the event's), for lineage."""
    raw = config.model_dump() if isinstance(config, TrainConfig) else dict(config or {})
    raw |= {k: v for k, v in {"dataset": dataset, "out": out}.items() if v is not None}
    if runs is not None and out is None:
        probe = TrainConfig.model_validate({**raw, "out": runs})
        raw["out"] = join(runs, run_id(probe, read_training_set(probe.dataset, probe.compositions)))
    cfg = TrainConfig.model_validate(raw)
    name, version = dataset_label(cfg.dataset)
    with limits.device_slot(hf.device(cfg.device)):
        # `train[demo-v2]` in the run's task list, as generate's `repaint[cat-mug]`
        named = train_task.with_options(task_run_name=f"train[{name}-{version}]")
        result = named(cfg, on_checkpoint=announcer(name, version, upstream))
    lineage.publish_links(artifact_key(result.run, "lineage"), f"training run {result.run}", [
        ("dataset", f"{name} {version} at `{cfg.dataset}`"),
        ("published by", lineage.run_link(upstream)),
        ("base model", f"`{cfg.base_model}`"),
        ("checkpoints", ", ".join(f"`{c}`" for c in result.checkpoints) or "-"),
        ("evaluations", f"evaluate/on-checkpoint runs, one per checkpoint; history: artifact"
                        f" `{artifact_key('eval', result.run)}-<prompt set>-history`"),
    ])
    log = get_run_logger()
    if result.resumed_from:
        log.info("resumed run %s from step %d", result.run, result.resumed_from)
    log.info("run %s at step %d: %s", result.run, result.step, result.latest)
    return result
