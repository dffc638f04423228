"""Repaint: the composite and the inverted object mask -> a realistic image of the scene.

Only the background is repainted; wherever the mask is fully on, the object's pixels are
the composite's pixels, exactly (the reference code let the VAE and refiner alter them).
"""

from __future__ import annotations

import numpy as np
from prefect import task

from gen4gen.infra.caching import STAGE_CACHE
from gen4gen.infra.storage import join, read_mask, read_rgb, write_png
from gen4gen.infra.limits import gpu_slot
from gen4gen.models import registry
from gen4gen.tasks.common import each_batch, each_sample, stage_path
from gen4gen.infra.records import Sample, StageConfig

STAGE = "repaint"


def keep_objects(painted: np.ndarray, composite: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Guarantee the objects: where the mask is fully on, the composite's pixels, exactly.

    A backend returns the finished image, soft edges blended its own way (blending again
    here would harden them); this only makes sure no backend altered an object.
    """
    if painted.shape != composite.shape:
        raise ValueError(f"repaint returned {painted.shape}, expected {composite.shape}")
    out = painted.copy()
    solid = mask >= 1.0
    out[solid] = composite[solid]
    return out


def repaint_samples(samples: list[Sample], out: str, stage: StageConfig) -> list[Sample]:
    model = registry.load("repaint", stage.backend, stage.options)

    def one(sample: Sample) -> None:
        composite = read_rgb(join(out, sample.paths["composite"]))
        mask = read_mask(join(out, sample.paths["mask"]))
        painted = model.repaint(composite, mask, sample.plan.scene, sample.plan.seed, [b.xywh for b in sample.plan.boxes])
        image = keep_objects(painted, composite, mask)
        path = stage_path(sample.composition, STAGE, sample.id)
        sample.hashes[STAGE] = write_png(join(out, path), image)
        sample.paths[STAGE] = path

    if not hasattr(model, "repaint_batch"):
        return each_sample(samples, STAGE, one)

    def batch(chunk: list[Sample]) -> None:
        # A model that batches (the diffusion repainters): one pipeline call per chunk.
        chunk = [s for s in chunk if s.alive]
        inputs = [(read_rgb(join(out, s.paths["composite"])), read_mask(join(out, s.paths["mask"]))) for s in chunk]
        painted = model.repaint_batch(
            [c for c, _ in inputs], [m for _, m in inputs], [s.plan.scene for s in chunk],
            [s.plan.seed for s in chunk], [[b.xywh for b in s.plan.boxes] for s in chunk],
        )
        for sample, (composite, mask), image in zip(chunk, inputs, painted):
            image = keep_objects(image, composite, mask)
            path = stage_path(sample.composition, STAGE, sample.id)
            sample.hashes[STAGE] = write_png(join(out, path), image)
            sample.paths[STAGE] = path

    return each_batch(samples, STAGE, getattr(model, "batch_size", 1), batch)


@task(name="repaint", cache_policy=STAGE_CACHE, persist_result=True)
def repaint_task(samples: list[Sample], out: str, stage: StageConfig) -> list[Sample]:
    with gpu_slot(registry.uses_gpu("repaint", stage.backend)):
        return repaint_samples(samples, out, stage)
