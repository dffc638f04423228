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
import logging
from dataclasses import replace

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from gen4gen.infra import progress
from gen4gen.infra.errors import BadInput
from gen4gen.infra.records import (
    Background, Box, Composition, Cutout, DatasetConfig, LayoutPlan, Reason, Sample, SampleSet,
)
from gen4gen.infra.storage import basename, decode_image, join, read_bytes, read_input, sha256, to_rgb_alpha, write_bytes
from gen4gen.models import registry
from gen4gen.models.detect import checks as class_checks
from gen4gen.models.detect import weights as detect_weights
from gen4gen.models.backgrounds import Ground, cover_crop, estimate_ground, ground_from_hint, light_side
from gen4gen.models.contracts import LayoutRequest, PlannedObject, Planner
from gen4gen.models.plan.planner import category_aspect
from gen4gen.tasks.common import digest
from gen4gen.tasks.cutouts import cut_edges, placeable
from gen4gen.tasks.reader import BACKGROUND_VERDICTS
from gen4gen.tasks.stage import KEY_LENGTH, STAGES_DIR, Job, Stage, committed_names, hand_on, read_record

STAGE = "plan"
SCENES_PER_COMPOSITION = 3  # the paper: the LLM proposes 3 backgrounds per composition


def sample_seed(base: int, composition: str, index: int) -> int:
    """A seed per sample, independent of the other compositions and of sample order."""
    return int(digest(base, composition, index)[:8], 16)


def choose_photo(rng: np.random.Generator, cutouts: list[Cutout], on_photo: bool = False) -> Cutout:
    """One source photo at random, as the paper does; photos whose cut-outs pass their
    checks first (tasks/cutouts.py), then any usable one. On a background photo, cut-outs
    that can enter the scene (`placeable`) come before those that cannot.

    A concept whose photos are all unusable or flagged still gets one, so its samples are
    recorded as dropped with the photo's reason instead of vanishing.
    """
    usable = [c for c in cutouts if c.usable]
    good = [c for c in usable if not c.flags]
    if on_photo:
        good = [c for c in good if placeable(cut_edges(c))] or good
    pool = good or usable or cutouts
    return pool[int(rng.integers(len(pool)))]


def background_pool(config: DatasetConfig, comp: Composition) -> list[tuple[str, str, float | None]]:
    """(scene, photo URI, ground hint) for every background photo the composition may use:
    its own scenes' photos, else every scene's."""
    pool = []
    for bg in config.backgrounds:
        if comp.scenes and bg.scene not in comp.scenes:
            continue
        for photo in bg.photos:
            pool.append((bg.scene, photo, bg.ground.get(basename(photo))))
    return pool


def vet_pool(job: Job, pool: list[tuple[str, str, float | None]]) -> tuple[list, dict[str, str]]:
    """The pool without the photos the class checks' detector finds a person, an animal or an
    object of one of the composition's categories in (models/detect/checks.py:
    vet_background): such a photo would bring a thing no caption names. Returns the pool
    kept and {photo: why} for those left out. Each verdict is kept beside the dataset
    (`.cache/background/`, by the photo's bytes, the categories and the detector) and read
    back by later runs. No detector: all kept. When every photo is left out the pool stays
    whole and the samples on them are dropped with the reason (plan_composition)."""
    config = job.config
    classes = config.stages.filter.classes
    weights = detect_weights.in_use(classes.detector)
    if weights is None or not pool:
        return pool, {}
    categories = sorted({config.concept(c).category for c in job.composition.concepts})
    detector_key = detect_weights.detector_id(weights)
    flagged: dict[str, str] = {}
    detector = None
    for _, photo, _ in pool:
        if photo in flagged:
            continue
        try:
            data = read_input(photo)
        except BadInput:
            continue  # the samples on it fail with the photo named (plan_composition)
        verdict_uri = join(job.out, BACKGROUND_VERDICTS,
                           f"{digest(sha256(data), categories, classes, detector_key)[:KEY_LENGTH]}.json")
        try:
            verdict = json.loads(read_bytes(verdict_uri))
        except (BadInput, FileNotFoundError, ValueError):
            if detector is None:
                detector = registry.load("detect", "nanodet", {"weights": str(weights)})
            try:
                rgb = to_rgb_alpha(decode_image(data, photo))[0]
            except BadInput:
                continue
            why, _ = class_checks.vet_background(detector, rgb, categories, classes)
            verdict = {"photo": photo, "why": why}
            write_bytes(verdict_uri, json.dumps(verdict).encode())
        if isinstance(verdict, dict) and verdict.get("why"):
            flagged[photo] = str(verdict["why"])
    kept = [entry for entry in pool if entry[1] not in flagged]
    for photo, why in flagged.items():
        logging.getLogger("gen4gen").warning(f"background photo {photo} is not used for {job.composition.id}: {why}")
    return kept or pool, flagged


def read_background(uri: str, canvas: int, hint: float | None) -> tuple[Background, Ground]:
    """A background photo read (bounded, checked) and measured: its ground and light."""
    data = read_input(uri)
    rgb = to_rgb_alpha(decode_image(data, uri))[0]
    view = cover_crop(rgb, canvas)
    ground = ground_from_hint(hint, canvas, rgb.shape[:2]) if hint is not None else estimate_ground(view)
    record = Background(photo=uri, sha256=sha256(data), ground=list(ground.tops), horizon=ground.horizon,
                        light=round(light_side(view, ground.horizon), 3),
                        source="hint" if hint is not None else "estimated")
    return record, ground


def settings(config: DatasetConfig, comp: Composition) -> dict:
    """What planning reads from the recipe: no token, no later stage, no sample count."""
    return {
        "stage": config.stages.plan, "canvas": config.canvas, "max_iou": config.max_iou, "seed": config.seed,
        "composition": comp.id, "scenes": comp.scenes,
        "concepts": [(c, config.concept(c).category, config.concept(c).size) for c in comp.concepts],
        # Which photos there are decides which one each sample gets; their bytes are in the
        # ids of the samples that use them only (a changed photo re-plans its samples alone).
        "backgrounds": background_pool(config, comp),
    }


PLAN = Stage(name=STAGE, family="plan", contract=Planner,
             modules=("gen4gen.tasks.plan", "gen4gen.models.backgrounds"), settings=settings)


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
    scenes = comp.scenes or ([] if config.backgrounds else _scenes(job, kinds, base, committed))

    pool, vetted = vet_pool(job, background_pool(config, comp))
    order = np.random.default_rng(sample_seed(config.seed, comp.id, -2)).permutation(len(pool)) if pool else []
    seen: dict[str, tuple[Background, Ground] | BadInput] = {}  # each photo read once per composition

    samples: dict[int, Sample] = {}
    todo: list[tuple[int, str, dict[str, Cutout], LayoutRequest, Background | None, Reason | None]] = []
    for index in indices:
        seed = sample_seed(config.seed, comp.id, index)
        rng = np.random.default_rng(seed)
        chosen = {c.id: choose_photo(rng, cutouts[c.id], on_photo=bool(pool)) for c in concepts}
        cuts = {cid: cut_edges(cut) if pool else () for cid, cut in chosen.items()}
        objects = tuple(
            PlannedObject(c.id, c.category,
                          chosen[c.id].bbox[2] / chosen[c.id].bbox[3] if chosen[c.id].usable else category_aspect(c.category),
                          c.size, cuts[c.id])
            for c in concepts
        )
        background, ground, problem = None, None, None
        if pool:
            # Spread evenly over the photos: each is used once before any is used again.
            scene, photo, hint = pool[order[index % len(pool)]]
            if photo not in seen:
                try:
                    seen[photo] = read_background(photo, config.canvas, hint)
                except BadInput as err:
                    seen[photo] = err
            found = seen[photo]
            if isinstance(found, BadInput):
                background = Background(photo=photo)
                problem = Reason(code="bad_background", stage=STAGE, detail=str(found))
            else:
                background, ground = found
                if photo in vetted:
                    problem = Reason(code="background_flagged", stage=STAGE, detail=f"{photo}: {vetted[photo]}")
            unplaceable = [cid for cid, cut in cuts.items() if not placeable(cut)]
            if problem is None and unplaceable:
                cid = unplaceable[0]
                problem = Reason(code="cut_edge", stage=STAGE, detail=(
                    f"{cid}: its photo {chosen[cid].photo} cuts it off at the {' and '.join(cuts[cid])}: "
                    "it cannot enter the scene from that edge"))
        else:
            scene = scenes[index % len(scenes)]
        # The flags are in the id: a check that changes its verdict on a photo re-plans.
        used = {cid: (cut.photo, cut.photo_sha256, cut.mask, cut.bbox, [f.code for f in cut.flags], cuts[cid])
                for cid, cut in chosen.items()}
        where = (background.photo, background.sha256, hint) if background is not None else None
        sample_id = f"{index:05d}-{digest(base, index, seed, scene, used, where)[:KEY_LENGTH]}"
        cached = read_record(job.out, f"{STAGES_DIR}/{comp.id}/{STAGE}/{sample_id}.json") if f"{sample_id}.json" in committed else None
        if cached is not None and cached.id == sample_id:
            # Tokens are not part of the plan: a renamed token takes effect without replanning.
            samples[index] = cached.model_copy(update={"tokens": [c.token for c in concepts]})
            continue
        request = LayoutRequest(objects, config.canvas, scene, config.max_iou, seed, ground)
        todo.append((index, sample_id, chosen, request, background, problem))

    if todo:
        # A sample that cannot be laid out (its background unreadable, a cut-out that cannot
        # enter the scene) is planned on the procedural ground and recorded with its reason.
        requests = [r if problem is None else replace(r, ground=None) for _, _, _, r, _, problem in todo]
        with registry.use(PLAN.family, backend, options) as planner:
            layouts = planner.plan_batch(requests)
        for (index, sample_id, chosen, _, background, problem), request, layout in zip(todo, requests, layouts):
            boxes, notes = layout.boxes, list(layout.notes)
            if request.ground is not None and layout.made_by != "offline":
                boxes, moved = stand_on_ground(boxes, request.ground)
                notes += [("ground_repaired", f"{request.objects[i].concept}: its base moved onto the photo's ground")
                          for i in moved]
            plan = LayoutPlan(
                composition=comp.id, index=index, canvas=config.canvas,
                boxes=[Box(concept=o.concept, x=b[0], y=b[1], w=b[2], h=b[3], sized_by=rule)
                       for o, b, rule in zip(request.objects, boxes, layout.sizing or [None] * len(boxes))],
                scene=request.scene, seed=request.seed, photos={cid: cut.photo for cid, cut in chosen.items()},
                planner=layout.made_by, background=background,
            )
            sample = Sample(
                id=sample_id, composition=comp.id, concepts=[c.id for c in concepts], tokens=[c.token for c in concepts],
                plan=plan, stage_keys={STAGE: sample_id},
                notes=[Reason(code=code, stage=STAGE, detail=detail) for code, detail in notes],
            )
            if problem is not None:
                (sample.fail if problem.code.startswith("bad_") else sample.drop)(problem.code, STAGE, problem.detail)
            write_bytes(join(job.out, f"{STAGES_DIR}/{comp.id}/{STAGE}/{sample_id}.json"), sample.model_dump_json(exclude={"seconds"}).encode())
            samples[index] = sample
        progress.computed(comp.id, STAGE, len(todo))
    progress.advance(comp.id, STAGE, len(indices))
    return [samples[i] for i in indices]


def stand_on_ground(boxes: list[tuple[int, int, int, int]], ground: Ground) -> tuple[list[tuple[int, int, int, int]], list[int]]:
    """Boxes from elsewhere (an LLM) with every base moved down onto the photo's ground where
    it was above it; returns the boxes and the indices of those moved."""
    out, moved = [], []
    for i, (x, y, w, h) in enumerate(boxes):
        top = ground.top_at(x, x + w)
        if y + h < top:
            y = min(top, ground.side) - h
            moved.append(i)
        out.append((x, max(0, y), w, h))
    return out, moved


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
