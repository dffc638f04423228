"""The LLM layout planner: boxes from any OpenAI-compatible chat endpoint, validated.

The paper asked an LLM for boxes in the style of LLM-grounded diffusion ("you are a
bounding box generator"); its reference code then `eval()`-ed the answer and trusted its
order. Here the answer is JSON checked against a pydantic schema, matched to objects by
name, and checked against the canvas (finite, positive, inside). A malformed or invalid
answer is sent back with the error for a repair, a fixed number of times; rate limits,
server errors and timeouts are retried with backoff by the client. When the endpoint
cannot give a valid layout, the offline planner makes one, and the plan says so.

Besides the boxes, the same endpoint is asked, once per composition, for the background
scenes (3, as the paper) and for a ranking of the objects' real-world sizes (largest 1.0,
smallest 0.4, as the paper), each as JSON checked by a schema and repaired the same way;
the offline planner's library and size table stand in when the endpoint cannot answer,
and `fallbacks` says which parts were made offline. `associate` proposes compositions of
a concept pool (`gen4gen associate`). No answer is ever evaluated as code.

The API key comes from an environment variable (or a Prefect Secret block) and is never
logged, stored in a record or put in an error message.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from dataclasses import dataclass

from pydantic import BaseModel, Field, StrictInt, ValidationError, field_validator

from gen4gen.models.contracts import Layout, LayoutRequest, PlannedObject
from gen4gen.models.plan.planner import SMALLEST_RATIO, OfflinePlanner, repair_sizes, sizing_rules
from gen4gen.infra.records import MAX_CONCEPTS, MIN_CONCEPTS, box_iou

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


class AnswerRejected(ValueError):
    """The endpoint's answer cannot be used; the message says why, for the repair turn."""


class LayoutRejected(AnswerRejected):
    """A layout answer cannot be used."""


def _schema_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"the answer is not the JSON asked for ({where}: {first['msg']})"


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


# --------------------------------------------------------------------------- scenes

SCENES_SYSTEM = (
    "You suggest background scenes for realistic photos of a group of objects. Answer with "
    'JSON only: {"scenes": [<scene>, ...]}: each scene a place where all the objects '
    'plausibly are together, written as a short phrase that starts with a preposition, such '
    'as "in the garden" or "on a kitchen table" (2 to 8 words, no objects named), all '
    "different, exactly as many as asked."
)
PREPOSITIONS = (
    "in", "on", "at", "by", "near", "inside", "outside", "under", "beneath", "beside", "next",
    "along", "across", "among", "against", "behind", "atop", "within", "underneath", "around",
    "over", "above", "through", "into", "onto", "upon",
)


class LLMScenes(BaseModel):
    scenes: list[str]


def parse_scenes(text: str, count: int) -> list[str]:
    """`count` distinct scene phrases from a JSON answer, or AnswerRejected."""
    try:
        answer = LLMScenes.model_validate_json(text)
    except ValidationError as err:
        raise AnswerRejected(_schema_error(err)) from err
    scenes = [" ".join(s.split()) for s in answer.scenes]
    if len(scenes) != count:
        raise AnswerRejected(f"{count} scenes were asked for, the answer has {len(scenes)}")
    for s in scenes:
        words = s.split()
        if not 2 <= len(words) <= 8 or len(s) > 80:
            raise AnswerRejected(f"scene {s!r}: use 2 to 8 words")
        if words[0].lower() not in PREPOSITIONS:
            raise AnswerRejected(f"scene {s!r}: start with a preposition, as in 'in the garden'")
        if any(not (ch.isprintable()) or ch in "<>{}" for ch in s):
            raise AnswerRejected(f"scene {s!r}: plain words only")
    if len({s.lower() for s in scenes}) != len(scenes):
        raise AnswerRejected(f"scenes {scenes} repeat one another")
    return scenes


# --------------------------------------------------------------------------- sizes

SIZES_SYSTEM = (
    "You rank objects by their typical real-world size (height of the object as it stands). "
    'Answer with JSON only: {"sizes": [{"name": <object name>, "rank": <integer>}, ...]}, one '
    "entry per object; rank 1 is the largest; objects of about the same size share a rank; "
    "ranks are consecutive (1, 2, 3, ...) with no gaps."
)


class LLMSize(BaseModel):
    name: str
    rank: StrictInt


class LLMSizes(BaseModel):
    sizes: list[LLMSize] = Field(min_length=1)


def parse_ranks(text: str, names: list[str]) -> list[int]:
    """One size rank per name in `names` order (1 = largest), or AnswerRejected."""
    try:
        answer = LLMSizes.model_validate_json(text)
    except ValidationError as err:
        raise AnswerRejected(_schema_error(err)) from err
    by_name: dict[str, int] = {}
    for entry in answer.sizes:
        key = entry.name.strip().lower()
        if key in by_name:
            raise AnswerRejected(f"object {entry.name!r} is ranked twice")
        by_name[key] = entry.rank
    missing = [n for n in names if n.lower() not in by_name]
    extra = sorted(set(by_name) - {n.lower() for n in names})
    if missing or extra:
        raise AnswerRejected(f"objects missing: {missing}; objects not asked for: {extra}")
    ranks = [by_name[n.lower()] for n in names]
    bad = [r for r in ranks if not 1 <= r <= len(names)]
    if bad:
        raise AnswerRejected(f"ranks {bad} are out of range: ranks run from 1 to {len(names)}")
    if sorted(set(ranks)) != list(range(1, max(ranks) + 1)):
        raise AnswerRejected(f"ranks {sorted(set(ranks))} have gaps: use 1, 2, 3, ... in order")
    return ranks


def ratios_from_ranks(ranks: list[int]) -> list[float]:
    """Rank 1 -> 1.0, the last rank -> SMALLEST_RATIO (0.4, the paper), linear between."""
    last = max(ranks)
    if last == 1:
        return [1.0] * len(ranks)
    return [round(1.0 - (1.0 - SMALLEST_RATIO) * (r - 1) / (last - 1), 4) for r in ranks]


# --------------------------------------------------------------------------- association

ASSOCIATE_SYSTEM = (
    "You group objects that plausibly appear together in one realistic photo (a cat and a "
    "mug in a kitchen; an astronaut and a rocket at a launch site). Given a pool of concepts "
    "as 'id: category', propose compositions of 2 to 5 different concepts each. Answer with "
    'JSON only: {"compositions": [{"concepts": [<concept id>, ...], "why": <a few words>}, '
    "...]}, using only ids from the pool, and none of the compositions listed as taken."
)


class LLMComposition(BaseModel):
    concepts: list[str]
    why: str = ""


class LLMAssociation(BaseModel):
    compositions: list[LLMComposition] = Field(min_length=1)


@dataclass
class Proposal:
    """A proposed composition: concept ids and the endpoint's reason for grouping them."""

    concepts: list[str]
    why: str


def parse_association(text: str, known: list[str], most: int, taken: list[list[str]] = ()) -> list[Proposal]:
    """At most `most` new compositions from a JSON answer, or AnswerRejected.

    Every id must be in `known`, each composition 2 to 5 different ids. A composition the
    answer repeats, or one already `taken`, is left out; an answer with nothing new left is
    rejected.
    """
    try:
        answer = LLMAssociation.model_validate_json(text)
    except ValidationError as err:
        raise AnswerRejected(_schema_error(err)) from err
    pool = set(known)
    problems = []
    for i, comp in enumerate(answer.compositions):
        unknown = [c for c in comp.concepts if c not in pool]
        if unknown:
            problems.append(f"compositions[{i}]: unknown concept ids {unknown}")
        if len(set(comp.concepts)) != len(comp.concepts):
            problems.append(f"compositions[{i}]: {comp.concepts} names a concept twice")
        if not MIN_CONCEPTS <= len(set(comp.concepts)) <= MAX_CONCEPTS:
            problems.append(f"compositions[{i}]: {len(comp.concepts)} concepts, a composition holds {MIN_CONCEPTS} to {MAX_CONCEPTS}")
    if problems:
        raise AnswerRejected("; ".join(problems[:6]))
    seen = {frozenset(t) for t in taken}
    proposals = []
    for comp in answer.compositions:
        key = frozenset(comp.concepts)
        if key in seen:
            continue
        seen.add(key)
        proposals.append(Proposal(list(comp.concepts), " ".join(comp.why.split())[:200]))
    if not proposals:
        raise AnswerRejected("every composition proposed is taken already or repeated: propose new ones")
    return proposals[:most]


# --------------------------------------------------------------------------- the planner


@dataclass
class PlanAttempt:
    """What happened on the way to a layout (kept for the plan's record, never the key)."""

    source: str  # "llm" or "offline"
    detail: str


class LLMPlanner:
    """Layouts, scenes and size ratios from an OpenAI-compatible endpoint, falling back to
    the offline planner; compositions proposed from a concept pool."""

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
        scenes: bool = True,
        sizes: bool = True,
        failure_ttl: float = 300.0,
    ):
        from openai import OpenAI

        self.model = model
        self.repairs = repairs
        self.ask_scenes, self.ask_sizes = scenes, sizes
        self.offline = OfflinePlanner()
        self.fallback = self.offline if fallback else None
        self.last: dict[int, PlanAttempt] = {}
        # (part, object names) -> why that part was made offline, for the samples' notes.
        self.fallbacks: dict[tuple[str, tuple[str, ...]], str] = {}
        self.failure_ttl = failure_ttl
        # (part, names) -> (value, came from the endpoint, when): composition-level answers.
        self._memo: dict[tuple, tuple[object, bool, float]] = {}
        self._lock = threading.Lock()
        # The client retries 408/409/429/5xx and timeouts with exponential backoff itself.
        self.client = OpenAI(
            base_url=base_url,
            api_key=_api_key(api_key_env, api_key_block),
            timeout=timeout,
            max_retries=http_retries,
        )

    # ----------------------------------------------------------------- the exchange

    def _exchange(self, messages: list[dict], seed: int, parse):
        """Ask, parse, and send a rejected answer back with the reason, `repairs` times.

        Returns (value, "") or (None, the last problem).
        """
        messages = list(messages)
        problem = ""
        for _ in range(self.repairs + 1):
            try:
                text = self._ask(messages, seed)
            except Exception as err:  # the endpoint is down, refuses, or times out for good
                return None, f"endpoint failed: {type(err).__name__}"
            try:
                return parse(text), ""
            except AnswerRejected as err:
                problem = str(err)
                messages += [
                    {"role": "assistant", "content": text[:4000]},
                    {"role": "user", "content": f"That answer cannot be used: {err}. Answer again with JSON only."},
                ]
        return None, problem

    # ----------------------------------------------------------------- layout

    def plan_batch(self, requests: list[LayoutRequest]) -> list[Layout]:
        """One layout per request, each saying how it was made (`openai`, or
        `openai->offline` after an unusable answer) and what was made offline instead."""
        layouts = []
        for r in requests:
            objects = list(r.objects)
            boxes = self.layout(objects, r.canvas, r.scene, r.max_iou, r.seed)
            with self._lock:
                attempt = self.last.pop(r.seed, None)
            made_by = self.name if attempt is None or attempt.source == "llm" else f"{self.name}->{attempt.source}"
            notes = self.notes(objects, r.seed)
            if attempt is not None and attempt.source != "llm":
                notes.append(("layout_fallback", attempt.detail))
                sizing = sizing_rules(objects)
            else:
                boxes, sizing = self._sized(boxes, objects, r, notes)
            layouts.append(Layout(boxes, made_by, notes, sizing))
        return layouts

    def _sized(self, boxes, objects: list[PlannedObject], r: LayoutRequest, notes: list) -> tuple[list, list[str]]:
        """The LLM's boxes checked against the size prior: repaired where far off; where a
        repair makes boxes overlap past the limit, the offline layout (prior sizes)."""
        repaired, sizing = repair_sizes(boxes, objects, r.canvas)
        if repaired == boxes:
            return boxes, sizing
        fixed = [f"{o.concept}: {rule}" for o, rule in zip(objects, sizing) if rule != "llm"]
        if all(box_iou(a, b) <= r.max_iou for i, a in enumerate(repaired) for b in repaired[i + 1:]):
            notes.append(("size_repaired", "; ".join(fixed)))
            return repaired, sizing
        notes.append(("size_repaired", "; ".join(fixed) + "; the repaired boxes overlapped, offline layout used"))
        return (self.fallback or OfflinePlanner()).layout(objects, r.canvas, r.scene, r.max_iou, r.seed), sizing_rules(objects)

    def layout(self, objects: list[PlannedObject], canvas: int, scene: str, max_iou: float, seed: int):
        names = _names(objects)
        ratios = self.size_ratios(objects, seed)
        sizes = ", ".join(f"{n} {r:.2f}" for n, r in zip(names, ratios))
        question = f"Canvas: {canvas}x{canvas}. Scene: {scene}. Relative sizes (largest 1.0): {sizes}. Objects: {', '.join(names)}."
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": EXAMPLE_QUESTION},
            {"role": "assistant", "content": EXAMPLE_ANSWER},
            {"role": "user", "content": question},
        ]
        boxes, problem = self._exchange(messages, seed, lambda text: parse_layout(text, names, canvas, max_iou))
        if boxes is not None:
            self._note(seed, PlanAttempt("llm", "valid answer"))
            return boxes
        if self.fallback is None:
            raise LayoutRejected(f"no valid layout from the endpoint: {problem}")
        self._note(seed, PlanAttempt("offline", f"LLM layout unusable ({problem}); offline planner used"))
        return self.fallback.layout(objects, canvas, scene, max_iou, seed, ratios=ratios)

    # ----------------------------------------------------------------- sizes

    def size_ratios(self, objects: list[PlannedObject], seed: int = 0) -> list[float]:
        """Size ratios (largest 1.0, smallest 0.4) from the endpoint's ranking, asked once
        per set of objects; the offline size table when it cannot answer."""
        names = _names(objects)
        if not self.ask_sizes or len(objects) < 2:
            return self.offline.size_ratios(objects)
        messages = [
            {"role": "system", "content": SIZES_SYSTEM},
            {"role": "user", "content": f"Rank sizes of objects: {', '.join(names)}."},
        ]

        def ask():
            ranks, problem = self._exchange(messages, seed, lambda text: parse_ranks(text, names))
            return (ratios_from_ranks(ranks) if ranks is not None else None), problem

        return list(self._once("sizes", tuple(names), ask, lambda: self.offline.size_ratios(objects),
                               "LLM size ranking unusable ({}); offline size table used"))

    # ----------------------------------------------------------------- scenes

    def scenes(self, objects: list[PlannedObject], count: int, seed: int = 0) -> list[str]:
        """`count` background scenes for these objects, asked once per set of objects; the
        offline scene library when the endpoint cannot answer."""
        names = _names(objects)
        if not self.ask_scenes:
            return self.offline.scenes(objects, count, seed)
        messages = [
            {"role": "system", "content": SCENES_SYSTEM},
            {"role": "user", "content": f"Scenes for objects: {', '.join(names)}. Count: {count}."},
        ]
        return list(self._once(
            "scenes", tuple(names),
            lambda: self._exchange(messages, seed, lambda text: parse_scenes(text, count)),
            lambda: self.offline.scenes(objects, count, seed),
            "LLM scenes unusable ({}); scene library used",
            extra=count,
        ))

    def _once(self, part: str, names: tuple[str, ...], ask, offline, why: str, extra=None):
        """A composition-level answer, asked once: `ask()` -> (value or None, problem).

        An answer is kept for the life of the process; a failure (the offline value used,
        and noted) only for `failure_ttl` seconds, so the samples of one run do not each wait
        on an endpoint that is down, while a long-lived worker asks again later.
        """
        key, memo = (part, names), (part, names, extra)
        with self._lock:
            hit = self._memo.get(memo)
            if hit is not None and (hit[1] or time.monotonic() - hit[2] < self.failure_ttl):
                return hit[0]
        value, problem = ask()
        with self._lock:
            if value is None:
                value = offline()
                self.fallbacks[key] = why.format(problem)
            else:
                self.fallbacks.pop(key, None)
            self._memo[memo] = (value, key not in self.fallbacks, time.monotonic())
        return value

    # ----------------------------------------------------------------- association

    def associate(
        self, pool: list[tuple[str, str]], most: int = 10, taken: list[list[str]] = (), seed: int = 0
    ) -> list[Proposal]:
        """Up to `most` new compositions of the (id, category) pool; AnswerRejected when the
        endpoint gives no valid answer (there is no offline fallback: a person chooses)."""
        if len(pool) < MIN_CONCEPTS:
            raise ValueError(f"concepts: association needs at least {MIN_CONCEPTS} concepts, got {len(pool)}")
        if most < 1:
            raise ValueError(f"most: must be at least 1, got {most}")
        listing = "; ".join(f"{cid}: {cat}" for cid, cat in pool)
        question = f"Concepts (id: category): {listing}. Propose up to {most} compositions."
        if taken:
            question += " Taken: " + "; ".join(", ".join(t) for t in taken) + "."
        messages = [{"role": "system", "content": ASSOCIATE_SYSTEM}, {"role": "user", "content": question}]
        ids = [cid for cid, _ in pool]
        proposals, problem = self._exchange(messages, seed, lambda text: parse_association(text, ids, most, taken))
        if proposals is None:
            raise AnswerRejected(f"no valid composition proposal from the endpoint: {problem}")
        return proposals

    # ----------------------------------------------------------------- records

    def notes(self, objects: list[PlannedObject], seed: int) -> list[tuple[str, str]]:
        """(code, detail) for each part of a sample's plan made offline instead."""
        key = tuple(_names(objects))
        return [(f"{part}_fallback", detail) for (part, names), detail in sorted(self.fallbacks.items()) if names == key]

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


def _names(objects: list[PlannedObject]) -> list[str]:
    """Objects are named by category, or by concept id when two share a category."""
    return [o.category if _unique([x.category for x in objects]) else o.concept for o in objects]


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
