"""The LLM layout planner: boxes from any OpenAI-compatible chat endpoint, validated.

The paper asked an LLM for boxes in the style of LLM-grounded diffusion ("you are a
bounding box generator"); its reference code then `eval()`-ed the answer and trusted its
order. Here the answer is JSON checked against a pydantic schema, matched to objects by
name, and checked against the canvas (finite, positive, inside). A malformed or invalid
answer is sent back with the error for a repair, a fixed number of times; rate limits,
server errors and timeouts are retried with backoff by the client. When the endpoint
cannot give a valid layout, the offline planner makes one, and the plan says so.

The API key comes from an environment variable (or a Prefect Secret block) and is never
logged, stored in a record or put in an error message.
"""

from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import dataclass

from pydantic import BaseModel, Field, ValidationError, field_validator

from models.planner import OfflinePlanner, PlannedObject
from tasks.records import box_iou

SYSTEM = (
    "You are a bounding box generator. Given a canvas size, a list of objects and a scene, "
    "place every object on the canvas as a realistic photo would show it: objects stand on "
    "the ground, relative sizes follow the real world, boxes do not overlap. Answer with JSON "
    'only: {"boxes": [{"name": <object name>, "box": [x, y, width, height]}, ...]} in '
    "canvas pixels, x and y being the top-left corner, one entry per object."
)
# One worked example, in the answer's own coordinates (the reference code sent its
# examples in other coordinates than it asked for).
EXAMPLE_QUESTION = "Canvas: 512x512. Scene: in a garden. Objects: dog, cat, houseplant."
EXAMPLE_ANSWER = json.dumps(
    {
        "boxes": [
            {"name": "dog", "box": [40, 250, 200, 180]},
            {"name": "cat", "box": [270, 320, 110, 110]},
            {"name": "houseplant", "box": [400, 230, 90, 200]},
        ]
    }
)


class LLMBox(BaseModel):
    name: str
    box: tuple[float, float, float, float]

    @field_validator("box")
    @classmethod
    def _finite(cls, v):
        if not all(math.isfinite(c) for c in v):
            raise ValueError(f"box {list(v)} has a value that is not a finite number")
        return v


class LLMLayout(BaseModel):
    boxes: list[LLMBox] = Field(min_length=1)


class LayoutRejected(ValueError):
    """The endpoint's answer cannot be used; the message says why, for the repair turn."""


def parse_layout(text: str, names: list[str], canvas: int, max_iou: float) -> list[tuple[int, int, int, int]]:
    """The boxes of a JSON answer, one per name in `names` order, or LayoutRejected."""
    try:
        layout = LLMLayout.model_validate_json(text)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise LayoutRejected(f"the answer is not the JSON asked for ({where}: {first['msg']})") from err
    by_name: dict[str, LLMBox] = {}
    for b in layout.boxes:
        key = b.name.strip().lower()
        if key in by_name:
            raise LayoutRejected(f"object {b.name!r} is placed twice")
        by_name[key] = b
    missing = [n for n in names if n.lower() not in by_name]
    extra = sorted(set(by_name) - {n.lower() for n in names})
    if missing or extra:
        raise LayoutRejected(f"objects missing: {missing}; objects not asked for: {extra}")
    boxes = []
    for n in names:
        x, y, w, h = (round(c) for c in by_name[n.lower()].box)
        if w <= 0 or h <= 0:
            raise LayoutRejected(f"{n}: width and height must be positive, got {w}x{h}")
        if x < 0 or y < 0 or x + w > canvas or y + h > canvas:
            raise LayoutRejected(f"{n}: box [{x}, {y}, {w}, {h}] lies off the {canvas}x{canvas} canvas")
        boxes.append((x, y, w, h))
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            if box_iou(boxes[i], boxes[j]) > max_iou:
                raise LayoutRejected(f"{names[i]} and {names[j]} overlap more than IoU {max_iou}")
    return boxes


@dataclass
class PlanAttempt:
    """What happened on the way to a layout (kept for the plan's record, never the key)."""

    source: str  # "llm" or "offline"
    detail: str


class LLMPlanner:
    """Layouts from an OpenAI-compatible endpoint, falling back to the offline planner."""

    name = "openai"

    def __init__(
        self,
        base_url: str | None = None,
        model: str = "gpt-4o-mini",
        api_key_env: str = "OPENAI_API_KEY",
        api_key_block: str | None = None,
        timeout: float = 60.0,
        http_retries: int = 4,
        repairs: int = 2,
        fallback: bool = True,
    ):
        from openai import OpenAI

        self.model = model
        self.repairs = repairs
        self.fallback = OfflinePlanner() if fallback else None
        self.last: dict[int, PlanAttempt] = {}
        self._lock = threading.Lock()
        # The client retries 408/409/429/5xx and timeouts with exponential backoff itself.
        self.client = OpenAI(
            base_url=base_url,
            api_key=_api_key(api_key_env, api_key_block),
            timeout=timeout,
            max_retries=http_retries,
        )

    def layout(self, objects: list[PlannedObject], canvas: int, scene: str, max_iou: float, seed: int):
        names = [o.category if _unique([x.category for x in objects]) else o.concept for o in objects]
        question = f"Canvas: {canvas}x{canvas}. Scene: {scene}. Objects: {', '.join(names)}."
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": EXAMPLE_QUESTION},
            {"role": "assistant", "content": EXAMPLE_ANSWER},
            {"role": "user", "content": question},
        ]
        problem = ""
        for _ in range(self.repairs + 1):
            try:
                text = self._ask(messages, seed)
            except Exception as err:  # the endpoint is down, refuses, or times out for good
                problem = f"endpoint failed: {type(err).__name__}"
                break
            try:
                boxes = parse_layout(text, names, canvas, max_iou)
                self._note(seed, PlanAttempt("llm", "valid answer"))
                return boxes
            except LayoutRejected as err:
                problem = str(err)
                messages += [
                    {"role": "assistant", "content": text[:4000]},
                    {"role": "user", "content": f"That answer cannot be used: {err}. Answer again with JSON only."},
                ]
        if self.fallback is None:
            raise LayoutRejected(f"no valid layout from the endpoint: {problem}")
        self._note(seed, PlanAttempt("offline", f"LLM layout unusable ({problem}); offline planner used"))
        return self.fallback.layout(objects, canvas, scene, max_iou, seed)

    def _ask(self, messages: list[dict], seed: int) -> str:
        reply = self.client.chat.completions.create(
            model=self.model,
            messages=messages,
            temperature=0,
            seed=seed % 2**31,
            response_format={"type": "json_object"},
        )
        return reply.choices[0].message.content or ""

    def _note(self, seed: int, attempt: PlanAttempt) -> None:
        with self._lock:
            self.last[seed] = attempt


def _unique(values: list[str]) -> bool:
    return len({v.lower() for v in values}) == len(values)


def _api_key(env: str, block: str | None) -> str:
    if block:
        from prefect.blocks.system import Secret

        return Secret.load(block).get()
    key = os.environ.get(env)
    if not key:
        # Names the variable, never a value.
        raise ValueError(f"stages.plan.options.api_key_env: environment variable {env} is not set")
    return key
