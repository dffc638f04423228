"""Segment: each source photo -> a soft foreground mask, cached by the photo's content hash.

The cache key is the photo's bytes, its concept's category, the backend, its options and
its code, so every composition (and every rerun) that uses a photo shares one mask, and a
changed photo or segmenter gets a new one. The mask is written before its small JSON record, so a record
that exists always points at a complete mask.
"""

from __future__ import annotations

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from gen4gen.infra import progress
from gen4gen.infra.errors import BadInput
from gen4gen.infra.limits import gpu_slot
from gen4gen.infra.records import ClassCheckConfig, Concept, Cutout, Reason, StageConfig
from gen4gen.infra.storage import (decode_image, exists, join, read_bytes, read_input, read_mask, sha256,
                                   to_rgb_alpha, write_bytes, write_png)
from gen4gen.models import registry
from gen4gen.models.contracts import Segmenter
from gen4gen.tasks import cutouts as cutouts_checks
from gen4gen.models.detect import weights as detect_weights
from gen4gen.models.segment.weights import resolve_segment
from gen4gen.tasks.common import digest
from gen4gen.tasks.stage import IMAGE_FORMAT, KEY_LENGTH, Stage

# Below this share of the photo the mask is treated as empty: nothing usable was found.
MIN_COVERAGE = 0.002


def mask_bbox(mask: np.ndarray, threshold: float = 0.5) -> tuple[int, int, int, int] | None:
    """(x, y, w, h) of the mask's pixels above threshold, or None when there are none."""
    ys, xs = np.nonzero(mask > threshold)
    if len(xs) == 0:
        return None
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
    return (x0, y0, x1 - x0 + 1, y1 - y0 + 1)


def describe(photo: str, mask: np.ndarray) -> Cutout:
    """The cutout record of a computed mask (no URIs yet)."""
    coverage = float(mask.mean())
    bbox = mask_bbox(mask)
    if bbox is None or coverage < MIN_COVERAGE:
        return Cutout(
            photo=photo,
            coverage=coverage,
            error=Reason(
                code="empty_mask",
                stage="segment",
                detail=f"{photo}: the segmenter found no foreground (coverage {coverage:.4f})",
            ),
        )
    return Cutout(photo=photo, bbox=bbox, coverage=round(coverage, 6))


def segment_concept(concept: Concept, out: str, stage: StageConfig, refresh: bool = False,
                    classes: ClassCheckConfig | None = None) -> list[Cutout]:
    """One Cutout per source photo of the concept, in order; failures recorded, never raised.

    Cached masks are read back; the photos still to do go through the model as one batch
    (the model is loaded, and a GPU slot taken, only when there are some). `classes`: the
    recipe's class checks (`stages.filter.classes`): where a detector runs, each cut-out's
    classes are measured with the rest (tasks/cutouts.py) and checked (`cutout_class`).
    """
    classes = classes or ClassCheckConfig()
    detector = detect_weights.in_use(classes.detector)
    detector_id = detect_weights.detector_id(detector)
    # The segmenter that runs, its weights' digest in its options (the key follows the
    # weights); a no-op on a stage the run resolved already (models/segment/weights.py).
    stage = resolve_segment(stage)[0]
    version = digest(stage.options, SEGMENT.code_for(stage.backend), IMAGE_FORMAT)[:KEY_LENGTH]
    cache = f".cache/segment/{stage.backend}-{version}"
    # The category steers the segmenter (a person prior, a vehicle prior), so the same
    # photo under two categories has two masks.
    key = digest(concept.category.lower())[:8]

    def entry(sha: str, ext: str) -> str:
        """A photo's cache entry, relative to the dataset: its mask (png) or record (json)."""
        return f"{cache}/{key}-{sha}.{ext}"

    cutouts: dict[int, Cutout] = {}
    todo: list[tuple[int, str, str, tuple[np.ndarray, np.ndarray | None]]] = []
    stale: list[tuple[int, bytes]] = []  # cached masks measured by older checks
    for i, photo in enumerate(concept.photos):
        try:
            data = read_input(photo)
            sha = sha256(data)
            record_uri = join(out, entry(sha, "json"))
            if not refresh and exists(record_uri):
                cached = Cutout.model_validate_json(read_bytes(record_uri))
                cutouts[i] = cached.model_copy(update={"photo": photo})
                if cached.usable and (cached.measures.get("checks") != cutouts_checks.CHECKS_ID
                                      or cached.measures.get("detector", 0.0) != detector_id):
                    stale.append((i, data))
            else:
                todo.append((i, photo, sha, to_rgb_alpha(decode_image(data, photo))))
        except BadInput as err:
            cutouts[i] = Cutout(photo=photo, error=Reason(code=err.code, stage="segment", detail=str(err)))
    def measured(mask: np.ndarray, rgb: np.ndarray) -> dict[str, float]:
        found = cutouts_checks.classes_of(mask, rgb, concept.category, detector)
        return {**cutouts_checks.measures_of(mask, rgb), **found, "detector": detector_id}

    masks: list[np.ndarray] = []
    if todo:
        with gpu_slot(registry.uses_gpu("segment", stage.backend)), \
                registry.use("segment", stage.backend, stage.options) as model:
            masks = model.segment_batch([item[3] for item in todo], categories=[concept.category] * len(todo))
        progress.computed(concept.id, "segment", len(todo))
    for (i, photo, sha, (rgb, _)), mask in zip(todo, masks):
        cut = describe(photo, mask).model_copy(update={"photo_sha256": sha})
        if cut.error is None:
            mask_path = entry(sha, "png")
            write_png(join(out, mask_path), mask)
            cut = cut.model_copy(update={"mask": mask_path, "measures": measured(mask, rgb)})
        # The record is written after its mask: a record that exists points at a whole mask.
        write_bytes(join(out, entry(sha, "json")), cut.model_dump_json().encode())
        cutouts[i] = cut
    for i, data in stale:  # re-measured, not re-segmented: the checks are not the mask's code
        cut = cutouts[i]
        rgb = to_rgb_alpha(decode_image(data, cut.photo))[0]
        cut = cut.model_copy(update={"measures": measured(read_mask(join(out, cut.mask)), rgb)})
        write_bytes(join(out, entry(cut.photo_sha256, "json")), cut.model_dump_json().encode())
        cutouts[i] = cut
    progress.advance(concept.id, "segment", len(concept.photos))
    return cutouts_checks.check_concept([cutouts[i] for i in range(len(concept.photos))], concept.category,
                                        classes)


def cutouts_by_photo(cutouts: dict[str, list[Cutout]], concepts: list[str]) -> dict[str, Cutout]:
    """Photo URI -> cut-out, for the given concepts only (a composition's keys then
    change only when one of its own concepts' photos does)."""
    return {cut.photo: cut for cid in concepts for cut in cutouts[cid]}


# Per concept, not per sample: its own loop above (a content cache shared by compositions).
SEGMENT = Stage(
    name="segment", family="segment", contract=Segmenter, modules=("gen4gen.tasks.segment",),
    settings=lambda config, comp: config.stages.segment,
)


@task(name="segment", task_run_name="segment[{concept.id}]", cache_policy=NO_CACHE, persist_result=False)
def segment_task(concept: Concept, out: str, stage: StageConfig, refresh: bool = False,
                 classes: ClassCheckConfig | None = None) -> list[Cutout]:
    return segment_concept(concept, out, stage, refresh, classes)
