"""The train flow: a published dataset version -> Custom Diffusion checkpoints + events.

Wiring only: the training loop, prompts and checkpoint format live in tasks/train.py,
infra/checkpoint.py and models/custom_diffusion.py. Each checkpoint, once completely
written, is announced with a `checkpoint.landed` event (CONTRACTS.md), which the evaluation
deployment's trigger listens for. Rerunning the same flow on the same `out` resumes from
the newest checkpoint instead of starting over.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.events import emit_event

from gen4gen.infra.checkpoint import CheckpointInfo
from gen4gen.infra import limits
from gen4gen.models import hf
from gen4gen.infra.storage import join
from gen4gen.tasks.train import TrainConfig, TrainResult, read_training_set, run_id, train_task

LANDED_EVENT = "checkpoint.landed"


def announce(uri: str, info: CheckpointInfo) -> None:
    """Emit `checkpoint.landed` for a completely written checkpoint."""
    emit_event(
        event=LANDED_EVENT,
        resource={"prefect.resource.id": f"gen4gen.checkpoint.{info.run}.{info.step}",
                  "prefect.resource.name": f"{info.run} step {info.step}"},
        payload={"checkpoint": uri, "step": info.step, "run": info.run,
                 "dataset": info.dataset, "dataset_version": info.dataset_version},
    )


@flow(name="train", log_prints=True)
def train(
    config: TrainConfig | dict | None = None,
    dataset: str | None = None,
    out: str | None = None,
    runs: str | None = None,
) -> TrainResult:
    """Train on `config`; `dataset` and `out` replace its fields when given. `runs` (instead
    of `out`) is a folder of runs: the run goes to `{runs}/{run id}`, so a deployment
    triggered by every `dataset.published` event trains each new dataset version in a new
    folder (a run's folder refuses checkpoints of another dataset version)."""
    raw = config.model_dump() if isinstance(config, TrainConfig) else dict(config or {})
    raw |= {k: v for k, v in {"dataset": dataset, "out": out}.items() if v is not None}
    if runs is not None and out is None:
        probe = TrainConfig.model_validate({**raw, "out": runs})
        raw["out"] = join(runs, run_id(probe, read_training_set(probe.dataset, probe.compositions)))
    cfg = TrainConfig.model_validate(raw)
    with limits.device_slot(hf.device(cfg.device)):
        result = train_task(cfg, on_checkpoint=announce)
    log = get_run_logger()
    if result.resumed_from:
        log.info("resumed run %s from step %d", result.run, result.resumed_from)
    log.info("run %s at step %d: %s", result.run, result.step, result.latest)
    return result
