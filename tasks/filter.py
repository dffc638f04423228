"""Filter: each image -> keep or drop, with every reason it broke a rule.

The judging is the backend's (models/score/judge.py: `rules`, the thresholds; `clip`, the rules
then OWL-ViT + CLIP per concept), loaded through the registry like every other stage's
model; the recipe's `stages.filter` fields are its settings. This stage reads each sample's
final image and mask, asks the backend for verdicts a batch at a time and records them.
Dropped samples keep their files and their reasons. Where a COCO detector runs
(`stages.filter.classes`, models/detect/checks.py), every judge's verdict gets the class
checks of the final too (`class_reasons`: `not_detected`, `extra_object`), and the sample's
measures its detections (the report draws them).
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from gen4gen.infra.records import Composition, DatasetConfig, Reason, Sample, SampleSet
from gen4gen.models.backgrounds import read_view
from gen4gen.infra.storage import join, read_mask, read_rgb
from gen4gen.models import registry
from gen4gen.models.contracts import Judge, JudgeItem
from gen4gen.models.detect import checks as class_checks
from gen4gen.models.detect import weights as detect_weights
from gen4gen.tasks.stage import Job, Stage, each_batch, run_set

STAGE = "filter"
FEATURES = ".cache/clip-features"  # CLIP features of source photos, shared by compositions


def filter_samples(samples: list[Sample], job: Job, model: Judge) -> None:
    classes = job.config.stages.filter.classes
    weights = detect_weights.in_use(classes.detector)
    detector = registry.load("detect", "nanodet", {"weights": str(weights)}) if weights else None

    def batch(chunk: list[Sample]) -> None:
        items = [
            JudgeItem(
                image=read_rgb(join(job.out, s.paths["repaint"])), mask=read_mask(join(job.out, s.paths["mask"])),
                image_uri=join(job.out, s.paths["repaint"]), concepts=[job.config.concept(c) for c in s.concepts],
                tokens=s.tokens, caption=s.caption or "", measures=dict(s.measures),
                backdrop=read_view(s.plan.background.photo, s.plan.canvas, s.plan.background.sha256) if s.plan.background else None,
            )
            for s in chunk
        ]
        for sample, item, verdict in zip(chunk, items, model.judge_batch(items)):
            sample.measures.update(verdict.measures)
            if verdict.failed is not None:
                sample.fail(verdict.failed.code, STAGE, verdict.failed.detail)
                continue
            if detector is not None:
                found, measures = class_reasons(sample, item.image, job, detector)
                sample.measures.update(measures)
                verdict.reasons.extend(found)
            flagged = cutout_reasons(sample, job)
            if not job.config.stages.filter.drop_flagged_cutouts:
                sample.notes.extend(flagged)
                flagged = []
            reasons = verdict.reasons + flagged
            sample.reasons.extend(reasons)
            sample.status = "dropped" if reasons else "kept"

    each_batch(samples, STAGE, model.batch_size, batch)


def cutout_reasons(sample: Sample, job: Job) -> list[Reason]:
    """A reason per cut-out check that a photo the sample was built from failed, whatever
    the judge: a piece of a photo is not the concept, however good the image looks."""
    reasons = []
    for concept in sample.concepts:
        cut = job.cutouts.get(sample.plan.photos.get(concept, ""))
        for flag in cut.flags if cut is not None else []:
            reasons.append(Reason(code=flag.code, stage=STAGE, detail=f"{concept}: {cut.photo}: {flag.detail}"))
    return reasons


def class_reasons(sample: Sample, image, job: Job, detector) -> tuple[list[Reason], dict[str, float]]:
    """The class checks of a final (models/detect/checks.py: final_checks): a reason per
    concept not found where its box is and for objects found where none stands; measures:
    each concept's best score where its box is, and the detections."""
    h, w = image.shape[:2]
    sx, sy = w / sample.plan.canvas, h / sample.plan.canvas
    placed = [class_checks.Placed(b.concept, job.config.concept(b.concept).category,
                                  (b.x * sx, b.y * sy, (b.x + b.w) * sx, (b.y + b.h) * sy),
                                  _alone(sample, b.concept, job))
              for b in sample.plan.boxes]
    found = detector.detect(image)
    classes = job.config.stages.filter.classes
    checked, measures = class_checks.final_checks(found, placed, (w, h), classes)
    measures.update(class_checks.detections_measures(found, (w, h), classes))
    return [Reason(code=code, stage=STAGE, detail=detail) for code, detail in checked], measures


def _alone(sample: Sample, concept: str, job: Job) -> float | None:
    """The concept's own-class score in the cut-out the sample was made from (None: not measured)."""
    cut = job.cutouts.get(sample.plan.photos.get(concept, ""))
    if cut is None or cut.measures.get("class_mapped") != 1.0:
        return None
    return cut.measures.get("class_own")


def options(config: DatasetConfig, job: Job | None) -> dict:
    """The backend's settings: the recipe's thresholds, and for a model judge where source
    photos' features are cached (beside the dataset, shared by its compositions)."""
    f = config.stages.filter
    # The stage's settings, not the judge's (the class checks run beside every judge).
    opts = f.model_dump(exclude={"backend", "vision", "drop_flagged_cutouts", "classes"})
    if f.backend == "rules":
        for name in ("detect_threshold", "min_similarity"):  # the model judge's thresholds
            opts.pop(name)
    else:
        opts["vision"] = {"feature_cache": join(job.out, FEATURES) if job else None, **f.vision}
    return opts


def photos(sample: Sample, job: Job) -> dict[str, str | None]:
    """The bytes of the source photos a model judge compares crops with."""
    wanted = {p for c in sample.concepts for p in job.config.concept(c).photos}
    return {p: cut.photo_sha256 for p, cut in sorted(job.cutouts.items()) if p in wanted}


def settings(config: DatasetConfig, comp: Composition) -> dict:
    """The thresholds, and what the judges compare with: each concept's token, category and
    source photos (a model judge matches crops to them)."""
    concepts = [config.concept(c) for c in comp.concepts]
    # Which detector the class checks run (its weights, the class map, its code), if any: a
    # verdict made without one is not reused once the weights are fetched.
    detector = detect_weights.detector_id(detect_weights.in_use(config.stages.filter.classes.detector))
    return {"stage": config.stages.filter, "concepts": [c.model_dump(mode="json") for c in concepts],
            "detector": detector}


FILTER = Stage(
    name=STAGE, family="filter", contract=Judge, after="caption",
    modules=("gen4gen.tasks.filter", "gen4gen.models.backgrounds"), settings=settings, process=filter_samples, options=options,
    inputs=photos,
)


@task(name="filter", task_run_name="filter[{job.composition.id}]", cache_policy=NO_CACHE, persist_result=False)
def filter_task(samples: SampleSet, job: Job) -> SampleSet:
    return run_set(FILTER, samples, job)
