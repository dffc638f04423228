"""Reading dataset recipes (YAML) into a validated DatasetConfig."""

from __future__ import annotations

import yaml
from pydantic import ValidationError

from gen4gen.infra.storage import read_bytes, resolve
from gen4gen.infra.records import DatasetConfig


class ConfigError(ValueError):
    """A recipe that cannot be used; the message names the file, the field and the value."""


def shipped(name: str) -> str:
    """The file:// URI of a recipe or prompt set shipped in the package (`configs/` in the
    repo, `gen4gen.configs` installed), e.g. shipped("eval/demo.yaml"); found from any
    working directory."""
    from importlib.resources import files

    return resolve(str(files("gen4gen.configs").joinpath(name)))


def load_config(uri: str, out: str | None = None) -> DatasetConfig:
    try:
        raw = yaml.safe_load(read_bytes(uri).decode("utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{uri}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{uri}: expected a mapping at the top level, got {type(raw).__name__}")
    _anchor_photos(raw, uri)
    try:
        config = DatasetConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{uri}: invalid recipe:\n{format_errors(err)}") from err
    if out:
        config = config.model_copy(update={"run": config.run.model_copy(update={"out": out})})
    return config


def format_errors(err: ValidationError) -> str:
    """One line per error: the field path, what was given, and why it is refused."""
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        given = e.get("input")
        shown = repr(given) if not isinstance(given, (dict, list)) else type(given).__name__
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"  {where} = {shown[:80]}: {msg}")
    return "\n".join(lines)


def _anchor_photos(raw: dict, config_uri: str) -> None:
    """Relative photo (and decisions file) paths are relative to the recipe's folder, not to where it is run."""
    base = resolve(config_uri).rsplit("/", 1)[0]

    def anchor(p):
        return f"{base}/{p}" if isinstance(p, str) and "://" not in p and not p.startswith("/") else p

    for concept in raw.get("concepts") or []:
        if isinstance(concept, dict) and isinstance(concept.get("photos"), list):
            concept["photos"] = [anchor(p) for p in concept["photos"]]
    review = raw.get("review")
    if isinstance(review, dict) and review.get("decisions"):
        review["decisions"] = anchor(review["decisions"])
