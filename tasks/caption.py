"""Caption: each image -> a caption that names every concept by its token and the scene.

Two kinds of backends (models/contracts.py: Captioner): a template captioner writes the
caption from the plan alone; a describing one (`needs_image`, e.g. LLaVA) reads the final
images of a composition in batches and returns each caption with notes on what it worked
around (a description that named no concept and got the template caption, a cut to CLIP's
length); the notes go into the sample's record, which stays alive.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from gen4gen.infra.errors import BadInput
from gen4gen.infra.records import Composition, DatasetConfig, Reason, Sample, SampleSet
from gen4gen.infra.storage import join, read_rgb
from gen4gen.models.contracts import Captioner, Obj
from gen4gen.tasks.stage import Job, Stage, each_batch, run_set

STAGE = "caption"


def objects_of(sample: Sample, config: DatasetConfig) -> list[Obj]:
    """(token, category, box) per concept of a sample, as captioners take them."""
    objects = []
    for box in sample.plan.boxes:
        concept = config.concept(box.concept)
        objects.append((concept.token, concept.category, box.xywh))
    return objects


def caption_samples(samples: list[Sample], job: Job, model: Captioner) -> None:
    """Caption `model.batch_size` samples per backend call (in place); a describing model
    gets each sample's final image, and an unreadable one fails only its sample."""

    def batch(chunk: list[Sample]) -> None:
        readable, images = [], []
        for sample in chunk:
            if not model.needs_image:
                readable.append(sample)
                images.append(None)
                continue
            try:
                images.append(read_rgb(join(job.out, sample.paths["repaint"])))
                readable.append(sample)
            except BadInput as err:  # known per sample: fail it here, caption the rest
                sample.fail(err.code, STAGE, str(err))
        if not readable:
            return
        results = model.caption_batch(
            images, [objects_of(s, job.config) for s in readable], [s.plan.scene for s in readable],
            [s.plan.seed for s in readable],
        )
        for sample, result in zip(readable, results):
            sample.caption = result.text
            sample.notes.extend(Reason(code=code, stage=STAGE, detail=detail) for code, detail in result.notes)

    each_batch(samples, STAGE, model.batch_size, batch)


def settings(config: DatasetConfig, comp: Composition) -> dict:
    """The backend, and the words a caption is made of: each concept's token and category."""
    concepts = [config.concept(c) for c in comp.concepts]
    return {"stage": config.stages.caption, "concepts": [(c.id, c.token, c.category) for c in concepts]}


CAPTION = Stage(
    name=STAGE, family="caption", contract=Captioner, after="repaint",
    modules=("gen4gen.tasks.caption",), settings=settings, process=caption_samples,
)


@task(name="caption", task_run_name="caption[{job.composition.id}]", cache_policy=NO_CACHE, persist_result=False)
def caption_task(samples: SampleSet, job: Job) -> SampleSet:
    return run_set(CAPTION, samples, job)
