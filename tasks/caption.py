"""Caption: each image -> a caption that names every concept by its token and the scene."""

from __future__ import annotations

from prefect import task

from models import registry
from infra.caching import STAGE_CACHE
from infra.limits import gpu_slot
from tasks.common import each_sample
from tasks.records import DatasetConfig, Sample

STAGE = "caption"


def missing_tokens(caption: str, tokens: list[str]) -> list[str]:
    return [t for t in tokens if t not in caption]


def caption_samples(samples: list[Sample], config: DatasetConfig) -> list[Sample]:
    stage = config.stages.caption
    model = registry.load("caption", stage.backend, stage.options)

    def one(sample: Sample) -> None:
        objects = []
        for box in sample.plan.boxes:
            concept = config.concept(box.concept)
            objects.append((concept.token, concept.category, box.xywh))
        sample.caption = model.caption(objects, sample.plan.scene, sample.plan.seed)

    return each_sample(samples, STAGE, one)


@task(name="caption", cache_policy=STAGE_CACHE, persist_result=True)
def caption_task(samples: list[Sample], config: DatasetConfig) -> list[Sample]:
    with gpu_slot("caption", config.stages.caption.backend):
        return caption_samples(samples, config)
