"""Reading dataset recipes (YAML) into a validated DatasetConfig.

A recipe is data from anyone, so it is read with limits (README "What survives what"): at
most MAX_RECIPE_BYTES, UTF-8, one document, no key given twice in a mapping, and aliases
only while the document they expand to stays under MAX_YAML_NODES nodes and MAX_YAML_DEPTH
levels (a "billion laughs" recipe is refused before it is built, a circular alias too).
"""

from __future__ import annotations

import os

import yaml
from pydantic import ValidationError

from gen4gen.infra.errors import BadInput
from gen4gen.infra.records import DatasetConfig
from gen4gen.infra.storage import glob, read_bytes, resolve

MAX_RECIPE_BYTES = int(os.environ.get("GEN4GEN_MAX_RECIPE_BYTES", 2**20))  # 1 MiB
MAX_YAML_NODES = 100_000  # nodes of the document with every alias expanded
MAX_YAML_DEPTH = 64  # nesting levels; a recipe needs 6


class ConfigError(ValueError):
    """A recipe that cannot be used; the message names the file, the field and the value."""


def shipped(name: str) -> str:
    """The file:// URI of a recipe or prompt set shipped in the package (`configs/` in the
    repo, `gen4gen.configs` installed), e.g. shipped("eval/demo.yaml"); found from any
    working directory."""
    from importlib.resources import files

    return resolve(str(files("gen4gen.configs").joinpath(name)))


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader (no Python objects) that also refuses a key given twice: YAML
    keeps the last silently, so a second `concepts:` would replace the first unseen."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue  # `<<: *base` may be overridden by design
                key = self.construct_object(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} is given twice (first on line {seen[key] + 1})", key_node.start_mark
                    )
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _check_expansion(root: yaml.Node, name: str) -> None:
    """Count the nodes the document expands to (an alias counts as the whole subtree it
    names) and its depth, without building it; refuse a cycle."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node)
        if done:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in children)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            if size[key] > MAX_YAML_NODES:
                raise ConfigError(f"{name}: the YAML expands to over {MAX_YAML_NODES:,} nodes through its aliases; refused")
            if depth[key] > MAX_YAML_DEPTH:
                raise ConfigError(f"{name}: the YAML nests over {MAX_YAML_DEPTH} levels deep; refused")
            continue
        if key in size:
            continue
        if key in on_path:
            line = node.start_mark.line + 1 if node.start_mark else "?"
            raise ConfigError(f"{name}: line {line}: a circular YAML alias (a node that contains itself)")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def parse_yaml(data: bytes, name: str):
    """The YAML document in `data`, read with the limits above; ConfigError naming `name`."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{name}: not UTF-8 text (byte {err.start}); save the recipe as UTF-8") from err
    loader = _Loader(text)
    loader.name = name  # error marks name the file, not "<unicode string>"
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, name)
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        raise ConfigError(f"{name}: not valid YAML: {err}") from err
    except RecursionError as err:
        raise ConfigError(f"{name}: the YAML nests too deeply to read; refused") from err
    finally:
        loader.dispose()


def load_config(uri: str, out: str | None = None) -> DatasetConfig:
    raw = parse_yaml(read_bytes(uri, limit=MAX_RECIPE_BYTES), uri)
    if not isinstance(raw, dict):
        raise ConfigError(f"{uri}: expected a mapping at the top level, got {type(raw).__name__}")
    _anchor_photos(raw, uri)
    _expand_backgrounds(raw, uri)
    try:
        config = DatasetConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{uri}: invalid recipe:\n{format_errors(err)}") from err
    if out:
        config = config.model_copy(update={"run": config.run.model_copy(update={"out": out})})
    return config


def validate(raw: dict, name: str) -> DatasetConfig:
    """A recipe's raw mapping validated as a whole (e.g. after command-line overrides)."""
    try:
        return DatasetConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{name}: invalid recipe:\n{format_errors(err)}") from err


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


MAX_BACKGROUNDS = 10_000  # photos in one recipe, patterns expanded
PATTERN = "*?["


def _expand_backgrounds(raw: dict, name: str) -> None:
    """Photo patterns (`backgrounds/garden/*.jpg`, in backgrounds and concepts) -> the files
    they match, sorted, so the plan and its keys see files; a pattern that matches nothing is
    the recipe's error (exit 2 before any work), not an empty scene."""
    total = 0
    for field in ("backgrounds", "concepts"):
        entries = raw.get(field)
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            if not isinstance(entry, dict) or not isinstance(entry.get("photos"), list):
                continue
            found: list = []
            for p in entry["photos"]:
                if isinstance(p, str) and any(ch in p.split("://", 1)[-1] for ch in PATTERN):
                    try:
                        matched = glob(p)
                    except BadInput as err:
                        raise ConfigError(f"{name}: {field}[{i}].photos: {err}") from err
                    if not matched:
                        raise ConfigError(f"{name}: {field}[{i}].photos: {p!r} matches no image file")
                    found += matched
                else:
                    found.append(p)
            total += len(found)
            if total > MAX_BACKGROUNDS:
                raise ConfigError(f"{name}: {field}: over {MAX_BACKGROUNDS:,} photos in the recipe; refused")
            entry["photos"] = list(dict.fromkeys(found))


def _anchor_photos(raw: dict, config_uri: str) -> None:
    """Relative photo, decisions file and isnet weights paths are relative to the recipe's
    folder, not to where it is run."""
    base = resolve(config_uri).rsplit("/", 1)[0]

    def anchor(p):
        return f"{base}/{p}" if isinstance(p, str) and "://" not in p and not p.startswith("/") else p

    for entry in (raw.get("concepts") or []) + (raw.get("backgrounds") or []):
        if isinstance(entry, dict) and isinstance(entry.get("photos"), list):
            entry["photos"] = [anchor(p) for p in entry["photos"]]
    review = raw.get("review")
    if isinstance(review, dict) and review.get("decisions"):
        review["decisions"] = anchor(review["decisions"])
    # The isnet segmenter's own ONNX file (`weights`) is a local file, never a hub id: anchored
    # too (for a recipe on local disk), so the recipe runs the same from any folder. Other
    # backends' model options may name a hub repository and are left as given.
    stages = raw.get("stages")
    segment = stages.get("segment") if isinstance(stages, dict) else None
    if not (isinstance(segment, dict) and segment.get("backend") == "isnet"):
        return
    options = segment.get("options")
    path = options.get("weights") if isinstance(options, dict) else None
    # `anchor` gives a URI; onnxruntime opens a plain path.
    if isinstance(path, str) and path and not path.startswith("~") and base.startswith("file://"):
        options["weights"] = anchor(path).removeprefix("file://")


__all__ = ["BadInput", "ConfigError", "load_config", "parse_yaml", "shipped", "validate"]
