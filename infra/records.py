"""The records every part of the factory passes around: one module, imported everywhere.

Records are small pydantic models: ids, numbers, text and storage URIs. Never pixels,
tensors or models (DESIGN.md §4: tasks pass references, not pixels).
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

# A safe path segment: starts with a letter or digit, then letters, digits, '.', '_', '-'.
# This excludes '/', '..', leading dots, whitespace, control characters and unicode that
# could normalise into any of those on another file system.
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TOKEN = re.compile(r"<[A-Za-z0-9][A-Za-z0-9_-]{0,62}>")
MAX_CONCEPTS = 5
MIN_CONCEPTS = 2
# Anything in a text that looks like a concept token: '<name>'.
TOKEN_LIKE = re.compile(r"<[^<>\s]+>")


def foreign_token(text: str, own: list[str], token_of: dict[str, str]) -> str | None:
    """Why `text` may not stand in a caption or prompt of the concepts `own`, or None: it names
    a token-like word that is no concept's token, or the token of a concept not in `own`
    (a caption would teach that token from images without its object). `token_of`: every
    concept id -> its token. Compared ignoring case, as CLIP's tokenizer lower-cases."""
    by_token = {tok.lower(): cid for cid, tok in token_of.items()}
    for tok in TOKEN_LIKE.findall(text):
        cid = by_token.get(tok.lower())
        if cid is None:
            return f"names {tok!r}, which is no concept's token"
        if cid not in own:
            return f"names {tok!r} of concept {cid!r}, which is not in its concepts {own}"
    return None


def _check_safe_id(value: str) -> str:
    if not isinstance(value, str) or not _SAFE_ID.fullmatch(value) or ".." in value:
        # ascii() escapes control and non-ASCII characters so the message stays readable.
        raise ValueError(
            f"id {ascii(value)} is not a safe path segment: use 1-64 of letters, digits, "
            "'.', '_', '-', starting with a letter or digit, with no '..'"
        )
    return value


SafeId = Annotated[str, AfterValidator(_check_safe_id)]


def _check_photo_uris(v: list[str]) -> list[str]:
    for p in v:
        if not p.strip() or len(p) > 2048 or any(unicodedata.category(ch)[0] == "C" for ch in p):
            raise ValueError(f"photo {ascii(p)[:100]} is not a usable path or URI (empty, over 2048 "
                             "characters, or holding control characters)")
    return v


class Record(BaseModel):
    """Base of every record: unknown fields are errors (a typo in a config must not pass)."""

    model_config = ConfigDict(extra="forbid", frozen=False)


# --------------------------------------------------------------------------- concepts


class Concept(Record):
    """One of the user's objects: the token it is learnt as and its source photos."""

    id: SafeId
    category: str = Field(description="the category word a detector or a caption uses, e.g. 'cat'")
    token: str = Field(description="the concept token in captions, e.g. '<chelsea>'")
    photos: list[str] = Field(min_length=1, description="URIs of the source photos")
    size: float | None = Field(
        default=None, gt=0, le=1000,
        description="its longest side in metres, when its category's typical size does not fit it "
                    "(the planner sizes boxes by it; models/plan/sizes.csv holds the categories')",
    )

    @field_validator("category")
    @classmethod
    def _category_is_words(cls, v: str) -> str:
        v = unicodedata.normalize("NFC", v).strip()
        if not v or any(unicodedata.category(ch)[0] == "C" for ch in v) or len(v) > 64:
            raise ValueError(f"category {v!r} must be 1-64 printable characters")
        return v

    @field_validator("token")
    @classmethod
    def _token_shape(cls, v: str) -> str:
        if not _TOKEN.fullmatch(v):
            raise ValueError(f"token {v!r} must look like '<name>' (letters, digits, '_', '-')")
        return v

    @field_validator("photos")
    @classmethod
    def _photo_uris(cls, v: list[str]) -> list[str]:
        return _check_photo_uris(v)


# Words Hugging Face `datasets` reads as split names when they stand alone in a folder or
# file name (between '-', '.', '_', ' ' or digits): a composition folder named "test-set"
# would turn the dataset's single train split into a test split.
SPLIT_WORDS = {"train", "training", "test", "testing", "eval", "evaluation", "validation", "valid", "dev", "val"}


class Composition(Record):
    """A set of 2 to 5 concepts composed together, and how many samples to make of it."""

    id: SafeId
    concepts: list[SafeId]
    samples: int = Field(default=8, ge=1, le=10_000)
    # Targets (tasks/targets.py): ask for kept images, not attempts. With `keep`, `samples` is
    # not used: rounds (the first sized by the recipe's expected_yield) top up until `keep` are
    # kept or `max_samples` were planned. None: the recipe's default (DatasetConfig.keep, ...).
    keep: int | None = Field(default=None, ge=1, le=10_000, description="kept images wanted")
    max_samples: int | None = Field(
        default=None, ge=1, le=100_000, description="budget: most samples planned for `keep` (default 4 x keep)"
    )
    scenes: list[str] = Field(
        default_factory=list,
        description="background scenes to draw from; empty: the planner picks by category",
    )

    @field_validator("id")
    @classmethod
    def _not_a_split_name(cls, v: str) -> str:
        words = {w.lower() for w in re.split(r"[-._ 0-9]+", v) if w}
        clash = sorted(words & SPLIT_WORDS)
        if clash:
            raise ValueError(
                f"composition id {v!r} contains {clash[0]!r}, which Hugging Face datasets "
                "reads as a split name in a folder name; choose another id"
            )
        return v

    @field_validator("scenes")
    @classmethod
    def _scenes_are_text(cls, v: list[str]) -> list[str]:
        for i, scene in enumerate(v):
            if not scene.strip() or len(scene) > 200 or any(unicodedata.category(ch)[0] == "C" for ch in scene):
                raise ValueError(f"scenes[{i}] = {scene!r}: a scene is 1-200 printable characters")
        return v

    @field_validator("concepts")
    @classmethod
    def _two_to_five_distinct(cls, v: list[str]) -> list[str]:
        if len(v) != len(set(v)):
            dup = sorted({c for c in v if v.count(c) > 1})
            raise ValueError(f"concepts {v} repeat {dup}: each concept appears once")
        if not MIN_CONCEPTS <= len(v) <= MAX_CONCEPTS:
            raise ValueError(
                f"concepts {v} has {len(v)} concepts: a composition holds "
                f"{MIN_CONCEPTS} to {MAX_CONCEPTS}"
            )
        return v


# --------------------------------------------------------------------------- layout


class Box(Record):
    """Where one concept goes on the canvas, in canvas pixels (x, y: top-left corner)."""

    concept: SafeId
    x: int
    y: int
    w: int
    h: int
    sized_by: str | None = Field(
        default=None, description="the rule that sized the box, e.g. 'prior dog 0.75 m' or 'llm'"
    )

    @property
    def area(self) -> int:
        return self.w * self.h

    @property
    def xywh(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.w, self.h)


def box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union else 0.0


class Background(Record):
    """The real background photo a sample stands on, as planning read it (tasks/plan.py):
    where its ground is on the canvas and where the light comes from."""

    photo: str = Field(description="URI of the background photo")
    sha256: str | None = Field(default=None, description="of the photo's bytes; none when unreadable")
    ground: list[int] = Field(
        default_factory=list,
        description="per column band, left to right: the first canvas row of ground (the floor, "
                    "the lawn, the table top) seen from the bottom up (models/backgrounds.py)",
    )
    horizon: int | None = Field(default=None, description="canvas row of the far end of the ground")
    light: float = Field(default=0.0, ge=-1, le=1, description="-1: light from the left, +1: from the right")
    source: str = Field(default="estimated", description="'estimated' from the photo, or 'hint' from the recipe")


class LayoutPlan(Record):
    """One planned sample: boxes, background scene, seed and which source photo per concept."""

    composition: SafeId
    index: int = Field(ge=0)
    canvas: int = Field(gt=0)
    boxes: list[Box] = Field(min_length=1)
    scene: str = Field(min_length=1)
    seed: int = Field(ge=0)
    photos: dict[str, str] = Field(description="concept id -> URI of the source photo used")
    planner: str = Field(default="offline", description="what made the boxes, e.g. 'openai'")
    background: Background | None = Field(
        default=None, description="the real background photo; none: a procedural scene (no backgrounds in the recipe)"
    )

    @model_validator(mode="after")
    def _boxes_on_canvas(self) -> "LayoutPlan":
        for i, b in enumerate(self.boxes):
            field = f"boxes[{i}] ({b.concept})"
            if b.w <= 0 or b.h <= 0:
                raise ValueError(f"{field}: zero or negative area (w={b.w}, h={b.h})")
            if b.x < 0 or b.y < 0 or b.x + b.w > self.canvas or b.y + b.h > self.canvas:
                raise ValueError(
                    f"{field}: box x={b.x}, y={b.y}, w={b.w}, h={b.h} lies off the "
                    f"{self.canvas}x{self.canvas} canvas"
                )
        ids = [b.concept for b in self.boxes]
        if len(ids) != len(set(ids)):
            raise ValueError(f"boxes name a concept twice: {ids}")
        missing = set(ids) - set(self.photos)
        if missing:
            raise ValueError(f"photos: no source photo chosen for {sorted(missing)}")
        return self


# --------------------------------------------------------------------------- samples

Status = Literal["planned", "kept", "dropped", "failed"]


class Reason(Record):
    """Why a sample was dropped or failed: a short code to group by, and the detail."""

    code: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    stage: str
    detail: str


class Sample(Record):
    """One generated image and everything known about it; failures are data, not exceptions."""

    id: SafeId
    composition: SafeId
    concepts: list[SafeId]
    tokens: list[str]
    plan: LayoutPlan
    stage_keys: dict[str, str] = Field(
        default_factory=dict,
        description="stage -> the key of its output: its input's key, settings and code (tasks/stage.py)",
    )
    paths: dict[str, str] = Field(
        default_factory=dict, description="stage -> output path, relative to the dataset URI"
    )
    hashes: dict[str, str] = Field(default_factory=dict, description="stage -> sha256 of output")
    caption: str | None = None
    status: Status = "planned"
    reasons: list[Reason] = Field(default_factory=list)
    measures: dict[str, float] = Field(
        default_factory=dict, description="numbers the filter decides on, e.g. visible.<id>"
    )
    seconds: dict[str, float] = Field(default_factory=dict, description="stage -> seconds")
    notes: list[Reason] = Field(
        default_factory=list,
        description="what a stage worked around without dropping the sample, e.g. a caption "
        "fallback (code caption_fallback) or a plan made offline after the LLM failed",
    )

    @property
    def alive(self) -> bool:
        """Still going through the stages (not dropped or failed yet)."""
        return self.status in ("planned", "kept")

    def drop(self, code: str, stage: str, detail: str) -> None:
        self.status = "dropped"
        self.reasons.append(Reason(code=code, stage=stage, detail=detail))

    def fail(self, code: str, stage: str, detail: str) -> None:
        self.status = "failed"
        self.reasons.append(Reason(code=code, stage=stage, detail=detail))


class Cutout(Record):
    """One source photo's segmentation: a soft mask cached by the photo's content hash."""

    photo: str
    photo_sha256: str | None = None
    mask: str | None = Field(
        default=None, description="path of the soft mask (8-bit PNG), relative to the dataset URI"
    )
    bbox: tuple[int, int, int, int] | None = Field(
        default=None, description="(x, y, w, h) of the object in photo pixels"
    )
    coverage: float = Field(default=0.0, description="mask mean over the photo")
    error: Reason | None = None
    measures: dict[str, float] = Field(
        default_factory=dict, description="what the cut-out checks measured on the mask (tasks/segment.py)"
    )
    flags: list[Reason] = Field(
        default_factory=list, description="cut-out checks it failed: likely not the object alone"
    )

    @property
    def usable(self) -> bool:
        return self.error is None and self.mask is not None and self.bbox is not None


class SampleSet(Record):
    """One composition's samples after a stage, as its task hands them to the next: a JSONL
    of the records in the stage's folder (named by content) and their counts. Tasks pass
    these, never sample lists, so a flow's memory and a distributed runner's traffic stay
    flat in the sample count."""

    composition: SafeId
    stage: str
    path: str = Field(description="the JSONL of the samples, dataset-relative")
    sha256: str
    samples: int
    alive: int = Field(description="samples still going through the stages")
    seconds: dict[str, float] = Field(
        default_factory=dict, description="stage -> seconds, summed over the samples so far"
    )


class CompositionStats(Record):
    """Per-composition counts and timings, written before the manifest."""

    composition: SafeId
    planned: int
    kept: int
    dropped: int
    failed: int
    reasons: dict[str, int] = Field(default_factory=dict, description="reason code -> samples")
    seconds: dict[str, float] = Field(default_factory=dict, description="stage -> total seconds")
    shard: str = Field(description="path of the composition's samples-*.jsonl, dataset-relative")
    shard_sha256: str
    images: dict[str, str] = Field(
        default_factory=dict, description="published image path (dataset-relative) -> sha256"
    )
    # Yield (tasks/targets.py). `planned` counts the published prefix of the samples (up to
    # the target's last kept one); `attempts` every sample planned in every round.
    target: int | None = Field(default=None, description="kept images asked for (keep); none: no target")
    rounds: int = Field(default=1, description="planning rounds run")
    attempts: int | None = Field(default=None, description="samples planned in all rounds (default: planned)")
    unused: int = Field(
        default=0, description="kept beyond the target, after its last published sample: not published"
    )
    out_of_budget: bool = Field(
        default=False, description="max_samples were planned and the target was not reached"
    )

    @property
    def tried(self) -> int:
        return self.attempts if self.attempts is not None else self.planned

    @property
    def yield_rate(self) -> float:
        """Kept over attempts (the unused kept count: they were made and kept)."""
        return round((self.kept + self.unused) / self.tried, 3) if self.tried else 0.0


class Manifest(Record):
    """The commit record of a dataset version: written last; readers trust only what it lists."""

    dataset: SafeId
    version: SafeId
    uri: str
    created: datetime
    config_sha256: str
    packages: dict[str, str]
    compositions: list[CompositionStats]
    files: dict[str, str] = Field(description="relative path -> sha256 of the published files")
    index: dict[str, str] = Field(
        default_factory=dict,
        description="top-level index file (metadata.jsonl, concepts_list.json) -> its listed copy",
    )
    unusable_photos: dict[str, str] = Field(
        default_factory=dict, description="photo URI -> why it could not be used"
    )
    flagged_photos: dict[str, str] = Field(
        default_factory=dict,
        description="photo URI -> the cut-out checks it failed (its samples are dropped by the filter)",
    )
    segmenter: dict[str, str] = Field(
        default_factory=dict,
        description="what cut the objects out: backend, and for isnet the model file and its sha256",
    )
    kept: int
    dropped: int
    failed: int
    planned: int
    attempts: int | None = Field(default=None, description="samples planned in all rounds (default: planned)")
    short: dict[str, str] = Field(
        default_factory=dict, description="composition -> why it has fewer kept images than its target"
    )


# --------------------------------------------------------------------------- configs

Backend = str  # "offline" today; real backends register more names (see models/registry.py)


class StageConfig(Record):
    """Which backend a stage uses and its options; `options` go to the backend unchanged."""

    backend: Backend = "offline"
    options: dict[str, Any] = Field(default_factory=dict)


class ClassCheckConfig(Record):
    """The class checks (models/detect/checks.py): a COCO detector (NanoDet) asked what is in a
    cut-out, a final and a background photo. Its scores are GFL quality scores (the class's
    confidence times the box's expected overlap with a true object), so the bars are set by
    what a score means, not fitted: ARCHITECTURE.md, "Class checks"."""

    detector: Literal["auto", "nanodet", "off"] = Field(
        default="auto", description="auto: nanodet where `gen4gen weights fetch nanodet` stored it, else off"
    )
    found: float = Field(
        default=0.35, gt=0, lt=1,
        description="smallest score that counts as found (the bar NanoDet's own demo draws boxes at)",
    )
    clear: float = Field(
        default=0.5, gt=0, lt=1,
        description="smallest score of a confident detection (0.5: COCO's overlap for a true match)",
    )
    trace: float = Field(
        default=0.2, ge=0.2, lt=1,
        description="not_detected: a concept is missing from a final only when no detection of its class "
                    "reaches this where its box is (absence is claimed on no trace; 0.2: the lowest kept)",
    )
    match_iou: float = Field(
        default=0.3, gt=0, le=1, description="smallest overlap (IoU) of a detection with a concept's box"
    )


class FilterConfig(Record):
    """The filter's backend (models/score/judge.py: `rules`, or `clip`: the rules then OWL-ViT +
    CLIP) and its thresholds, typed because they are what users tune; a sample breaking any
    of them is dropped with the reason."""

    backend: Backend = "rules"
    max_occlusion: float = Field(
        default=0.4, ge=0, le=1, description="largest hidden share of an object's own mask"
    )
    min_visible_area: float = Field(
        default=0.15, ge=0, le=1, description="smallest visible object area over its box area"
    )
    min_image_std: float = Field(default=12.0, ge=0, description="smallest grey-level std")
    max_flat_share: float = Field(
        default=0.2, gt=0, le=1, description="largest share of the image in one exact colour"
    )
    max_hole_share: float = Field(
        default=0.01, ge=0, le=1, description="largest share of near-black background pixels"
    )
    # backend "clip": the rules above, then OWL-ViT must find each concept by its category
    # word and CLIP must find the crop like the concept's source photos (tasks/filter.py).
    detect_threshold: float = Field(
        default=0.1, ge=0, lt=1, description="clip backend: smallest OWL-ViT score that counts as found"
    )
    min_similarity: float = Field(
        default=0.6, ge=-1, le=1,
        description="clip backend: smallest mean cosine of a concept's crop with its source photos",
    )
    vision: dict[str, Any] = Field(
        default_factory=dict,
        description="clip backend: {'clip': {...}, 'owlvit': {...}, 'feature_cache': URI} (models/score/vision.py)",
    )
    drop_flagged_cutouts: bool = Field(
        default=True,
        description="drop a sample built from a photo whose cut-out failed its checks (tasks/cutouts.py); "
                    "false keeps it, the flags as notes (cut-outs looked at and accepted)",
    )
    classes: ClassCheckConfig = Field(
        default_factory=ClassCheckConfig,
        description="the class checks: cutout_class, not_detected, extra_object, background vetting",
    )

    @field_validator("vision")
    @classmethod
    def _vision_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(v) - {"clip", "owlvit", "feature_cache"})
        if unknown:
            raise ValueError(f"stages.filter.vision: unknown keys {unknown}; known: clip, owlvit, feature_cache")
        return v


class NearDuplicateConfig(Record):
    """Near-duplicates within a composition (tasks/duplicates.py): a kept final made from
    the same photos as an earlier kept one, whose perceptual hash lies within `max_distance`
    bits of it, is dropped (`near_duplicate`). Not a stage setting: changing it recomputes
    no stage, only the verdicts (from cached hashes)."""

    enabled: bool = True
    max_distance: int = Field(
        default=6, ge=0, le=64,
        description="largest Hamming distance of two 64-bit pHashes that counts as a repeat",
    )


class StagesConfig(Record):
    plan: StageConfig = StageConfig()
    # `auto`: isnet where its weights were fetched, else offline (models/segment/weights.py:
    # resolve_segment, called once before a run makes any key, so keys and records name the
    # backend that ran).
    segment: StageConfig = StageConfig(backend="auto")
    repaint: StageConfig = StageConfig()
    caption: StageConfig = StageConfig(backend="template")
    filter: FilterConfig = FilterConfig()


class RunConfig(Record):
    """Execution settings: where to write, how hard to retry, how wide to run."""

    out: str | None = Field(default=None, description="dataset URI; default data/{name}/{version}")
    workers: int = Field(default=2, ge=1, le=256)
    retries: int = Field(default=3, ge=0, le=20)
    retry_delay_seconds: float = Field(default=2.0, ge=0)
    cache: bool = Field(
        default=True,
        description="reuse every sample's committed stage records; false recomputes and rewrites them (--no-cache)",
    )
    runner: "RunnerConfig" = Field(default_factory=lambda: RunnerConfig(), description="where tasks run (infra/runners.py)")
    gpu_slots: int = Field(
        default=1, ge=1, le=64,
        description="GPU tasks at once per worker machine (a Prefect global concurrency limit, infra/limits.py)",
    )
    gpu_memory_gb: float | None = Field(
        default=None, ge=0, le=4096,
        description="GPU memory a worker's models may take at once, weights plus the activations of "
        "the model in use (models/lifecycle.py); default: free memory as torch.cuda.mem_get_info "
        "reports it, minus 1.5 GiB",
    )
    memory_policy: Literal["offload", "release"] = Field(
        default="offload",
        description="what makes room under gpu_memory_gb: 'offload' moves the least recently used "
        "unheld models to CPU memory, 'release' drops them (rebuilt from disk when needed again)",
    )


    @field_validator("retry_delay_seconds")
    @classmethod
    def _finite_delay(cls, v: float) -> float:
        if not v <= 3600:  # also refuses inf and nan: a retry must come back
            raise ValueError(f"retry_delay_seconds {v!r} must be a number of seconds from 0 to 3600")
        return v

    @field_validator("out")
    @classmethod
    def _out_is_a_uri(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or any(unicodedata.category(ch)[0] == "C" for ch in v)):
            raise ValueError(f"out {ascii(v)}: an empty path or one with control characters")
        return v


class RunnerConfig(Record):
    """The task runner: a thread pool in the flow's process (default), a Dask cluster (local,
    or a scheduler's address), or Ray (needs prefect-ray; GPUs requested per GPU task)."""

    kind: Literal["threads", "dask", "ray"] = "threads"
    address: str | None = Field(default=None, description="dask scheduler (tcp://host:8786) or ray address; none: a local cluster")
    workers: int | None = Field(default=None, ge=1, le=1024, description="local cluster: Dask workers, or Ray CPUs (default run.workers)")
    gpus_per_task: float = Field(default=1.0, gt=0, description="ray: GPUs reserved by each GPU task")


class ReviewConfig(Record):
    """Optional human review between the filter and publishing (tasks/views/review.py).

    The paper kept only the images people rated 4 or 5. `off`: no review; `file`: ratings
    come from a decisions file (JSON or CSV, sample id -> 1..5, as the report page exports
    it); `interactive`: the flow writes a review page and pauses until someone sends the
    ratings through the Prefect UI (or API). A kept sample rated below `min_rating` is
    dropped with reason `human`; a rating never brings back a dropped sample.
    """

    mode: Literal["off", "file", "interactive"] = "off"
    decisions: str | None = Field(
        default=None, description="URI of the decisions file (mode 'file'); relative: to the recipe's folder"
    )
    min_rating: int = Field(default=4, ge=1, le=5, description="lowest rating that keeps a sample")
    timeout_seconds: int = Field(
        default=3600, ge=1, description="how long an interactive review waits before the run fails"
    )

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        # YAML 1.1 reads an unquoted `mode: off` as false.
        return "off" if v is False else v

    @model_validator(mode="after")
    def _file_needs_decisions(self) -> "ReviewConfig":
        if self.mode == "file" and not self.decisions:
            raise ValueError("decisions: mode 'file' needs the URI of a decisions file (JSON or CSV)")
        return self


class BackgroundSet(Record):
    """Real background photos of one scene, as the paper's repaint starts from (a scene
    folder of photos; its name gives the scene words). Photos are URIs like a concept's,
    relative to the recipe; a pattern (`backgrounds/garden/*.jpg`) is expanded when the
    recipe is read."""

    scene: str = Field(description="the scene words captions and repaint prompts use, e.g. 'in a garden'")
    photos: list[str] = Field(min_length=1, description="URIs of the photos (patterns expanded on reading)")
    ground: dict[str, float] = Field(
        default_factory=dict,
        description="optional hints, photo file name -> the share of the photo's height (from the top) "
                    "where its ground begins; photos without one have it estimated (models/backgrounds.py)",
    )

    @field_validator("scene")
    @classmethod
    def _scene_is_text(cls, v: str) -> str:
        if not v.strip() or len(v) > 200 or any(unicodedata.category(ch)[0] == "C" for ch in v):
            raise ValueError(f"scene {v!r}: a scene is 1-200 printable characters")
        return v.strip()

    @field_validator("photos")
    @classmethod
    def _photo_uris(cls, v: list[str]) -> list[str]:
        return _check_photo_uris(v)

    @field_validator("ground")
    @classmethod
    def _ground_shares(cls, v: dict[str, float]) -> dict[str, float]:
        for name, share in v.items():
            if not 0.0 <= share < 1.0:
                raise ValueError(f"ground[{name!r}] = {share}: a share of the photo's height, 0 (top) to below 1")
        return v


class DatasetConfig(Record):
    """A dataset recipe: concepts, compositions, canvas, stage backends, run settings."""

    name: SafeId
    version: SafeId = "v1"
    license: str | None = Field(
        default=None, max_length=64,
        description="the dataset card's license (a Hugging Face license id, e.g. cc-by-4.0); none: 'other'",
    )
    seed: int = Field(default=0, ge=0)
    canvas: int = Field(default=1024, ge=64, le=4096, description="square canvas side (pixels)")
    max_iou: float = Field(default=0.15, ge=0, lt=1, description="planner: largest box overlap")
    concepts: list[Concept] = Field(min_length=2)
    compositions: list[Composition] = Field(min_length=1)
    backgrounds: list[BackgroundSet] = Field(
        default_factory=list,
        description="real background photos by scene; none: procedural scenes (models/repaint/repainter.py)",
    )
    stages: StagesConfig = StagesConfig()
    review: ReviewConfig = ReviewConfig()
    run: RunConfig = RunConfig()
    # Defaults for the compositions' targets (Composition.keep, max_samples; tasks/targets.py).
    keep: int | None = Field(default=None, ge=1, le=10_000, description="default kept images per composition")
    max_samples: int | None = Field(default=None, ge=1, le=100_000, description="default budget per composition")
    expected_yield: float = Field(
        default=0.5, gt=0, le=1, description="share of samples expected kept: sizes a target's first round"
    )
    near_duplicates: NearDuplicateConfig = NearDuplicateConfig()

    @field_validator("concepts")
    @classmethod
    def _unique_concepts(cls, v: list[Concept], info: ValidationInfo) -> list[Concept]:
        # Case-insensitively: CLIP's tokenizer lower-cases, so <Cat> and <cat> would train as
        # one token; and ids name files, which collide on case-insensitive disks.
        for attr in ("id", "token"):
            seen: dict[str, tuple[str, str]] = {}
            for c in v:
                key = getattr(c, attr)
                if key.lower() in seen:
                    other, given = seen[key.lower()]
                    same = "" if given == key else f" ({given!r} differs only in case)"
                    raise ValueError(f"concept {c.id!r}: {attr} {key!r} is already used by {other!r}{same}")
                seen[key.lower()] = (c.id, key)
        return v

    @model_validator(mode="after")
    def _compositions_known(self) -> "DatasetConfig":
        known = {c.id for c in self.concepts}
        seen: set[str] = set()
        for comp in self.compositions:
            # Case-insensitively: each composition is a folder, and some disks fold case.
            if comp.id.lower() in seen:
                raise ValueError(f"compositions: id {comp.id!r} is used twice (ids are compared ignoring case)")
            seen.add(comp.id.lower())
            unknown = [c for c in comp.concepts if c not in known]
            if unknown:
                raise ValueError(
                    f"composition {comp.id!r}: unknown concept ids {unknown}; known: {sorted(known)}"
                )
            # The scene goes into every caption: another concept's token there would be learnt
            # from images that do not show it (prompt sets refuse the same, tasks/evaluation/prompts.py).
            tokens = {c.id: c.token for c in self.concepts}
            for i, scene in enumerate(comp.scenes):
                if why := foreign_token(scene, comp.concepts, tokens):
                    raise ValueError(f"composition {comp.id!r}: scenes[{i}] {scene!r} {why}")
            # With background photos a composition's scenes pick among them: each must have photos.
            have = {b.scene for b in self.backgrounds}
            missing = [s for s in comp.scenes if self.backgrounds and s not in have]
            if missing:
                raise ValueError(f"composition {comp.id!r}: scenes {missing} have no background photos; "
                                 f"the recipe's backgrounds are {sorted(have)}")
        for i, bg in enumerate(self.backgrounds):
            if why := foreign_token(bg.scene, [], {c.id: c.token for c in self.concepts}):
                raise ValueError(f"backgrounds[{i}]: scene {bg.scene!r} {why}")
        return self

    def concept(self, concept_id: str) -> Concept:
        for c in self.concepts:
            if c.id == concept_id:
                return c
        raise KeyError(concept_id)

    @property
    def out(self) -> str:
        return self.run.out or f"data/{self.name}/{self.version}"
