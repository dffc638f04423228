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
from gen4gen.models.backgrounds import read_view
from gen4gen.tasks.cutouts import cut_edges
from gen4gen.tasks.stage import IMAGE_FORMAT, Job, Stage, each_sample, run_set

STAGE = "composite"


def paste_order(boxes: list[Box]) -> list[int]:
    """Indices in paste order: most summed IoU with the others first (stable on ties)."""
    overlap = [sum(box_iou(b.xywh, o.xywh) for o in boxes if o is not b) for b in boxes]
    return sorted(range(len(boxes)), key=lambda i: -overlap[i])


def fit_into_box(rgb: np.ndarray, mask: np.ndarray, box: Box, cut: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Scale a cut-out to fit its box keeping its aspect ratio; returns rgb, mask, x, y.

    The object stands on the box's bottom edge, centred horizontally, or against the box's
    side where its photo cut it off (`cut`: the planner put that side on the canvas's edge).
    """
    h, w = mask.shape
    scale = min(box.w / w, box.h / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    rgb = cv2.resize(rgb, (nw, nh), interpolation=interp)
    mask = np.clip(cv2.resize(mask, (nw, nh), interpolation=interp), 0.0, 1.0)
    x = box.x if "left" in cut else box.x + box.w - nw if "right" in cut else box.x + (box.w - nw) // 2
    y = box.y + box.h - nh
    return rgb, mask, x, y


# Colour drawn toward the background, as a share of the difference of the means, and at most
# so many Lab units: partly, because a concept's own colours are its identity.
TOWARD_LIGHTNESS, MAX_LIGHTNESS = 0.3, 12.0
TOWARD_COLOUR, MAX_COLOUR = 0.2, 6.0
SIDE_LIGHT = 0.06  # the lit side this much brighter than the far side, the far side darker
MIN_PART = 0.1  # parts of a mask under this share of its largest part are islands, not body
RIM = 0.006  # a mask is pulled in by this share of the cut-out's longer side (a few pixels)


def main_body(mask: np.ndarray) -> np.ndarray:
    """The mask without its islands (flecks of fur, a tuft of grass, a corner of the blanket
    the segmenter kept): parts under MIN_PART of the largest are cleared, soft rims kept;
    and pulled in by RIM of the object's size, so a thin band of what it lay on (a blanket's
    edge along a dog's fur) is not pasted with it."""
    r = int(round(RIM * max(mask.shape)))
    if r >= 1:
        mask = np.minimum(mask, cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))))
    hard = (mask >= 0.5).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(hard, connectivity=8)
    if n <= 2:
        return mask
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.isin(labels, 1 + np.nonzero(areas >= MIN_PART * areas.max())[0]).astype(np.uint8)
    r = max(2, round(0.01 * max(mask.shape)))
    near = cv2.dilate(keep, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    return mask * near


def clean_edges(rgb: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rim pixels without the old background: where the mask is soft, the colour of the
    object's solid pixels nearby (normalised convolution), and the faintest rim let go."""
    solid = (mask >= 0.95).astype(np.float32)
    if not solid.any():
        return rgb, mask
    sigma = max(1.5, 0.01 * max(mask.shape))
    den = cv2.GaussianBlur(solid, (0, 0), sigma)
    num = cv2.GaussianBlur(rgb.astype(np.float32) * solid[..., None], (0, 0), sigma)
    rim = (mask < 0.95) & (den > 1e-3)
    out = rgb.astype(np.float32)
    out[rim] = num[rim] / den[rim][:, None]
    return np.clip(out, 0, 255), np.clip((mask - 0.1) / 0.9, 0.0, 1.0)


def harmonise(rgb: np.ndarray, mask: np.ndarray, around: np.ndarray, light: float) -> np.ndarray:
    """The object's colour and brightness drawn partly toward the background around it, and
    lit from the image's light side (`light`: -1 left .. 1 right)."""
    weight = mask[..., None]
    if float(mask.sum()) < 1:
        return rgb
    lab = cv2.cvtColor(np.clip(rgb, 0, 255).astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    bg = cv2.cvtColor(around.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB).reshape(-1, 3).mean(0)
    mean = (lab * weight).reshape(-1, 3).sum(0) / float(mask.sum())
    shift = np.array([
        np.clip(TOWARD_LIGHTNESS * (bg[0] - mean[0]), -MAX_LIGHTNESS, MAX_LIGHTNESS),
        np.clip(TOWARD_COLOUR * (bg[1] - mean[1]), -MAX_COLOUR, MAX_COLOUR),
        np.clip(TOWARD_COLOUR * (bg[2] - mean[2]), -MAX_COLOUR, MAX_COLOUR),
    ], np.float32)
    lab += shift
    if light:
        across = np.linspace(-1.0, 1.0, lab.shape[1], dtype=np.float32)[None, :]
        lab[..., 0] *= 1.0 + SIDE_LIGHT * light * across
    lab[..., 0] = np.clip(lab[..., 0], 0, 100)
    return np.clip(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB) * 255.0, 0, 255)


def fill_cut_edges(mask: np.ndarray, cut: tuple[str, ...], depth: int = 4) -> np.ndarray:
    """Along a side its photo cut, the object continues past the canvas's edge: its last rows
    (or columns) take the solid mask from just inside, not the segmenter's fade at the frame."""
    mask = mask.copy()
    d = min(depth, *mask.shape) - 1
    if d <= 0:
        return mask
    if "bottom" in cut:
        mask[-d:] = np.maximum(mask[-d:], mask[-d - 1])
    if "left" in cut:
        mask[:, :d] = np.maximum(mask[:, :d], mask[:, d : d + 1])
    if "right" in cut:
        mask[:, -d:] = np.maximum(mask[:, -d:], mask[:, -d - 1 : -d])
    return mask


def depth_order(boxes: list[Box]) -> list[int]:
    """Indices in paste order on a photo: far (base higher up) first, so nearer objects
    cover farther ones, as they would."""
    return sorted(range(len(boxes)), key=lambda i: boxes[i].y + boxes[i].h)


def compose(canvas: int, layers: list[tuple[Box, np.ndarray, np.ndarray]], background: np.ndarray | None = None,
            light: float = 0.0, cuts: dict[str, tuple[str, ...]] | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Paste cut-outs (box, photo crop rgb, crop mask) onto a black canvas.

    Every cut-out is pasted as its main body with clean rims. With a `background` photo
    (the canvas it will stand on) objects are pasted far to near, each drawn toward the
    colours around it and lit from the `light` side, and a cut-off object against the side
    its photo cut (`cuts`, concept -> edges).

    Returns the composite (uint8, straight colour, black where no object), the union
    mask (float32 [0,1], the objects' combined coverage) and measures per
    concept: visible.<id> (share of its mask left uncovered by objects pasted later) and
    area.<id> (its visible pixels over its box area).
    """
    image = np.zeros((canvas, canvas, 3), np.float32)  # premultiplied by coverage
    union = np.zeros((canvas, canvas), np.float32)  # coverage: alpha of all objects "over"
    visible: dict[int, np.ndarray] = {}  # layer index -> its alpha still showing
    own: dict[int, float] = {}  # layer index -> its whole alpha, before any cover
    boxes = [b for b, _, _ in layers]
    for i in depth_order(boxes) if background is not None else paste_order(boxes):
        box, rgb, mask = layers[i]
        rgb, mask, x, y = fit_into_box(rgb, main_body(mask), box, (cuts or {}).get(box.concept, ()))
        rgb, mask = clean_edges(rgb, mask)
        mask = fill_cut_edges(mask, (cuts or {}).get(box.concept, ()))
        if background is not None:
            around = background[max(0, box.y - box.h // 2) : box.y + box.h, max(0, box.x - box.w // 2) : box.x + box.w * 3 // 2]
            rgb = harmonise(rgb, mask, around, light)
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
        bg = sample.plan.background
        view = read_view(bg.photo, sample.plan.canvas, bg.sha256) if bg is not None else None
        cuts = {b.concept: cut_edges(job.cutouts[sample.plan.photos[b.concept]]) for b in sample.plan.boxes}
        image, union, measures = compose(sample.plan.canvas, layers, view, bg.light if bg else 0.0, cuts if bg else None)
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
    modules=("gen4gen.tasks.composite", "gen4gen.models.backgrounds"),
    settings=lambda config, comp: {"image_format": IMAGE_FORMAT},
    process=composite_samples,
)


@task(name="composite", task_run_name="composite[{job.composition.id}]", cache_policy=NO_CACHE, persist_result=False)
def composite_task(samples: SampleSet, job: Job) -> SampleSet:
    return run_set(COMPOSITE, samples, job)
