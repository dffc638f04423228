"""`gen4gen init PHOTOS_DIR`: a recipe from a folder of the user's concept photos.

The layouts it reads are in tasks/intake/ingest.py (DreamBooth, CustomConcept101, plain
`<category>/<concept>/*.jpg`). Photo paths are written relative to the recipe, so the
recipe and the photos move together; compositions come from the offline co-occurrence
table (`gen4gen associate` on the written recipe proposes more, from an LLM if configured).
The recipe is validated as `generate` reads it before it replaces anything.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import yaml

from gen4gen.flows.associate import composition_id

DEFAULT_SAMPLES = 8


def build_recipe(found, recipe_path: Path, name: str, canvas: int, most: int, samples: int, scenes=()):
    """The recipe's mapping, and each composition's reason."""
    from gen4gen.tasks.intake.ingest import propose

    base = recipe_path.parent.resolve()
    concepts = [
        {
            "id": c.id, "category": c.category, "token": c.token,
            # POSIX separators: the recipe reads the same on every system.
            "photos": [Path(os.path.relpath(p.resolve(), base)).as_posix() for p in c.photos],
        }
        for c in found.concepts
    ]
    proposals = propose([(c.id, c.category) for c in found.concepts], most)
    used: set[str] = set()
    compositions = []
    for i, p in enumerate(proposals, 1):
        cid = composition_id(p.concepts, used, i)
        used.add(cid)
        compositions.append({"id": cid, "concepts": p.concepts, "samples": samples})
    backgrounds = [
        {"scene": sc.scene, "photos": [Path(os.path.relpath(p.resolve(), base)).as_posix() for p in sc.photos]}
        for sc in scenes
    ]
    return {
        "name": name, "version": "v1", "canvas": canvas, "max_iou": 0.05,
        "concepts": concepts, "compositions": compositions, "backgrounds": backgrounds,
        "stages": {
            "plan": {"backend": "offline"}, "segment": {"backend": "auto"},
            "repaint": {"backend": "offline"}, "caption": {"backend": "template"},
            "filter": {"max_occlusion": 0.4, "min_visible_area": 0.15},
        },
    }, [p.why for p in proposals]


def render(recipe: dict, found, why: list[str]) -> str:
    """The recipe as YAML: one line per concept and composition, reasons as comments."""
    def dump(v) -> str:  # one line; a lone scalar comes with an end-of-document '...' to drop
        return yaml.safe_dump(v, default_flow_style=True, width=10_000, sort_keys=False).removesuffix("\n...\n").strip()

    lines = [
        f"# Written by gen4gen init from {found.source} ({found.layout} layout).",
        "# Check the category words (detectors and captions use them) and the compositions.",
    ]
    for key in ("name", "version", "canvas", "max_iou"):
        lines.append(f"{key}: {dump(recipe[key])}")
    lines.append("concepts:")
    lines += [f"  - {dump(c)}" for c in recipe["concepts"]]
    lines.append("compositions:  # from the offline co-occurrence table (gen4gen associate proposes more)")
    for comp, reason in zip(recipe["compositions"], why):
        lines += [f"  # {reason}", f"  - {dump(comp)}"]
    if recipe["backgrounds"]:
        lines.append("backgrounds:  # real photos by scene, the folder's name giving the scene words")
        lines += [f"  - {dump(b)}" for b in recipe["backgrounds"]]
    lines.append("stages:")
    lines += [f"  {k}: {dump(v)}" for k, v in recipe["stages"].items()]
    return "\n".join(lines) + "\n"


def init_command(photos: str, out: str, name: str | None, canvas: int, most: int | None,
                 samples: int, force: bool, backgrounds: str | None = None) -> int:
    """Exit 0 with the recipe written, 2 when the folder, a file in it or an option cannot be used."""
    from gen4gen.infra.config import ConfigError, load_config
    from gen4gen.infra.errors import BadInput
    from gen4gen.tasks.intake.ingest import BACKGROUNDS_DIR, IngestError, read_backgrounds, read_concepts, safe_id

    recipe_path = Path(out)
    tmp = recipe_path.with_name(f".{recipe_path.name}.tmp")
    try:
        if recipe_path.exists() and not force:
            raise IngestError(f"{recipe_path}: exists already; pass --force to replace it")
        if not 64 <= canvas <= 4096:
            raise IngestError(f"--canvas {canvas}: must be 64 to 4096 pixels")
        if samples < 1 or (most is not None and most < 1):
            raise IngestError("--samples and --compositions must be 1 or more")
        root = Path(photos)
        found = read_concepts(root)
        if name is not None and safe_id(name) != name:
            raise IngestError(f"--name {ascii(name)}: not a safe path segment (letters, digits, '.', '_', '-')")
        dataset = name or safe_id(root.resolve().name) or "concepts"
        # Default: enough for pairs to cover every concept, at least 3.
        most = most or max(3, math.ceil(len(found.concepts) / 2))
        # Background photos: --backgrounds DIR, else a backgrounds/ folder beside the concepts.
        beside = root / BACKGROUNDS_DIR
        scenes = read_backgrounds(Path(backgrounds)) if backgrounds else read_backgrounds(beside) if beside.is_dir() else []
        recipe, why = build_recipe(found, recipe_path, dataset, canvas, most, samples, scenes)
        recipe_path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(render(recipe, found, why), encoding="utf-8")
        config = load_config(str(tmp))  # read back as `generate` reads it: what is written runs
        os.replace(tmp, recipe_path)
    except (IngestError, ConfigError, BadInput, ValueError, OSError) as err:
        tmp.unlink(missing_ok=True)
        text = str(err) if not isinstance(err, OSError) or not err.filename else f"{err.filename}: {err.strerror}"
        text = text.replace(str(tmp), str(recipe_path))  # name the file the user asked for
        print(f"error: {text}", file=sys.stderr)
        return 2
    for note in found.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"{len(config.concepts)} concepts ({found.layout} layout), {len(config.compositions)} compositions, "
          f"{len(config.backgrounds)} background scenes written to {recipe_path}", file=sys.stderr)
    if not config.backgrounds:
        print(f"note: no background photos ({root / BACKGROUNDS_DIR}/<scene>/*.jpg or --backgrounds DIR): the "
              "samples get procedural scenes; real photos make finals a person would keep", file=sys.stderr)
    print(f"look at the cut-outs first: gen4gen segment {photos} --recipe {recipe_path} --out cutouts", file=sys.stderr)
    print(f"then run: gen4gen generate {recipe_path}", file=sys.stderr)
    print(recipe_path)
    return 0
