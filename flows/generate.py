"""The generate flow: a dataset recipe -> a published dataset version. Wiring only.

segment (per concept) -> rounds of: plan (per composition, the round's sample indices) ->
the declared sample stages, per composition: composite -> repaint -> caption -> filter
(tasks/stage.py runs each, skipping samples already committed) -> [review] -> tally (all
rounds so far, near-duplicates dropped; tasks/targets.py sizes the next round for the
compositions short of their `keep`) -> collect; then publish (manifest last) and the
`dataset.published` event. Compositions run side by side on the task runner; a GPU stage
starts only when the previous GPU stage is done for every composition, so one worker's GPU
holds one stage's model at a time (all repaints, then captions, then filters).
Tasks hand each other SampleSets (a composition's records in storage, with counts), never
sample lists: the flow's memory does not grow with the samples.
Review (optional) applies people's ratings from a decisions file, or pauses the run until
they are sent through the UI; then it waits for every composition's filter.
"""

from __future__ import annotations

from datetime import datetime, timezone

from prefect import flow, get_run_logger, unmapped
from prefect.context import FlowRunContext
from prefect.tasks import exponential_backoff

from gen4gen.infra import artifacts, limits, lineage, runners
from gen4gen.infra.config import load_config
from gen4gen.infra.records import DatasetConfig, Manifest
from gen4gen.tasks.views.gallery import gallery_task
from gen4gen.flows.checks import check_stages
from gen4gen.models import hf, registry
from gen4gen.models.segment.weights import WeightsMissing, resolve_config
from gen4gen.tasks.publishing import ownership
from gen4gen.tasks.pipeline import SAMPLE_STAGES, background_note, jobs as stage_jobs, own_cutouts
from gen4gen.tasks.plan import PLAN, plan_task
from gen4gen.tasks.publishing.publish import collect_task, publish_task
from gen4gen.tasks.views.report import read_decisions
from gen4gen.tasks.views.review import ask_for_decisions, review_task, summary, unknown_ids
from gen4gen.tasks.segment import SEGMENT, segment_task
from gen4gen.tasks.stage import take, uses_gpu
from gen4gen.tasks.targets import Tally, next_round, tally_task, target

PUBLISHED_EVENT = lineage.PUBLISHED_EVENT  # emitted by lineage.announce_dataset

def transient(task, task_run, state) -> bool:
    """Retry a stage unless its error is permanent: missing weights stay missing."""
    return not isinstance(state.result(raise_on_failure=False), (hf.WeightsMissing, WeightsMissing))


def task_options(config: DatasetConfig) -> dict:
    """Retries with backoff for transient faults. No Prefect result cache: each stage
    commits its samples' records itself and skips what is committed (tasks/stage.py)."""
    return {
        "retry_condition_fn": transient,
        "retries": config.run.retries,
        "retry_delay_seconds": exponential_backoff(backoff_factor=config.run.retry_delay_seconds)
        if config.run.retry_delay_seconds
        else 0,
        "retry_jitter_factor": 0.5 if config.run.retry_delay_seconds else None,
    }


def run_name() -> str:
    """`{dataset}-{version}-{UTC timestamp}`, from the run's recipe parameter; a recipe that
    cannot be read still gets a name (the run then fails with the recipe's error)."""
    params = FlowRunContext.get().parameters
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    try:
        config = params["config"]
        cfg = load_config(config, params.get("out")) if isinstance(config, str) else DatasetConfig.model_validate(config)
    except Exception:
        return f"generate-{stamp}"
    return f"{cfg.name}-{cfg.version}-{stamp}"


STAGE_ORDER = ["segment", "plan", *(stage.name for stage, _ in SAMPLE_STAGES), "tally", "collect", "publish"]


@flow(name="generate", flow_run_name=run_name, log_prints=True)
def generate(config: str | DatasetConfig, out: str | None = None) -> Manifest:
    """Generate and publish one dataset version from a recipe (a YAML URI or a config)."""
    cfg = load_config(config, out) if isinstance(config, str) else config
    out = out or cfg.out
    # Once, before any key: `auto` becomes the segmenter that runs (isnet where its weights
    # are, else offline with a warning: on the console and in the run's log).
    cfg, notes = resolve_config(cfg)
    for note in notes + background_note(cfg):
        get_run_logger().warning(note)
    check_stages(cfg)
    # A deployment does not go through the CLI: the folder is checked to be ours here too.
    ownership.claim(out, cfg, config if isinstance(config, str) else None)
    # The recipe's task runner, for this run itself (no subflow: the started run holds it all).
    with runners.use(cfg.run), artifacts.run_progress(cfg, STAGE_ORDER) as progress:
        return _generate(cfg, out, progress)


def _generate(cfg: DatasetConfig, out: str, progress: artifacts.RunProgress) -> Manifest:
    opts = task_options(cfg)
    refresh = not cfg.run.cache
    # Read before any work, so a missing or malformed decisions file fails the run at once.
    ratings = read_decisions(cfg.review.decisions) if cfg.review.mode == "file" else None
    if uses_gpu(cfg.stages):
        limits.ensure(cfg.run.gpu_slots)  # this worker's GPU limit, sized from the recipe
        # This worker's GPU budget. Not for a recipe without GPU stages: it would import
        # torch (4 s) to find no model to budget.
        registry.configure(cfg.run.gpu_memory_gb, policy=cfg.run.memory_policy)

    with limits.submitting(cfg.run, SEGMENT.gpu(cfg)):
        segmented = segment_task.with_options(**opts).map(
            cfg.concepts, unmapped(out), unmapped(cfg.stages.segment), unmapped(refresh),
            unmapped(cfg.stages.filter.classes))
    progress.watch("segment", segmented)
    cut_lists = segmented.result()
    cutouts = {c.id: cuts for c, cuts in zip(cfg.concepts, cut_lists)}
    jobs = stage_jobs(cfg, out, cutouts, refresh)
    plan = plan_task.with_options(**opts)
    # Rounds (tasks/targets.py): each plans the next sample indices of the compositions still
    # short of their target, runs the stages over them (a GPU stage across all of them before
    # the next), and tallies every round so far; without targets there is one round.
    goals = {c: target(cfg, job.composition) for c, job in jobs.items()}
    todo = {c: goal.first for c, goal in goals.items()}
    rounds: dict[str, list] = {c: [] for c in jobs}  # composition -> each round's judged set
    tallies: dict[str, Tally] = {}
    while todo:
        with limits.submitting(cfg.run, PLAN.gpu(cfg)):
            start = {c: tallies[c].attempts if c in tallies else 0 for c in todo}
            current = {c: plan.submit(jobs[c], own_cutouts(jobs[c], cutouts), range(start[c], start[c] + n))
                       for c, n in todo.items()}
        progress.watch("plan", current)
        gate: list = []  # the previous GPU stage's tasks, all compositions of the round
        for stage, stage_task in SAMPLE_STAGES:
            run = stage_task.with_options(**opts)
            on_gpu = stage.gpu(cfg)
            with limits.submitting(cfg.run, on_gpu):
                current = {c: run.submit(current[c], jobs[c], wait_for=gate if on_gpu else []) for c in todo}
            progress.watch(stage.name, current)
            if on_gpu:
                gate = list(current.values())
        judged = current
        if cfg.review.mode == "interactive":
            ratings = ask_for_decisions(cfg, out, [x for f in judged.values() for x in take(out, f.result())])
        if ratings is not None:
            judged = {c: review_task.submit(s, out, ratings, cfg.review.min_rating) for c, s in judged.items()}
            progress.watch("review", judged)
        for c, f in judged.items():
            rounds[c].append(f)
        tallied = {c: tally_task.submit(list(rounds[c]), jobs[c]) for c in todo}
        tallies.update(zip(tallied, progress.wait(list(tallied.values()), "tally")))
        todo = {c: n for c in todo if (n := next_round(goals[c], tallies[c].attempts, tallies[c].kept))}
    log = get_run_logger()
    collected = {c: collect_task.submit(t, out, goals[c]) for c, t in tallies.items()}
    # Views: a bounded gallery per composition, made from its shard as soon as it is
    # collected (beside the other compositions' work), rebuilt only when its shard changed.
    galleries = [gallery_task.with_options(task_run_name=f"gallery[{c}]").submit(cfg, out, f, jobs[c].cutouts)
                 for c, f in collected.items()]
    stats = list(collected.values())
    published = publish_task.with_options(retries=opts["retries"], task_run_name="publish").submit(cfg, out, progress.wait(stats), cutouts)
    progress.watch("publish", [published])
    manifest = published.result()
    for comp, why in manifest.short.items():  # published with what it has: the run says so
        log.warning(f"composition {comp}: {why}")
    timed = [f for fs in progress.futures.values() for f in fs]
    artifacts.publish_table(cfg, manifest, STAGE_ORDER, artifacts.task_seconds(timed))
    if ratings is not None:
        reviewed = [s for fs in rounds.values() for f in fs for s in take(out, f.result())]
        unknown = unknown_ids(reviewed, ratings)
        (log.warning if unknown else log.info)(summary(reviewed, unknown))

    for g in galleries:
        g.wait()  # a gallery is a view: one that failed does not fail the published run

    run = FlowRunContext.get().flow_run
    artifacts.publish_history(cfg, manifest, run.name)
    lineage.announce_dataset(manifest, run)
    progress.finish(manifest)
    return manifest


def run_generate(config: DatasetConfig, out: str) -> Manifest:
    """Run the flow (it picks the recipe's task runner itself: run.runner, threads by default)."""
    return generate(config, out)
