"""The generate flow: a dataset recipe -> a published dataset version. Wiring only.

segment (per concept) -> plan (per composition) -> the declared sample stages, per
composition: composite -> repaint -> caption -> filter (tasks/stage.py runs each, skipping
samples already committed) -> [review] -> collect; then publish (manifest last) and the
`dataset.published` event. Compositions run side by side on the task runner; a GPU stage
starts only when the previous GPU stage is done for every composition, so one worker's GPU
holds one stage's model at a time (all repaints, then captions, then filters).
Review (optional) applies people's ratings from a decisions file, or pauses the run until
they are sent through the UI; then it waits for every composition's filter.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, unmapped
from prefect.context import FlowRunContext
from prefect.events import emit_event
from prefect.tasks import exponential_backoff

from gen4gen.infra import artifacts, limits, runners
from gen4gen.infra.config import load_config
from gen4gen.infra.records import DatasetConfig, Manifest
from gen4gen.tasks.gallery import gallery_task
from gen4gen.flows.checks import check_stages
from gen4gen.models import registry
from gen4gen.tasks import ownership
from gen4gen.tasks.pipeline import SAMPLE_STAGES, jobs as stage_jobs, own_cutouts
from gen4gen.tasks.plan import PLAN, plan_task
from gen4gen.tasks.publish import collect_task, publish_task
from gen4gen.tasks.report import read_decisions
from gen4gen.tasks.review import ask_for_decisions, decisions_for, review_task, summary, unknown_ids
from gen4gen.tasks.segment import SEGMENT, segment_task
from gen4gen.tasks.stage import uses_gpu

PUBLISHED_EVENT = "dataset.published"

def task_options(config: DatasetConfig) -> dict:
    """Retries with backoff for transient faults. No Prefect result cache: each stage
    commits its samples' records itself and skips what is committed (tasks/stage.py)."""
    return {
        "retries": config.run.retries,
        "retry_delay_seconds": exponential_backoff(backoff_factor=config.run.retry_delay_seconds)
        if config.run.retry_delay_seconds
        else 0,
        "retry_jitter_factor": 0.5 if config.run.retry_delay_seconds else None,
    }


@flow(name="generate", log_prints=True)
def generate(config: str | DatasetConfig, out: str | None = None) -> Manifest:
    """Generate and publish one dataset version from a recipe (a YAML URI or a config)."""
    cfg = load_config(config, out) if isinstance(config, str) else config
    out = out or cfg.out
    check_stages(cfg)
    # A deployment does not go through the CLI: the folder is checked to be ours here too.
    ownership.claim(out, cfg, config if isinstance(config, str) else None)
    wanted = runners.task_runner(cfg.run)
    if FlowRunContext.get().task_runner != wanted:
        # A deployment starts the flow on its default runner: do the work in a subflow on
        # the task runner the recipe asks for (run_generate picks it up front instead).
        return generate.with_options(task_runner=wanted)(cfg, out)
    opts = task_options(cfg)
    refresh = not cfg.run.cache
    # Read before any work, so a missing or malformed decisions file fails the run at once.
    ratings = read_decisions(cfg.review.decisions) if cfg.review.mode == "file" else None
    if uses_gpu(cfg.stages):
        limits.ensure(cfg.run.gpu_slots)  # this worker's GPU limit, sized from the recipe
    registry.configure(cfg.run.gpu_memory_gb, policy=cfg.run.memory_policy)  # this worker's budget

    with limits.submitting(cfg.run, SEGMENT.gpu(cfg)):
        cut_lists = segment_task.with_options(**opts).map(
            cfg.concepts, unmapped(out), unmapped(cfg.stages.segment), unmapped(refresh)).result()
    cutouts = {c.id: cuts for c, cuts in zip(cfg.concepts, cut_lists)}
    jobs = stage_jobs(cfg, out, cutouts, refresh)
    plan = plan_task.with_options(**opts)
    with limits.submitting(cfg.run, PLAN.gpu(cfg)):
        planned = {c: plan.submit(job, own_cutouts(job, cutouts)) for c, job in jobs.items()}
    current = planned
    gate: list = []  # the previous GPU stage's tasks, all compositions
    for stage, stage_task in SAMPLE_STAGES:
        run = stage_task.with_options(**opts)
        on_gpu = stage.gpu(cfg)
        with limits.submitting(cfg.run, on_gpu):
            current = {c: run.submit(current[c], jobs[c], wait_for=gate if on_gpu else []) for c in jobs}
        if on_gpu:
            gate = list(current.values())
    judged = current
    if cfg.review.mode == "interactive":
        ratings = ask_for_decisions(cfg, out, [x for f in judged.values() for x in f.result()])
    if ratings is not None:
        judged = {c: review_task.submit(s, decisions_for(planned[c].result(), ratings), cfg.review.min_rating)
                  for c, s in judged.items()}
    stats = [collect_task.submit(s, out, c) for c, s in judged.items()]
    manifest = publish_task.with_options(retries=opts["retries"]).submit(
        cfg, out, artifacts.track_compositions(cfg, stats), cutouts).result()
    artifacts.publish_table(cfg, manifest)
    # Views: a bounded gallery per composition, rebuilt only when its shard changed.
    galleries = [gallery_task.submit(cfg, out, st, jobs[st.composition].cutouts) for st in manifest.compositions]
    if ratings is not None:
        reviewed = [s for f in judged.values() for s in f.result()]
        unknown, log = unknown_ids(reviewed, ratings), get_run_logger()
        (log.warning if unknown else log.info)(summary(reviewed, unknown))

    for g in galleries:
        g.wait()  # a gallery is a view: one that failed does not fail the published run

    emit_event(
        event=PUBLISHED_EVENT,
        resource={"prefect.resource.id": f"gen4gen.dataset.{cfg.name}", "prefect.resource.name": cfg.name},
        payload={
            "uri": manifest.uri,
            "version": manifest.version,
            "manifest": f"{manifest.uri}/manifest.json",
            "kept": manifest.kept,
            "planned": manifest.planned,
        },
    )
    return manifest


def run_generate(config: DatasetConfig, out: str) -> Manifest:
    """Run the flow on the task runner the recipe asks for (run.runner; threads by default)."""
    return generate.with_options(task_runner=runners.task_runner(config.run))(config, out)
