"""Caption: each image -> a caption that names every concept by its token and the scene.

Two kinds of backends: a template captioner writes the caption from the plan alone; a
describing one (`needs_image`, e.g. LLaVA) reads the final images of a composition in
batches and returns each caption with notes on what it worked around (a description that
named no concept and got the template caption, a cut to CLIP's length); the notes go into
the sample's record, which stays alive.
"""

from __future__ import annotations

import time

from prefect import task

from infra import progress
from infra.caching import STAGE_CACHE
from infra.errors import BadInput
from infra.limits import gpu_slot
from infra.storage import join, read_rgb
from models import registry
from tasks.common import each_sample
from tasks.records import DatasetConfig, Reason, Sample

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
    """Caption with a model that looks at the images, `model.batch_size` images at a time.

    Like `each_sample`: works on copies, a bad input fails only its sample, and any other
    error propagates so the task is retried. Each sample's seconds are its batch's share.
    """
    samples = [s.model_copy(deep=True) for s in samples]
    live = [s for s in samples if s.alive]
    size = max(1, int(getattr(model, "batch_size", 1)))
    for start in range(0, len(live), size):
        began = time.perf_counter()
        batch, images = [], []
        for sample in live[start : start + size]:
            try:
                images.append(read_rgb(join(out, sample.paths["repaint"])))
                batch.append(sample)
            except BadInput as err:
                sample.fail(err.code, STAGE, str(err))
        if batch:
            results = model.caption_images(
                images, [objects_of(s, config) for s in batch], [s.plan.scene for s in batch], [s.plan.seed for s in batch]
            )
            for sample, result in zip(batch, results):
                sample.caption = result.text
                sample.notes.extend(Reason(code=code, stage=STAGE, detail=detail) for code, detail in result.notes)
        share = round((time.perf_counter() - began) / max(1, len(live[start : start + size])), 4)
        for sample in live[start : start + size]:
            sample.seconds[STAGE] = share
    if samples:
        progress.advance(samples[0].composition, STAGE, len(samples))
    return samples


@task(name="caption", cache_policy=STAGE_CACHE, persist_result=True)
def caption_task(samples: list[Sample], config: DatasetConfig, out: str | None = None) -> list[Sample]:
    with gpu_slot("caption", config.stages.caption.backend):
        return caption_samples(samples, config, out)
