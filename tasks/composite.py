"""Composite: a plan and its cut-outs -> the composite image and the union mask.

Each object is cut from its photo along its mask's bounding box, scaled to fit its box
with its aspect ratio kept, and stood on the box's bottom edge (objects rest on the
ground). Objects are pasted in order of summed overlap with the others, most overlapped
first, so the least hidden objects end on top (the reference code's order). How much of
each object stays visible is measured here, where it is exact, for the filter to judge.
"""

from __future__ import annotations

import cv2
import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from gen4gen.infra.errors import BadInput
from gen4gen.infra.storage import join, read_mask, read_photo, write_png
from gen4gen.infra.records import Box, Cutout, Sample, SampleSet, box_iou
from gen4gen.tasks.stage import IMAGE_FORMAT, Job, Stage, each_sample, run_set

STAGE = "composite"


def paste_order(boxes: list[Box]) -> list[int]:
    """Indices in paste order: most summed IoU with the others first (stable on ties)."""
    overlap = [sum(box_iou(b.xywh, o.xywh) for o in boxes if o is not b) for b in boxes]
    return sorted(range(len(boxes)), key=lambda i: -overlap[i])


def fit_into_box(rgb: np.ndarray, mask: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Scale a cut-out to fit its box keeping its aspect ratio; returns rgb, mask, x, y.

    The object is centred horizontally and stands on the box's bottom edge.
    """
    h, w = mask.shape
    scale = min(box.w / w, box.h / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    rgb = cv2.resize(rgb, (nw, nh), interpolation=interp)
    mask = np.clip(cv2.resize(mask, (nw, nh), interpolation=interp), 0.0, 1.0)
    x = box.x + (box.w - nw) // 2
    y = box.y + box.h - nh
    return rgb, mask, x, y


def compose(canvas: int, layers: list[tuple[Box, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Paste cut-outs (box, photo crop rgb, crop mask) onto a black canvas.

    Returns the composite (uint8, straight colour, black where no object), the union
    mask (float32 [0,1], the objects' combined coverage) and measures per
    concept: visible.<id> (share of its mask left uncovered by objects pasted later) and
    area.<id> (its visible pixels over its box area).
    """
    image = np.zeros((canvas, canvas, 3), np.float32)  # premultiplied by coverage
    union = np.zeros((canvas, canvas), np.float32)  # coverage: alpha of all objects "over"
    visible: dict[int, np.ndarray] = {}  # layer index -> its alpha still showing
    own: dict[int, float] = {}  # layer index -> its whole alpha, before any cover
    for i in paste_order([b for b, _, _ in layers]):
        box, rgb, mask = layers[i]
        rgb, mask, x, y = fit_into_box(rgb, mask, box)
        # Work inside the object's own rectangle only: the rest of the canvas is untouched.
        region = (slice(y, y + mask.shape[0]), slice(x, x + mask.shape[1]))
        a = mask[..., None]
        image[region] = rgb * a + image[region] * (1 - a)
        union[region] = mask + union[region] * (1 - mask)
        for j in visible:  # this object covers everything pasted before it
            visible[j][region] *= 1 - mask
        alpha = np.zeros((canvas, canvas), np.float32)
        alpha[region] = mask
        visible[i], own[i] = alpha, float(mask.sum())
    # Straight (not premultiplied) colour: at a soft edge the pixel keeps the object's
    # colour and the mask says how much of it shows, so repaint blends it exactly once.
    covered = union > 0
    image[covered] /= union[covered][:, None]
    measures: dict[str, float] = {}
    for i, (box, _, _) in enumerate(layers):
        shown = float(visible[i].sum())
        measures[f"visible.{box.concept}"] = round(shown / own[i], 4) if own[i] else 0.0
        measures[f"area.{box.concept}"] = round(shown / box.area, 4)
    return image.round().astype(np.uint8), union, measures


def cut(photo_rgb: np.ndarray, mask: np.ndarray, cutout: Cutout) -> tuple[np.ndarray, np.ndarray]:
    """The object's crop from its photo and mask, along the cut-out's bounding box."""
    if mask.shape != photo_rgb.shape[:2]:
        raise BadInput(cutout.photo, f"mask {mask.shape} does not match the photo {photo_rgb.shape[:2]}")
    x, y, w, h = cutout.bbox
    return photo_rgb[y : y + h, x : x + w], mask[y : y + h, x : x + w]


def composite_samples(samples: list[Sample], job: Job, model: None = None) -> None:
    """Composite every live sample (in place); writes composite/ and mask/ images."""

    def one(sample: Sample) -> None:
        layers = []
        for box in sample.plan.boxes:
            cutout = job.cutouts[sample.plan.photos[box.concept]]
            if not cutout.usable:
                reason = cutout.error
                if reason is not None and reason.code == "empty_mask":
                    sample.drop(reason.code, STAGE, f"{box.concept}: {reason.detail}")
                else:
                    code = reason.code if reason else "bad_input"
                    sample.fail(code, STAGE, f"{box.concept}: {reason.detail if reason else 'no mask'}")
                return
            crop_rgb, crop_mask = cut(read_photo(cutout.photo), read_mask(join(job.out, cutout.mask)), cutout)
            layers.append((box, crop_rgb, crop_mask))
        image, union, measures = compose(sample.plan.canvas, layers)
        for output, arr in (("composite", image), ("mask", union)):
            path = COMPOSITE.path(sample, output=output)
            sample.hashes[output] = write_png(join(job.out, path), arr)
            sample.paths[output] = path
        sample.measures.update(measures)

    each_sample(samples, STAGE, one)


def _masks(sample: Sample, job: Job) -> list[str | None]:
    """The cut-outs a sample uses: their masks' keys (photo bytes, category, segmenter)."""
    return [job.cutouts[sample.plan.photos[b.concept]].mask for b in sample.plan.boxes]


COMPOSITE = Stage(
    name=STAGE, family=None, contract=None, after="plan", inputs=_masks,
    modules=("gen4gen.tasks.composite",),
    settings=lambda config, comp: {"image_format": IMAGE_FORMAT},
    process=composite_samples,
)


@task(name="composite", task_run_name="composite[{job.composition.id}]", cache_policy=NO_CACHE, persist_result=False)
def composite_task(samples: SampleSet, job: Job) -> SampleSet:
    return run_set(COMPOSITE, samples, job)
