"""Plan: one composition -> its samples' layout plans (boxes, scene, seed, source photos).

Runs per composition, after segmentation, so that every box is shaped like the cut-out it
will hold. A sample's id is the key of its plan: what planning uses and nothing else (the
plan settings and the composition's concepts, the sample's index and seed, the chosen
photos' bytes and cut-outs, the planner's code version). So the same recipe always gives the
same ids, a later stage's setting never changes one, and adding a sample plans only it.
Each plan is committed as a record (`{composition}/plan/{sample id}.json`); the scenes a
planner proposes for a composition are committed once too, so an LLM is asked once.
"""

from __future__ import annotations

import json

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from gen4gen.infra import progress
from gen4gen.infra.errors import BadInput
from gen4gen.infra.records import Box, Composition, Cutout, DatasetConfig, LayoutPlan, Reason, Sample, SampleSet
from gen4gen.infra.storage import join, read_bytes, write_bytes
from gen4gen.models import registry
from gen4gen.models.contracts import LayoutRequest, PlannedObject, Planner
from gen4gen.models.plan.planner import category_aspect
from gen4gen.tasks.common import digest
from gen4gen.tasks.stage import KEY_LENGTH, STAGES_DIR, Job, Stage, committed_names, hand_on, read_record

STAGE = "plan"
SCENES_PER_COMPOSITION = 3  # the paper: the LLM proposes 3 backgrounds per composition


def sample_seed(base: int, composition: str, index: int) -> int:
    """A seed per sample, independent of the other compositions and of sample order."""
    return int(digest(base, composition, index)[:8], 16)


def choose_photo(rng: np.random.Generator, cutouts: list[Cutout]) -> Cutout:
    """One source photo at random, as the paper does; photos whose cut-outs pass their
    checks first (tasks/cutouts.py), then any usable one.

    A concept whose photos are all unusable or flagged still gets one, so its samples are
    recorded as dropped with the photo's reason instead of vanishing.
    """
    usable = [c for c in cutouts if c.usable]
    pool = [c for c in usable if not c.flags] or usable or cutouts
    return pool[int(rng.integers(len(pool)))]


def settings(config: DatasetConfig, comp: Composition) -> dict:
    """What planning reads from the recipe: no token, no later stage, no sample count."""
    return {
        "stage": config.stages.plan, "canvas": config.canvas, "max_iou": config.max_iou, "seed": config.seed,
        "composition": comp.id, "scenes": comp.scenes,
        "concepts": [(c, config.concept(c).category, config.concept(c).size) for c in comp.concepts],
    }


PLAN = Stage(name=STAGE, family="plan", contract=Planner, modules=("gen4gen.tasks.plan",), settings=settings)


def plan_composition(job: Job, cutouts: dict[str, list[Cutout]], indices: range | None = None) -> list[Sample]:
    """The composition's samples in index order, planned or read back from their records:
    `indices` (a round's, tasks/targets.py), by default the first `samples`."""
    indices = range(job.composition.samples) if indices is None else indices
    config, comp = job.config, job.composition
    concepts = [config.concept(cid) for cid in comp.concepts]
    base = digest(settings(config, comp), PLAN.code_version(config))
    backend, options = PLAN.backend(config), PLAN.backend_options(config)
    committed = set() if job.refresh else committed_names(job.out, comp.id, STAGE)
    kinds = [PlannedObject(c.id, c.category, category_aspect(c.category), c.size) for c in concepts]
    scenes = comp.scenes or _scenes(job, kinds, base, committed)

    samples: dict[int, Sample] = {}
    todo: list[tuple[int, str, dict[str, Cutout], LayoutRequest]] = []
    for index in indices:
        seed = sample_seed(config.seed, comp.id, index)
        rng = np.random.default_rng(seed)
        chosen = {c.id: choose_photo(rng, cutouts[c.id]) for c in concepts}
        objects = tuple(
            PlannedObject(c.id, c.category,
                          chosen[c.id].bbox[2] / chosen[c.id].bbox[3] if chosen[c.id].usable else category_aspect(c.category),
                          c.size)
            for c in concepts
        )
        scene = scenes[index % len(scenes)]
        # The flags are in the id: a check that changes its verdict on a photo re-plans.
        used = {cid: (cut.photo, cut.photo_sha256, cut.mask, cut.bbox, [f.code for f in cut.flags])
                for cid, cut in chosen.items()}
        sample_id = f"{index:05d}-{digest(base, index, seed, scene, used)[:KEY_LENGTH]}"
        cached = read_record(job.out, f"{STAGES_DIR}/{comp.id}/{STAGE}/{sample_id}.json") if f"{sample_id}.json" in committed else None
        if cached is not None and cached.id == sample_id:
            # Tokens are not part of the plan: a renamed token takes effect without replanning.
            samples[index] = cached.model_copy(update={"tokens": [c.token for c in concepts]})
            continue
        todo.append((index, sample_id, chosen, LayoutRequest(objects, config.canvas, scene, config.max_iou, seed)))

    if todo:
        with registry.use(PLAN.family, backend, options) as planner:
            layouts = planner.plan_batch([request for *_, request in todo])
        for (index, sample_id, chosen, request), layout in zip(todo, layouts):
            plan = LayoutPlan(
                composition=comp.id, index=index, canvas=config.canvas,
                boxes=[Box(concept=o.concept, x=b[0], y=b[1], w=b[2], h=b[3], sized_by=rule)
                       for o, b, rule in zip(request.objects, layout.boxes, layout.sizing or [None] * len(layout.boxes))],
                scene=request.scene, seed=request.seed, photos={cid: cut.photo for cid, cut in chosen.items()},
                planner=layout.made_by,
            )
            sample = Sample(
                id=sample_id, composition=comp.id, concepts=[c.id for c in concepts], tokens=[c.token for c in concepts],
                plan=plan, stage_keys={STAGE: sample_id},
                notes=[Reason(code=code, stage=STAGE, detail=detail) for code, detail in layout.notes],
            )
            write_bytes(join(job.out, f"{STAGES_DIR}/{comp.id}/{STAGE}/{sample_id}.json"), sample.model_dump_json(exclude={"seconds"}).encode())
            samples[index] = sample
        progress.computed(comp.id, STAGE, len(todo))
    progress.advance(comp.id, STAGE, len(indices))
    return [samples[i] for i in indices]


def _scenes(job: Job, kinds: list[PlannedObject], base: str, committed: set[str]) -> list[str]:
    """The planner's scenes for the composition, proposed once and committed."""
    name = f"scenes-{base[:KEY_LENGTH]}.json"
    uri = join(job.out, STAGES_DIR, job.composition.id, STAGE, name)
    if name in committed:
        try:
            found = json.loads(read_bytes(uri))
            if isinstance(found, list) and found and all(isinstance(s, str) and s for s in found):
                return found
        except (BadInput, ValueError):
            pass  # unreadable: ask again and rewrite it
    config = job.config
    with registry.use(PLAN.family, PLAN.backend(config), PLAN.backend_options(config)) as planner:
        scenes = planner.scenes(kinds, SCENES_PER_COMPOSITION, sample_seed(config.seed, job.composition.id, -1))
    write_bytes(uri, json.dumps(scenes).encode())
    return scenes


@task(name="plan", task_run_name="plan[{job.composition.id}]", cache_policy=NO_CACHE, persist_result=False)
def plan_task(job: Job, cutouts: dict[str, list[Cutout]], indices: range | None = None) -> SampleSet:
    return hand_on(job.out, STAGE, plan_composition(job, cutouts, indices))
