"""The train flow: a published dataset version -> Custom Diffusion checkpoints + events.

Wiring only: the training loop, prompts and checkpoint format live in tasks/train.py,
tasks/checkpoint.py and models/custom_diffusion.py. Each checkpoint, once completely
written, is announced with a `checkpoint.landed` event (CONTRACTS.md), which the evaluation
deployment's trigger listens for. Rerunning the same flow on the same `out` resumes from
the newest checkpoint instead of starting over.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.events import emit_event

from tasks.checkpoint import CheckpointInfo
from tasks.train import TrainConfig, TrainResult, train_task

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
def train(config: TrainConfig | dict) -> TrainResult:
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.model_validate(config)
    result = train_task(cfg, on_checkpoint=announce)
    log = get_run_logger()
    if result.resumed_from:
        log.info("resumed run %s from step %d", result.run, result.resumed_from)
    log.info("run %s at step %d: %s", result.run, result.step, result.latest)
    return result
