"""Evaluation prompt sets: held-out prompts per composition, read from YAML and validated.

A prompt set names its concepts (id, category, token, source photos), either by pointing
at the dataset recipe they come from (`recipe:`, relative to the prompt file) or inline
(`concepts:`), and lists prompts: for each, the composition, the concept ids it shows and
the prompt text with their tokens. The paper's shape: one held-out prompt per composition,
6 samples each. Generation settings and the scoring models' options (`vision:`, passed to
models/score/score.py) belong to the set, so a results.json is reproducible from the set alone;
the flow may override `vision` for a run.

The concepts' source photos are what CP-CLIP compares crops with. They come from the
prompt set (that is, from the recipe that built the dataset) rather than from the dataset:
a published dataset lists the photos only per sample, and an evaluation may use other
(held-out) photos of the same objects.
"""

from __future__ import annotations

import posixpath
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from gen4gen.infra.config import ConfigError, _anchor_photos, format_errors, load_config
from gen4gen.infra.errors import BadInput
from gen4gen.infra.storage import read_bytes, resolve, sha256
from gen4gen.infra.records import MAX_CONCEPTS, MIN_CONCEPTS, Concept, Record, SafeId, foreign_token



class PromptSetError(ValueError):
    """A prompt set that cannot be used; the message names the file, the field and the value."""


class EvalPrompt(Record):
    """One held-out prompt: the composition it tests, its concepts, the text with their tokens."""

    composition: SafeId
    concepts: list[SafeId]
    prompt: str = Field(min_length=1)
    samples: int | None = Field(default=None, ge=1, le=1000, description="images of this prompt; default: the set's")

    @model_validator(mode="after")
    def _distinct(self) -> "EvalPrompt":
        c = self.concepts
        if len(c) != len(set(c)):
            raise ValueError(f"concepts {c} name a concept twice")
        if not MIN_CONCEPTS <= len(c) <= MAX_CONCEPTS:
            raise ValueError(f"concepts {c}: a composition holds {MIN_CONCEPTS} to {MAX_CONCEPTS} concepts, not {len(c)}")
        return self


class GenerationConfig(Record):
    """How the images are sampled (Custom Diffusion's own inference: guidance 6)."""

    steps: int = Field(default=50, ge=1, le=1000)
    guidance: float = Field(default=6.0, ge=0)
    size: int | None = Field(default=None, ge=8, le=2048, description="image side; default: the base model's")
    batch: int = Field(default=6, ge=1, le=256, description="images per pipeline call")
    negative_prompt: str | None = None


class PromptSet(Record):
    """A held-out prompt set (see the module text)."""

    name: SafeId
    recipe: str | None = Field(default=None, description="the dataset recipe the concepts were read from")
    concepts: list[Concept] = Field(min_length=1)
    samples: int = Field(default=6, ge=1, le=1000, description="images per prompt (the paper: 6)")
    seed: int = Field(default=0, ge=0)
    generation: GenerationConfig = GenerationConfig()
    vision: dict[str, Any] = Field(default_factory=dict, description="options for models/score/score.py's models")
    prompts: list[EvalPrompt] = Field(min_length=1)

    @model_validator(mode="after")
    def _prompts_match_concepts(self) -> "PromptSet":
        by_id = {c.id: c for c in self.concepts}
        seen: dict[tuple[str, str], int] = {}
        comp_concepts: dict[str, list[str]] = {}
        for i, p in enumerate(self.prompts):
            where = f"prompts[{i}] ({p.composition})"
            unknown = [c for c in p.concepts if c not in by_id]
            if unknown:
                raise ValueError(f"{where}: unknown concept ids {unknown}; known: {sorted(by_id)}")
            missing = [by_id[c].token for c in p.concepts if by_id[c].token not in p.prompt]
            if missing:
                raise ValueError(f"{where}: prompt {p.prompt!r} lacks the token(s) {missing} of its concepts")
            if why := foreign_token(p.prompt, p.concepts, {c.id: c.token for c in self.concepts}):
                raise ValueError(f"{where}: prompt {why}")
            if comp_concepts.setdefault(p.composition, sorted(p.concepts)) != sorted(p.concepts):
                raise ValueError(
                    f"{where}: composition {p.composition!r} has concepts {sorted(p.concepts)} here "
                    f"but {comp_concepts[p.composition]} in an earlier prompt"
                )
            key = (p.composition, p.prompt)
            if key in seen:
                raise ValueError(f"{where}: the same prompt is listed again (first at prompts[{seen[key]}])")
            seen[key] = i
        return self

    def samples_of(self, prompt: EvalPrompt) -> int:
        return prompt.samples or self.samples

    def concept(self, concept_id: str) -> Concept:
        return next(c for c in self.concepts if c.id == concept_id)


def load_prompt_set(uri: str) -> PromptSet:
    """Read and validate a prompt set (YAML path or URI); concepts from `recipe:` are read
    from that recipe, relative photo paths are taken relative to the file naming them."""
    try:
        text = read_bytes(uri).decode("utf-8")
    except BadInput as err:
        raise PromptSetError(f"prompt set {uri}: {err.reason}") from err
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise PromptSetError(f"{uri}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise PromptSetError(f"{uri}: expected a mapping at the top level, got {type(raw).__name__}")
    recipe = raw.get("recipe")
    if recipe is not None:
        if raw.get("concepts"):
            raise PromptSetError(f"{uri}: give the concepts either by `recipe` or inline under `concepts`, not both")
        if not isinstance(recipe, str):
            raise PromptSetError(f"{uri}: recipe = {recipe!r}: expected the path or URI of a dataset recipe")
        base = resolve(uri).rsplit("/", 1)[0]
        recipe_uri = recipe if "://" in recipe or recipe.startswith("/") else _under(base, recipe)
        try:
            config = load_config(recipe_uri)
        except (ConfigError, BadInput) as err:
            raise PromptSetError(f"{uri}: recipe {recipe!r}: {err}") from err
        raw["recipe"] = resolve(recipe_uri)
        raw["concepts"] = [c.model_dump() for c in config.concepts]
    else:
        _anchor_photos(raw, uri)
    try:
        return PromptSet.model_validate(raw)
    except ValidationError as err:
        # Cross-field checks name their place themselves ('prompts[0] (cat-mug): ...').
        text = format_errors(err).replace("  (top level) = dict: ", "  ")
        raise PromptSetError(f"{uri}: invalid prompt set:\n{text}") from err


def _under(base: str, rel: str) -> str:
    """`rel` below the URI `base`, with '..' folded ('configs/eval/../demo.yaml' -> 'configs/demo.yaml')."""
    scheme, _, path = base.partition("://")
    return f"{scheme}://{posixpath.normpath(posixpath.join(path, rel))}"


def prompt_set_sha256(prompts: PromptSet) -> str:
    """A fingerprint of everything that decides the images and scores."""
    return sha256(prompts.model_dump_json().encode())


def check_against(prompts: PromptSet, concepts: dict[str, str]) -> None:
    """Every concept the prompts use must be learnt by the checkpoint, under the same
    token (`concepts`: the checkpoint's concept id -> token)."""
    used = sorted({c for p in prompts.prompts for c in p.concepts})
    absent = [c for c in used if c not in concepts]
    if absent:
        raise PromptSetError(
            f"prompt set {prompts.name!r}: concept(s) {absent} are not in the checkpoint (it has {sorted(concepts)})"
        )
    for c in used:
        if concepts[c] != prompts.concept(c).token:
            raise PromptSetError(
                f"prompt set {prompts.name!r}: concept {c!r} has token {prompts.concept(c).token!r} "
                f"but the checkpoint learnt it as {concepts[c]!r}"
            )
