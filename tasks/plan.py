"""Plan: each composition -> its samples' layout plans (boxes, scene, seed, source photos).

Runs once for the whole dataset, after segmentation, so that every box is shaped like the
cut-out it will hold. A sample's id is a content hash of its plan, the photos' bytes, the
stage settings and the stages' code: the same recipe always gives the same ids (and so the
same keys), and a changed recipe or backend never overwrites what an earlier one wrote.
"""

from __future__ import annotations

import numpy as np
from prefect import task

from gen4gen.infra.caching import STAGE_CACHE, factory_source_hash
from gen4gen.models import registry
from gen4gen.models.planner import PlannedObject, category_aspect
from gen4gen.models.scenes import scenes_for
from gen4gen.tasks.common import digest
from gen4gen.infra.records import Box, Composition, Cutout, DatasetConfig, LayoutPlan, Reason, Sample

SCENES_PER_COMPOSITION = 3  # the paper: the LLM proposes 3 backgrounds per composition


def sample_seed(base: int, composition: str, index: int) -> int:
    """A seed per sample, independent of the other compositions and of sample order."""
    return int(digest(base, composition, index)[:8], 16)


def choose_photo(rng: np.random.Generator, cutouts: list[Cutout]) -> Cutout:
    """One source photo at random, as the paper does; usable photos first.

    A concept whose photos are all unusable still gets one, so its samples are recorded
    as dropped with the photo's reason instead of vanishing.
    """
    usable = [c for c in cutouts if c.usable]
    pool = usable or cutouts
    return pool[int(rng.integers(len(pool)))]


def plan_composition(config: DatasetConfig, composition: Composition, cutouts: dict[str, list[Cutout]]) -> list[Sample]:
    planner = registry.load("plan", config.stages.plan.backend, config.stages.plan.options)
    concepts = [config.concept(cid) for cid in composition.concepts]
    kinds = [PlannedObject(c.id, c.category, category_aspect(c.category)) for c in concepts]
    if composition.scenes:
        scenes = composition.scenes
    elif hasattr(planner, "scenes"):  # the planner proposes them (the LLM one asks its endpoint)
        scenes = planner.scenes(kinds, SCENES_PER_COMPOSITION, sample_seed(config.seed, composition.id, -1))
    else:
        scenes = scenes_for([c.category for c in concepts])[:SCENES_PER_COMPOSITION]
    samples = []
    for index in range(composition.samples):
        seed = sample_seed(config.seed, composition.id, index)
        rng = np.random.default_rng(seed)
        chosen = {c.id: choose_photo(rng, cutouts[c.id]) for c in concepts}
        objects = [
            PlannedObject(
                concept=c.id,
                category=c.category,
                aspect=(chosen[c.id].bbox[2] / chosen[c.id].bbox[3]) if chosen[c.id].usable else category_aspect(c.category),
            )
            for c in concepts
        ]
        scene = scenes[index % len(scenes)]
        boxes = planner.layout(objects, config.canvas, scene, config.max_iou, seed)
        # A planner that can fall back (the LLM one) says which way each layout was made.
        attempt = getattr(planner, "last", {}).get(seed)
        made_by = planner.name if attempt is None or attempt.source == "llm" else f"{planner.name}->{attempt.source}"
        plan = LayoutPlan(
            composition=composition.id,
            index=index,
            canvas=config.canvas,
            boxes=[Box(concept=o.concept, x=b[0], y=b[1], w=b[2], h=b[3]) for o, b in zip(objects, boxes)],
            scene=scene,
            seed=seed,
            photos={cid: cut.photo for cid, cut in chosen.items()},
            planner=made_by,
        )
        # The code is part of the key too: a changed backend writes new keys, never new bytes
        # under a key that a published manifest already lists.
        key = digest(plan, {cid: cut.photo_sha256 for cid, cut in chosen.items()}, config.stages, factory_source_hash())
        # What the planner made offline instead of asking (scenes, sizes, layout), if anything.
        notes = planner.notes(objects, seed) if hasattr(planner, "notes") else []
        samples.append(
            Sample(
                id=f"{index:05d}-{key[:12]}",
                composition=composition.id,
                concepts=[c.id for c in concepts],
                tokens=[c.token for c in concepts],
                plan=plan,
                notes=[Reason(code=code, stage="plan", detail=detail) for code, detail in notes],
            )
        )
    return samples


def plan_dataset(config: DatasetConfig, cutouts: dict[str, list[Cutout]]) -> dict[str, list[Sample]]:
    """Composition id -> its planned samples."""
    return {comp.id: plan_composition(config, comp, cutouts) for comp in config.compositions}


@task(name="plan", cache_policy=STAGE_CACHE, persist_result=True)
def plan_task(config: DatasetConfig, cutouts: dict[str, list[Cutout]]) -> dict[str, list[Sample]]:
    return plan_dataset(config, cutouts)
