"""The generate flow: a dataset recipe -> a published dataset version. Wiring only.

segment (per concept) -> plan (all compositions) -> per composition:
composite -> repaint -> caption -> filter -> [review] -> collect; then publish (manifest
last) and the `dataset.published` event. Compositions run side by side on the task runner.
Review (optional) applies people's ratings from a decisions file, or pauses the run until
they are sent through the UI; then it waits for every composition's filter.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, unmapped
from prefect.context import FlowRunContext
from prefect.events import emit_event
from prefect.tasks import exponential_backoff

from gen4gen.infra import artifacts, limits, runners
from gen4gen.infra.caching import STAGE_CACHE, output_generation, result_storage_for
from gen4gen.infra.config import load_config
from gen4gen.models import registry
from gen4gen.tasks.caption import caption_task
from gen4gen.tasks.composite import composite_task
from gen4gen.tasks.filter import filter_task
from gen4gen.tasks.gallery import gallery_task
from gen4gen.tasks.plan import plan_task
from gen4gen.tasks.publish import collect_task, publish_task
from gen4gen.infra.records import DatasetConfig, Manifest, ReviewConfig, RunConfig
from gen4gen.tasks.repaint import repaint_task
from gen4gen.tasks.report import read_decisions
from gen4gen.tasks.review import ask_for_decisions, decisions_for, review_task, summary, unknown_ids
from gen4gen.tasks.segment import cutouts_by_photo, segment_task

PUBLISHED_EVENT = "dataset.published"


def check_backends(config: DatasetConfig) -> None:
    for family in ("plan", "segment", "repaint", "caption"):
        registry.check(family, getattr(config.stages, family).backend)


def task_options(config: DatasetConfig, out: str) -> dict:
    """Retries with backoff for transient faults; cross-run caching unless turned off."""
    options: dict = {
        "retries": config.run.retries,
        "retry_delay_seconds": exponential_backoff(backoff_factor=config.run.retry_delay_seconds)
        if config.run.retry_delay_seconds
        else 0,
        "retry_jitter_factor": 0.5 if config.run.retry_delay_seconds else None,
    }
    if config.run.cache:
        options["cache_policy"] = STAGE_CACHE
        output_generation(out)  # made once here, before tasks that key on it run side by side
        storage = result_storage_for(out, config.run.result_storage)
        if storage is not None:
            options["result_storage"] = storage
    else:
        options["cache_policy"] = None
        options["refresh_cache"] = True
    return options


def for_composition(config: DatasetConfig, comp) -> DatasetConfig:
    """The recipe as one composition's stages see it: its own concepts and entry only, so
    that changing or adding another composition leaves this one's cache keys alone."""
    return config.model_copy(
        update={"compositions": [comp], "concepts": [c for c in config.concepts if c.id in comp.concepts]}
    )


@flow(name="generate", log_prints=True)
def generate(config: str | DatasetConfig, out: str | None = None) -> Manifest:
    """Generate and publish one dataset version from a recipe (a YAML URI or a config)."""
    cfg = load_config(config, out) if isinstance(config, str) else config
    out = out or cfg.out
    check_backends(cfg)
    wanted = runners.task_runner(cfg.run)
    if FlowRunContext.get().task_runner != wanted:
        # A deployment starts the flow on its default runner: do the work in a subflow on
        # the task runner the recipe asks for (run_generate picks it up front instead).
        return generate.with_options(task_runner=wanted)(cfg, out)
    opts = task_options(cfg, out)
    segment, plan = segment_task.with_options(**opts), plan_task.with_options(**opts)
    composite, repaint = composite_task.with_options(**opts), repaint_task.with_options(**opts)
    caption, judge = caption_task.with_options(**opts), filter_task.with_options(**opts)
    collect, review = collect_task.with_options(**opts), review_task.with_options(**opts)
    # Read before any work, so a missing or malformed decisions file fails the run at once.
    ratings = read_decisions(cfg.review.decisions) if cfg.review.mode == "file" else None
    # Ratings and run settings (width, runner, retries) change no image: keep them out of
    # the stages' cache keys.
    stage_cfg = cfg.model_copy(update={"review": ReviewConfig(), "run": RunConfig()})
    if limits.uses_gpu(cfg.stages):
        limits.ensure(cfg.run.gpu_slots)  # this worker's GPU limit, sized from the recipe
    on = lambda family: limits.submitting(cfg.run, family, getattr(cfg.stages, family).backend)  # noqa: E731

    with on("segment"):
        cut_lists = segment.map(cfg.concepts, unmapped(out), unmapped(cfg.stages.segment)).result()
    cutouts = {c.id: cuts for c, cuts in zip(cfg.concepts, cut_lists)}
    planned = plan.submit(stage_cfg, cutouts).result()

    judged = {}
    for comp in cfg.compositions:
        s = composite.submit(planned[comp.id], cutouts_by_photo(cutouts, comp.concepts), out)
        with on("repaint"):
            s = repaint.submit(s, out, cfg.stages.repaint)
        with on("caption"):
            s = caption.submit(s, for_composition(stage_cfg, comp), out)
        with on("filter"):
            # Only this composition's concepts: another concept's change leaves its cache alone.
            judged[comp.id] = judge.submit(s, out, cfg.stages.filter, [cfg.concept(c) for c in comp.concepts])
    if cfg.review.mode == "interactive":
        ratings = ask_for_decisions(cfg, out, [x for f in judged.values() for x in f.result()])
    if ratings is not None:
        judged = {c: review.submit(s, decisions_for(planned[c], ratings), cfg.review.min_rating) for c, s in judged.items()}
    stats = [collect.submit(s, out) for s in judged.values()]
    manifest = publish_task.with_options(retries=opts["retries"]).submit(cfg, out, artifacts.track_compositions(cfg, stats), cutouts).result()
    artifacts.publish_table(cfg, manifest)
    galleries = [gallery_task.submit(cfg, s, out) for s in judged.values()]
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
