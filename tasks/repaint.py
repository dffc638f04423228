"""Repaint: the composite and the inverted object mask -> a realistic image of the scene.

Only the background is repainted; wherever the mask is fully on, the object's pixels are
the composite's pixels, exactly (the reference code let the VAE and refiner alter them).
"""

from __future__ import annotations

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from gen4gen.infra.records import Sample, SampleSet
from gen4gen.infra.storage import join, read_mask, read_rgb, write_png
from gen4gen.models.backgrounds import read_view
from gen4gen.models.contracts import Backdrop, Repainter
from gen4gen.tasks.stage import IMAGE_FORMAT, Job, Stage, each_batch, run_set

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


def backdrop(sample: Sample) -> Backdrop | None:
    """The sample's background photo as its canvas, with its light side; None: a scene."""
    bg = sample.plan.background
    return Backdrop(read_view(bg.photo, sample.plan.canvas, bg.sha256), bg.light) if bg is not None else None


def repaint_samples(samples: list[Sample], job: Job, model: Repainter) -> None:
    """One backend call per chunk of `model.batch_size` samples (in place)."""

    def batch(chunk: list[Sample]) -> None:
        chunk = [s for s in chunk if s.alive]
        inputs = [(read_rgb(join(job.out, s.paths["composite"])), read_mask(join(job.out, s.paths["mask"]))) for s in chunk]
        backdrops = [backdrop(s) for s in chunk]
        painted = model.repaint_batch(
            [c for c, _ in inputs], [m for _, m in inputs], [s.plan.scene for s in chunk],
            [s.plan.seed for s in chunk], [[b.xywh for b in s.plan.boxes] for s in chunk],
            **({"backdrops": backdrops} if any(b is not None for b in backdrops) else {}),
        )
        for sample, (composite, mask), image in zip(chunk, inputs, painted):
            image = keep_objects(image, composite, mask)
            path = REPAINT.path(sample)
            sample.hashes[STAGE] = write_png(join(job.out, path), image)
            sample.paths[STAGE] = path

    each_batch(samples, STAGE, model.batch_size, batch)


REPAINT = Stage(
    name=STAGE, family="repaint", contract=Repainter, after="composite",
    modules=("gen4gen.tasks.repaint", "gen4gen.models.backgrounds"),
    settings=lambda config, comp: {"stage": config.stages.repaint, "image_format": IMAGE_FORMAT},
    process=repaint_samples,
)


@task(name="repaint", task_run_name="repaint[{job.composition.id}]", cache_policy=NO_CACHE, persist_result=False)
def repaint_task(samples: SampleSet, job: Job) -> SampleSet:
    return run_set(REPAINT, samples, job)
