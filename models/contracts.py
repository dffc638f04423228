"""The backend contracts: one typing.Protocol per stage family, its batch method the only
entry point. A stage (tasks/) calls nothing else on a backend, so a new backend is a class
with these members, declared in models/registry.py; nothing is found by probing.

The records passed in and out are small dataclasses of numbers, arrays and strings: the
stages turn them into the factory's pydantic records (infra/records.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from gen4gen.infra.records import Concept, Reason
from gen4gen.models.backgrounds import Ground

Box = tuple[int, int, int, int]  # x, y, w, h in canvas pixels
Obj = tuple[str, str, Box]  # (token, category, box): a concept as a captioner sees it


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class PlannedObject:
    concept: str
    category: str
    aspect: float  # width / height of the object's cut-out (or its category prior)
    size: float | None = None  # the recipe's own longest side in metres (else the prior's)
    # Frame edges of its photo that cut the object off ("bottom", "left", "right"): on a
    # background photo it must enter the canvas from the same edge (tasks/plan.py).
    cut: tuple[str, ...] = ()


@dataclass(frozen=True)
class LayoutRequest:
    """One sample's layout to make."""

    objects: tuple[PlannedObject, ...]
    canvas: int
    scene: str
    max_iou: float
    seed: int
    ground: Ground | None = None  # the background photo's ground: objects stand on it



@dataclass(frozen=True)
class Layout:
    """A planner's answer: the boxes in the objects' order, what made them (`openai`, or
    `openai->offline` when the LLM's answer could not be used), and what it worked around."""

    boxes: list[Box]
    made_by: str
    notes: list[tuple[str, str]] = field(default_factory=list)  # (code, detail)
    sizing: list[str] = field(default_factory=list)  # per box, the rule that sized it


@runtime_checkable
class Planner(Protocol):
    name: str

    def scenes(self, objects: list[PlannedObject], count: int, seed: int) -> list[str]:
        """`count` background scenes for a composition of these objects."""

    def plan_batch(self, requests: list[LayoutRequest]) -> list[Layout]:
        """One layout per request, in order."""


# --------------------------------------------------------------------------- segment


@runtime_checkable
class Segmenter(Protocol):
    name: str

    def segment_batch(
        self, images: list[tuple[np.ndarray, np.ndarray | None]], categories: list[str]
    ) -> list[np.ndarray]:
        """(rgb uint8, alpha or None) per photo -> a soft mask (float32 in [0, 1]) per photo."""


# --------------------------------------------------------------------------- repaint


@runtime_checkable
class Repainter(Protocol):
    name: str
    batch_size: int

    def repaint_batch(
        self,
        composites: list[np.ndarray],
        masks: list[np.ndarray],
        scenes: list[str],
        seeds: list[int],
        boxes: list[list[Box]],
        backdrops: list[Backdrop | None] | None = None,
    ) -> list[np.ndarray]:
        """The finished image per composite (soft edges blended); the stage then pastes the
        objects' solid pixels back exactly. `backdrops`: per sample its background photo
        (None: paint the scene)."""


@dataclass(frozen=True)
class Backdrop:
    """A sample's background photo as its canvas (cover-cropped, not yet blurred) and the side
    its light comes from (-1 left .. 1 right)."""

    image: np.ndarray
    light: float = 0.0


# --------------------------------------------------------------------------- caption


@dataclass
class Caption:
    """The final caption and what was worked around to get it."""

    text: str
    notes: list[tuple[str, str]] = field(default_factory=list)  # (code, detail)
    raw: str = ""  # what a describing model said, before tokens were put in


@runtime_checkable
class Captioner(Protocol):
    name: str
    batch_size: int
    needs_image: bool  # the stage reads the final images only for a captioner that looks

    def caption_batch(
        self,
        images: list[np.ndarray | None],
        objects: list[list[Obj]],
        scenes: list[str],
        seeds: list[int],
    ) -> list[Caption]:
        """One caption per sample naming every concept by its token; `images` are None for
        a captioner that does not look (`needs_image` false)."""


# --------------------------------------------------------------------------- filter


@dataclass
class JudgeItem:
    """One sample as the filter sees it."""

    image: np.ndarray  # the final (repainted) image, uint8 RGB
    mask: np.ndarray  # the union object mask, float32
    image_uri: str  # where the image is (model judges cache features by it)
    concepts: list[Concept]
    tokens: list[str]
    caption: str
    measures: dict[str, float]  # what compositing measured (visible.<id>, area.<id>)
    # The sample's background photo as its canvas, where it has one: dark in the photo is
    # the place (a beach at dusk), not a hole the repaint left.
    backdrop: np.ndarray | None = None


@dataclass
class Verdict:
    """Every rule the sample broke (none: keep), the numbers judged on, and a failure
    (`failed`) when it could not be judged at all."""

    reasons: list[Reason] = field(default_factory=list)
    measures: dict[str, float] = field(default_factory=dict)
    failed: Reason | None = None


@runtime_checkable
class Judge(Protocol):
    name: str
    batch_size: int

    def judge_batch(self, items: list[JudgeItem]) -> list[Verdict]:
        """One verdict per item, in order."""
