"""The generate stages in order, and a plain executor of them (no Prefect).

`SAMPLE_STAGES` is what the generate flow walks (flows/generate.py, the Prefect executor:
tasks side by side, retries, GPU slots); `run_local` walks the same declarations in a
plain loop, for tests, benchmarks and debugging. Both call the same stage functions.
"""

from __future__ import annotations

import logging

from gen4gen.infra.records import Composition, CompositionStats, Cutout, DatasetConfig, Manifest, Sample
from gen4gen.models import registry
from gen4gen.models.segment.weights import resolve_config
from gen4gen.tasks.caption import CAPTION, caption_task
from gen4gen.tasks.composite import COMPOSITE, composite_task
from gen4gen.tasks.filter import FILTER, filter_task
from gen4gen.tasks.plan import PLAN, plan_composition
from gen4gen.tasks.publishing.publish import collect_composition, publish_dataset
from gen4gen.tasks.repaint import REPAINT, repaint_task
from gen4gen.tasks.segment import SEGMENT, cutouts_by_photo, segment_concept
from gen4gen.tasks.stage import Job, hand_on, run_set, take
from gen4gen.tasks.targets import next_round, tally_composition, target

# The sample stages in the order they run, each with its thin Prefect task.
SAMPLE_STAGES = ((COMPOSITE, composite_task), (REPAINT, repaint_task), (CAPTION, caption_task), (FILTER, filter_task))
STAGES = (SEGMENT, PLAN) + tuple(stage for stage, _ in SAMPLE_STAGES)


def check_backends(config: DatasetConfig) -> None:
    """Every stage's backend is declared (a typo in a recipe is found before any work)."""
    for stage in STAGES:
        if stage.family == "segment" and stage.backend(config) == "auto":
            continue  # a choice, not a backend: resolved before the run (models/segment/weights.py)
        if stage.family:
            registry.check(stage.family, stage.backend(config))


def for_composition(config: DatasetConfig, comp: Composition) -> DatasetConfig:
    """The recipe as one composition's stages see it: its own concepts and entry only."""
    return config.model_copy(
        update={"compositions": [comp], "concepts": [c for c in config.concepts if c.id in comp.concepts]}
    )


def jobs(config: DatasetConfig, out: str, cutouts: dict[str, list[Cutout]], refresh: bool = False) -> dict[str, Job]:
    """Composition id -> what its stage tasks work on."""
    return {
        comp.id: Job(out, for_composition(config, comp), comp, cutouts_by_photo(cutouts, comp.concepts), refresh)
        for comp in config.compositions
    }


def own_cutouts(job: Job, cutouts: dict[str, list[Cutout]]) -> dict[str, list[Cutout]]:
    return {cid: cutouts[cid] for cid in job.composition.concepts}


def background_note(config: DatasetConfig) -> list[str]:
    """What a run says once when its recipe brings no background photos."""
    if config.backgrounds:
        return []
    return ["no background photos in the recipe: every sample gets a procedural scene. Real photos by scene "
            "(`backgrounds:` in the recipe, or `gen4gen init --backgrounds DIR`) are what the paper starts "
            "from and make finals a person would keep (README, 'Backgrounds')"]


def run_local(config: DatasetConfig, out: str | None = None, refresh: bool = False,
              publish: bool = True) -> tuple[Manifest | None, dict[str, list[Sample]], dict[str, list[Cutout]]]:
    """Every stage in a plain loop, then publish: (manifest, samples per composition, cut-outs)."""
    out = out or config.out
    config, notes = resolve_config(config)  # `auto` -> the segmenter that runs, before any key
    for note in notes + background_note(config):
        logging.getLogger("gen4gen").warning(note)
    check_backends(config)
    cutouts = {c.id: segment_concept(c, out, config.stages.segment, refresh, config.stages.filter.classes)
               for c in config.concepts}
    samples: dict[str, list[Sample]] = {}
    stats: list[CompositionStats] = []
    for cid, job in jobs(config, out, cutouts, refresh).items():
        goal = target(config, job.composition)
        sets, size, tally = [], goal.first, None
        while size:  # rounds (tasks/targets.py), as the flow runs them
            start = tally.attempts if tally else 0
            indices = range(start, start + size)
            handed = hand_on(out, PLAN.name, plan_composition(job, own_cutouts(job, cutouts), indices))
            for stage, _ in SAMPLE_STAGES:
                handed = run_set(stage, handed, job)  # what each stage task does
            sets.append(handed)
            tally = tally_composition(out, sets, job)
            size = next_round(goal, tally.attempts, tally.kept)
        samples[cid] = take(out, tally.samples)
        stats.append(collect_composition(samples[cid], out, tally.samples.seconds, goal, tally.rounds))
    manifest = publish_dataset(config, out, stats, cutouts) if publish else None
    return manifest, samples, cutouts
