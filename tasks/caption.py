"""Caption: each image -> a caption that names every concept by its token and the scene.

Two kinds of backends: a template captioner writes the caption from the plan alone; a
describing one (`needs_image`, e.g. LLaVA) reads the final images of a composition in
batches and returns each caption with notes on what it worked around (a description that
named no concept and got the template caption, a cut to CLIP's length); the notes go into
the sample's record, which stays alive.
"""

from __future__ import annotations

from prefect import task

from gen4gen.infra.caching import STAGE_CACHE
from gen4gen.infra.errors import BadInput
from gen4gen.infra.limits import gpu_slot
from gen4gen.infra.storage import join, read_rgb
from gen4gen.models import registry
from gen4gen.tasks.common import each_batch, each_sample
from gen4gen.infra.records import DatasetConfig, Reason, Sample

STAGE = "caption"


def missing_tokens(caption: str, tokens: list[str]) -> list[str]:
    return [t for t in tokens if t not in caption]


def objects_of(sample: Sample, config: DatasetConfig) -> list[tuple[str, str, tuple[int, int, int, int]]]:
    """(token, category, box) per concept of a sample, as captioners take them."""
    objects = []
    for box in sample.plan.boxes:
        concept = config.concept(box.concept)
        objects.append((concept.token, concept.category, box.xywh))
    return objects


def caption_samples(samples: list[Sample], config: DatasetConfig, out: str | None = None) -> list[Sample]:
    """`out`: the dataset URI the final images are under (default: the recipe's)."""
    stage = config.stages.caption
    model = registry.load("caption", stage.backend, stage.options)
    if getattr(model, "needs_image", False):
        return describe_samples(samples, config, out or config.out, model)

    def one(sample: Sample) -> None:
        sample.caption = model.caption(objects_of(sample, config), sample.plan.scene, sample.plan.seed)

    return each_sample(samples, STAGE, one)


def describe_samples(samples: list[Sample], config: DatasetConfig, out: str, model) -> list[Sample]:
    """Caption with a model that looks at the images, `model.batch_size` images at a time
    (`each_batch`: copies, a bad input fails only its sample, other errors propagate so the
    task is retried, each sample's seconds are its batch's share)."""

    def batch(chunk: list[Sample]) -> None:
        readable, images = [], []
        for sample in chunk:
            try:
                images.append(read_rgb(join(out, sample.paths["repaint"])))
                readable.append(sample)
            except BadInput as err:  # known per sample: fail it here, caption the rest
                sample.fail(err.code, STAGE, str(err))
        if not readable:
            return
        results = model.caption_images(
            images, [objects_of(s, config) for s in readable], [s.plan.scene for s in readable],
            [s.plan.seed for s in readable],
        )
        for sample, result in zip(readable, results):
            sample.caption = result.text
            sample.notes.extend(Reason(code=code, stage=STAGE, detail=detail) for code, detail in result.notes)

    return each_batch(samples, STAGE, int(getattr(model, "batch_size", 1)), batch)


@task(name="caption", cache_policy=STAGE_CACHE, persist_result=True)
def caption_task(samples: list[Sample], config: DatasetConfig, out: str | None = None) -> list[Sample]:
    with gpu_slot(registry.uses_gpu("caption", config.stages.caption.backend)):
        return caption_samples(samples, config, out)
