"""Preview: the segment stage on a folder of photos, to see the cut-outs before a long run.

`gen4gen segment PATH... --out DIR` runs `tasks/segment.py: segment_concept` (the stage's
own code, settings and mask cache, kept in `DIR/.cache/`) and the cut-out checks
(tasks/cutouts.py) on each photo, grouped into concepts by folder as `generate` would see
them (by the recipe's concepts with `--recipe`), and writes per photo:

- `DIR/<folder>/<stem>.png`: the mask at the photo's size, 8-bit (255 object, 0 background);
- `DIR/<folder>/<stem>-cutout.png`: the object on transparency (the soft mask as alpha);
- `DIR/<folder>/<stem>-photo.jpg`: a small copy of the photo for the sheet;
- `DIR/checks.csv`: `photo,flags,classes` (`<folder>/<stem>`, the failed checks' codes
  joined by `;`, what the class check saw: models/detect/checks.py, where NanoDet runs);
- `DIR/index.html`: the contact sheet (photo, mask, cut-out, flags with their details, and
  the class check's scores).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape
from PIL import Image

from gen4gen.infra.errors import BadInput
from gen4gen.infra.records import ClassCheckConfig, Concept, Cutout, DatasetConfig, StageConfig
from gen4gen.infra.storage import (decode_image, encode_png, join, read_input, read_mask, resolve, to_rgb_alpha,
                                   write_bytes)
from gen4gen.models.detect import checks as class_checks
from gen4gen.models.detect import weights as detect_weights
from gen4gen.tasks.intake.ingest import PHOTO_SUFFIXES, IngestError, category_word, read_concepts, safe_id
from gen4gen.tasks.segment import segment_concept

MAX_PHOTOS = 5000  # a preview is for looking at: more than this is a mistyped folder
THUMB_SIDE = 384


@dataclass
class Row:
    """One photo on the contact sheet."""

    photo: str  # `<folder>/<stem>`
    source: str  # the photo's path
    category: str
    thumb: str | None = None  # files relative to the sheet
    mask: str | None = None
    cutout: str | None = None
    coverage: float = 0.0
    flags: list[tuple[str, str]] = field(default_factory=list)  # (code, detail)
    classes: str = ""  # what the class check saw, in words

    @property
    def codes(self) -> str:
        return ";".join(code for code, _ in self.flags)


def find_photos(paths: list[str]) -> list[Path]:
    """The photos named: files as given, folders searched recursively (hidden ones skipped),
    sorted; a path that does not exist, or no photo at all, is a BadInput naming it."""
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in PHOTO_SUFFIXES
                            and not any(part.startswith(".") for part in f.relative_to(p).parts))
        else:
            raise BadInput(raw, "no such file or folder", code="missing")
        if len(found) > MAX_PHOTOS:
            raise BadInput(raw, f"more than {MAX_PHOTOS} photos: name the folders to look at", code="too_many")
    if not found:
        raise BadInput(", ".join(paths), f"no photos ({', '.join(sorted(PHOTO_SUFFIXES))})", code="missing")
    return list(dict.fromkeys(p.resolve() for p in found))


def concepts_for(photos: list[Path], config: DatasetConfig | None, roots: list[str]) -> list[Concept]:
    """The photos as `generate` would see them: the recipe's concepts (their categories) for
    the photos a recipe lists, else one concept per folder, its category from a concept
    layout `init` reads (DreamBooth's classes...) or from the folder's name."""
    by_recipe: dict[Path, Concept] = {}
    for c in config.concepts if config else []:
        for uri in c.photos:
            local = resolve(uri)
            if local.startswith("file://"):
                by_recipe[Path(local[len("file://"):]).resolve()] = c
    known: dict[Path, str] = {}
    for root in roots:
        if Path(root).is_dir():
            try:
                for fc in read_concepts(Path(root)).concepts:
                    known[Path(fc.folder).resolve()] = fc.category
            except IngestError:
                pass  # not a concept layout: folder names give the categories
    groups: dict[str, tuple[str, list[Path]]] = {}
    for p in photos:
        if p in by_recipe:
            c = by_recipe[p]
            groups.setdefault(f"recipe:{c.id}", (c.category, []))[1].append(p)
        else:
            category = known.get(p.parent) or category_word(p.parent.name) or "object"
            groups.setdefault(str(p.parent), (category, []))[1].append(p)
    out = []
    for i, (key, (category, files)) in enumerate(groups.items()):
        cid = safe_id(key.split(":", 1)[1] if key.startswith("recipe:") else Path(key).name) or f"photos-{i}"
        out.append(Concept(id=cid, category=category, token=f"<{cid[:62] or 'x'}>", photos=[str(f) for f in files]))
    return out


def preview(paths: list[str], out_dir: Path, stage: StageConfig, config: DatasetConfig | None = None) -> list[Row]:
    """Segment and check every photo under `paths`; write the files listed above."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out = resolve(str(out_dir))
    photos = find_photos(paths)
    rows: list[Row] = []
    classes = config.stages.filter.classes if config else ClassCheckConfig()
    for concept in concepts_for(photos, config, paths):
        for photo, cut in zip(concept.photos, segment_concept(concept, out, stage, classes=classes)):
            row = _write(Path(photo), cut, concept.category, out, out_dir)
            row.classes = class_words(cut, concept.category, classes)
            rows.append(row)
    rows.sort(key=lambda r: r.photo)
    with open(out_dir / "checks.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["photo", "flags", "classes"])
        writer.writerows([r.photo, r.codes, r.classes] for r in rows)
    (out_dir / "index.html").write_text(contact_sheet(rows, stage), encoding="utf-8")
    return rows


def class_words(cut: Cutout, category: str, classes: ClassCheckConfig) -> str:
    """The class check's view of a cut-out in a few words (its scores, or why it has none)."""
    m = cut.measures
    if not cut.usable:
        return ""
    if detect_weights.in_use(classes.detector) is None:
        return f"not checked: no detector (`{detect_weights.FETCH_COMMAND}`)" if classes.detector == "auto" \
            else "not checked: the class checks are off"
    mapped = class_checks.coco_class(category)
    if mapped.coco is None:
        return f"not checked: {category} has no COCO class"
    other = class_checks.COCO[int(m["class_other_id"])] if m.get("class_other_id", -1) >= 0 else "none"
    return (f"{mapped.coco} {m.get('class_own', 0.0):.2f}; best other {other} {m.get('class_other', 0.0):.2f}; "
            f"person {m.get('class_person', 0.0):.2f}")


def _write(photo: Path, cut: Cutout, category: str, out: str, out_dir: Path) -> Row:
    name = f"{photo.parent.name}/{photo.stem}"
    row = Row(photo=name, source=str(photo), category=category, coverage=cut.coverage)
    if cut.error is not None:
        row.flags = [(cut.error.code, cut.error.detail)]
        return row
    row.flags = [(f.code, f.detail) for f in cut.flags]
    try:
        rgb = to_rgb_alpha(decode_image(read_input(str(photo)), str(photo)))[0]
    except BadInput as err:
        row.flags.append((err.code, str(err)))
        return row
    soft = read_mask(join(out, cut.mask))
    binary = np.where(soft >= 0.5, 255, 0).astype(np.uint8)
    rgba = np.dstack([rgb, np.round(soft * 255).astype(np.uint8)])
    thumb = Image.fromarray(rgb)
    thumb.thumbnail((THUMB_SIDE, THUMB_SIDE))
    jpeg = io.BytesIO()
    thumb.save(jpeg, "JPEG", quality=85)
    row.mask, row.cutout, row.thumb = f"{name}.png", f"{name}-cutout.png", f"{name}-photo.jpg"
    for rel, data in ((row.mask, encode_png(binary)), (row.cutout, encode_png(rgba)), (row.thumb, jpeg.getvalue())):
        write_bytes(resolve(str(out_dir / rel)), data)
    return row


_TEMPLATES = Environment(loader=PackageLoader("gen4gen.tasks.views", "templates"), autoescape=select_autoescape(["j2"]))


def contact_sheet(rows: list[Row], stage: StageConfig) -> str:
    """The contact sheet's HTML, from its template (autoescaped: names come from disk)."""
    flagged = sum(1 for r in rows if r.flags)
    return _TEMPLATES.get_template("contact_sheet.html.j2").render(
        rows=rows, backend=stage.backend, total=len(rows), flagged=flagged,
    )
