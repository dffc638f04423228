"""The evaluate flow: a checkpoint + a held-out prompt set -> results.json beside the checkpoint.

read checkpoint.json -> load the prompt set (and check it against the checkpoint, and that
the scoring models' weights are there: models/score/score.py ensure_weights) -> per composition:
sample (personalised pipeline, seeded, batched) -> score (models/score/score.py: OWL-ViT + CLIP,
CP-CLIP and TI-CLIP) -> summarise (bootstrap intervals, per composition,
by number of concepts), compare with the run's earlier checkpoints -> results.json and
three artifacts (results table, history table, scored thumbnails). Wiring only.

The deployment `evaluate/on-checkpoint` runs it on every `checkpoint.landed` event:
`CHECKPOINT_TRIGGER` below is the one definition of that trigger (prefect.yaml mirrors it).
"""

from __future__ import annotations

import time
from typing import Any

from datetime import datetime, timezone

from prefect import flow, get_run_logger
from prefect.context import FlowRunContext
from prefect.events import DeploymentEventTrigger

from gen4gen.infra import lineage
from gen4gen.infra.artifacts import artifact_key

from gen4gen.infra.config import shipped
from gen4gen.infra.checkpoint import CheckpointError, normalise, read_checkpoint, siblings
from gen4gen.models.score.score import ensure_weights
from gen4gen.tasks.reader import dataset_label
from gen4gen.tasks.evaluation.prompts import PromptSetError, check_against, load_prompt_set, prompt_set_sha256
from gen4gen.tasks.evaluation.sample import sample_task
from gen4gen.tasks.evaluation.summarise import (
    earlier_rows,
    now,
    publish_artifacts,
    read_results,
    score_task,
    summarise,
    write_results,
)

CHECKPOINT_EVENT = "checkpoint.landed"
DEPLOYMENT = "on-checkpoint"  # served as evaluate/on-checkpoint, as in prefect.yaml
DEFAULT_PROMPTS = shipped("eval/demo.yaml")  # the demo's held-out prompts, shipped in the package

# One evaluation per landed checkpoint: the event's payload names the checkpoint folder and
# its step (CONTRACTS.md); the prompt set and vision options are the deployment's defaults.
CHECKPOINT_TRIGGER = DeploymentEventTrigger(
    name="evaluate-landed-checkpoint",
    description="Evaluate every checkpoint the train flow lands",
    expect={CHECKPOINT_EVENT},
    match={"prefect.resource.id": "gen4gen.checkpoint.*"},
    parameters={"checkpoint": "{{ event.payload.checkpoint }}", "step": "{{ event.payload.step }}",
                "upstream": "{{ event.payload.flow_run | default('') }}"},
)


class EvaluationError(ValueError):
    """Inputs an evaluation cannot use (checkpoint, prompt set, step); nothing is generated."""


def run_name() -> str:
    """`eval-{training run}-step-{step}-{UTC timestamp}` from the checkpoint parameter."""
    stamp = f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    try:
        info = read_checkpoint(normalise(FlowRunContext.get().parameters["checkpoint"]))
    except Exception:
        return f"eval-{stamp}"
    return f"eval-{info.run}-step-{info.step}-{stamp}"


@flow(name="evaluate", flow_run_name=run_name, log_prints=True)
def evaluate(
    checkpoint: str,
    prompts: str = DEFAULT_PROMPTS,
    step: int | None = None,
    vision: dict[str, Any] | None = None,
    samples: int | None = None,
    device: str = "auto",
    upstream: str | None = None,
) -> str:
    """Evaluate one checkpoint on a prompt set; returns the URI of its results.json.

    step: when given (the event's), must equal checkpoint.json's step. vision: scoring
    models' options, replacing the prompt set's. samples: images per prompt, replacing
    the set's (a quick preview). device: where the personalised pipeline runs.
    """
    started = time.perf_counter()
    uri = normalise(checkpoint)
    info = read_checkpoint(uri)
    if step is not None and int(step) != info.step:
        raise EvaluationError(f"checkpoint {uri}: the event says step {step}, checkpoint.json says {info.step}")
    pset = load_prompt_set(prompts)
    if samples is not None:
        pset = pset.model_copy(update={"samples": samples, "prompts": [p.model_copy(update={"samples": None}) for p in pset.prompts]})
    if vision is not None:
        pset = pset.model_copy(update={"vision": vision})
    check_against(pset, {c.id: c.token for c in info.concepts})
    ensure_weights(pset.vision)  # a missing CLIP or OWL-ViT fails now, not after sampling
    model = {
        "base_model": info.base_model,
        "base_revision": info.base_revision,
        "checkpoint": uri,
        "device": device,
    }
    compositions = list(dict.fromkeys(p.composition for p in pset.prompts))
    # task runs named by composition (`sample[cat-mug]`, `score[cat-mug]`), as generate's
    sampled = {c: sample_task.with_options(task_run_name=f"sample[{c}]").submit(uri, pset, c, model)
               for c in compositions}
    scored = [score_task.with_options(task_run_name=f"score[{c}]").submit(uri, pset, sampled[c]) for c in compositions]
    images = [im for f in scored for im in f.result()]
    sha = prompt_set_sha256(pset)
    earlier = [r for r in (read_results(s) for s in siblings(uri)) if r is not None]
    results = summarise(
        images,
        checkpoint=uri, step=info.step, run=info.run, base_model=info.base_model, dataset=info.dataset,
        dataset_version=info.dataset_version, prompt_set={"name": pset.name, "uri": str(prompts), "sha256": sha},
        vision=pset.vision, created=now(), seconds={"total": round(time.perf_counter() - started, 2)},
        earlier=earlier_rows(earlier, sha),
    )
    out = write_results(results)
    log = get_run_logger()
    try:
        publish_artifacts(results)
    except Exception as err:  # artifacts are a view: results.json is written, the run stands
        log.warning("evaluation artifacts not published: %s: %s", type(err).__name__, err)
    cp, ti = results.overall.cp_clip.mean, results.overall.ti_clip.mean
    try:  # lineage is a view too: results.json is written, the run stands
        lineage.emit(
            lineage.EVALUATED_EVENT,
            lineage.resource("evaluation", info.run, info.step, name=f"{info.run} step {info.step} on {pset.name}"),
            [lineage.checkpoint(info.run, info.step, role="checkpoint"), lineage.training_run(info.run),
             dataset_version(info.dataset, info.dataset_version),
             *lineage.flow_run(upstream, "training-flow-run")],
            {"results": out, "checkpoint": uri, "step": info.step, "run": info.run, "cp_clip": cp, "ti_clip": ti,
             "images": results.overall.images, "prompt_set": pset.name},
        )
        lineage.publish_links(artifact_key(info.run, f"step-{info.step}", "lineage"),
                              f"evaluation of {info.run} step {info.step}", [
            ("checkpoint", f"`{uri}`"), ("trained by", lineage.run_link(upstream)),
            ("dataset", f"`{info.dataset}` (version `{info.dataset_version[:12]}`)"), ("results", f"`{out}`"),
            ("CP-CLIP / TI-CLIP", f"{cp:.3f} / {ti:.3f}"),
        ])
    except Exception as err:
        log.warning("lineage not published: %s: %s", type(err).__name__, err)
    log.info("CP-CLIP %.3f, TI-CLIP %.3f over %d images: %s", results.overall.cp_clip.mean,
             results.overall.ti_clip.mean, results.overall.images, out)
    return out


def dataset_version(dataset: str, sha256: str) -> dict:
    """The related resource of the dataset version a checkpoint was trained on (checkpoint.json's
    `dataset`, `dataset_version`: the manifest's sha256): the one
    `checkpoint.landed` and `dataset.published` name (gen4gen.dataset-version.<name>.<version>),
    read from the manifest when the folder still holds that version (same sha256); else one
    named by the manifest's sha256, since the folder has been published again since."""
    label = dataset_label(dataset, sha256)
    if label is not None:
        return lineage.dataset_version(*label, uri=dataset)
    return lineage.resource("dataset-manifest", sha256[:12], role="dataset-version", name=dataset)


def check_inputs(checkpoint: str, prompts: str) -> None:
    """Raise EvaluationError naming the input when the checkpoint or prompt set cannot be
    used, before any model is loaded (the CLI's exit 2)."""
    try:
        info = read_checkpoint(checkpoint)
        check_against(load_prompt_set(prompts), {c.id: c.token for c in info.concepts})
    except (CheckpointError, PromptSetError) as err:
        raise EvaluationError(str(err)) from err


def serve(prompts: str = DEFAULT_PROMPTS, vision: dict[str, Any] | None = None, **kwargs: Any) -> None:
    """Serve the evaluation deployment with its event trigger (blocks until stopped)."""
    parameters: dict[str, Any] = {"prompts": prompts}
    if vision is not None:
        parameters["vision"] = vision
    evaluate.serve(name=DEPLOYMENT, triggers=[CHECKPOINT_TRIGGER], parameters=parameters, **kwargs)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="serve the evaluation deployment (triggered by checkpoint.landed)")
    parser.add_argument("--prompts", default=DEFAULT_PROMPTS)
    args = parser.parse_args()
    serve(args.prompts)
