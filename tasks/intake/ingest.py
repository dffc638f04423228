"""Reading a folder of the user's concept photos, and proposing compositions offline.

`read_concepts(root)` recognises three layouts (README "Bring your own concepts"):

- DreamBooth: `<subject>/*.jpg` beside `prompts_and_classes.txt`, whose "Classes" section
  lists `subject_name,class` lines (`dog2,dog`); ROOT may also be the folder above `dataset/`.
- CustomConcept101: `dataset.json` or `concepts_list.json` (a list of objects with
  `instance_data_dir` and `class_prompt`, paths relative to the JSON's folder), or
  `concepts.csv` (`folder,category` rows, an optional header).
- plain: `<category>/<concept>/*.jpg`.

`propose(pool, most, taken)` picks compositions of 2 or 3 concepts from a small table of
settings in which categories are usually seen together, with no model and no network:
the same pool always gives the same proposals.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from gen4gen.infra.errors import BadInput
from gen4gen.infra.records import MIN_CONCEPTS
from gen4gen.infra.storage import MAX_PHOTO_BYTES, read_bytes

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
DREAMBOOTH_FILE = "prompts_and_classes.txt"
CC101_JSON = ("dataset.json", "concepts_list.json")
CC101_CSV = "concepts.csv"
MAX_TEXT_BYTES = 4 * 2**20  # a concept list is small; a huge one is not a concept list


class IngestError(ValueError):
    """A photo folder that cannot be read as concepts; the message names the file."""


@dataclass
class FoundConcept:
    id: str
    category: str
    token: str
    photos: list[Path]
    folder: Path


@dataclass
class Found:
    layout: str  # "dreambooth", "customconcept101" or "plain"
    source: Path  # the file or folder the concepts were read from
    concepts: list[FoundConcept]
    notes: list[str] = field(default_factory=list)  # what was skipped, for the user


# --------------------------------------------------------------------------- names


def safe_id(name: str) -> str:
    """A safe path segment (records._SAFE_ID) from a folder name; '' when nothing is left."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", text)
    text = re.sub(r"\.{2,}", ".", text)
    text = re.sub(r"^[^A-Za-z0-9]+", "", text)[:64]
    return text.rstrip(".-_") or ""


def category_word(text: str) -> str:
    """A category from a class name or folder name: 'stuffed_animal' -> 'stuffed animal'."""
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    return " ".join(text.replace("_", " ").split())[:64].strip()


def _unique(base: str, used: set[str], limit: int) -> str:
    """`base`, or `base-2`, `base-3`... : the first not in `used` ignoring case."""
    candidate, n = base[:limit], 1
    while candidate.lower() in used:
        n += 1
        suffix = f"-{n}"
        candidate = base[: limit - len(suffix)] + suffix
    used.add(candidate.lower())
    return candidate


def _name(raw: list[tuple[str, str, list[Path], Path]]) -> list[FoundConcept]:
    """Ids and tokens for (name, category, photos, folder) rows, unique case-insensitively
    (the recipe's own rule: CLIP lower-cases, and some disks fold case)."""
    ids: set[str] = set()
    tokens: set[str] = set()
    out = []
    for i, (name, category, photos, folder) in enumerate(raw, 1):
        cid = _unique(safe_id(name) or safe_id(category) or f"concept-{i}", ids, 64)
        # A token allows letters, digits, '_' and '-' and 62 of them between the brackets.
        stem = re.sub(r"[^A-Za-z0-9_-]", "-", cid).strip("-_") or f"concept-{i}"
        token = "<" + _unique(stem, tokens, 62) + ">"
        out.append(FoundConcept(cid, category, token, photos, folder))
    return out


# --------------------------------------------------------------------------- files


def _text(path: Path) -> str:
    # Through storage's one reader: a regular file only, at most the limit read, in time (a
    # concept list that is /dev/zero or a FIFO is refused, not read without end).
    try:
        data = read_bytes(str(path), limit=MAX_TEXT_BYTES)
    except BadInput as err:
        if err.code == "too_large":
            raise IngestError(f"{path}: over {MAX_TEXT_BYTES // 2**20} MiB, not a concept list") from err
        raise IngestError(f"{path}: cannot be read ({err.reason})") from err
    except OSError as err:
        raise IngestError(f"{path}: cannot be read ({err.strerror or err})") from err
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise IngestError(f"{path}: not UTF-8 text (byte {err.start})") from err


def photos_in(folder: Path) -> list[Path]:
    """The folder's image files (not recursive), sorted, each checked to open as an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
    except OSError as err:
        raise IngestError(f"{folder}: cannot be listed ({err.strerror or err})") from err
    if not files:
        raise IngestError(f"{folder}: no photos ({', '.join(sorted(PHOTO_SUFFIXES))})")
    for p in files:
        size = p.stat().st_size
        if size > MAX_PHOTO_BYTES:  # refused before any byte is read, as the run would
            raise IngestError(f"{p}: {size:,} bytes is over the {MAX_PHOTO_BYTES:,} byte limit of a photo")
        try:
            with Image.open(p) as im:
                im.verify()  # reads the headers and structure, not the pixels: fast
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
            raise IngestError(f"{p}: not a readable image ({err})") from err
    return files


def _inside(root: Path, folder: Path, named_in: Path) -> Path:
    resolved = folder.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise IngestError(f"{named_in}: names {folder}, which lies outside {root}")
    if not resolved.is_dir():
        raise IngestError(f"{named_in}: names {folder}, which is not a folder")
    return folder


BACKGROUNDS_DIR = "backgrounds"  # beside the concept folders: `backgrounds/<scene>/*.jpg`


def _dirs(folder: Path) -> list[Path]:
    # The background photos' folder is not a category of concepts.
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and p.name != BACKGROUNDS_DIR)


@dataclass
class FoundScene:
    scene: str  # the scene words, from the folder's name
    folder: Path
    photos: list[Path]


def read_backgrounds(root: Path) -> list[FoundScene]:
    """Background photos by scene: `root/<scene folder>/*.jpg`, the folder's name giving the
    scene words (models/backgrounds.py: scene_words); each photo checked as a concept's is."""
    from gen4gen.models.backgrounds import scene_words

    if not root.is_dir():
        raise IngestError(f"{root}: not a folder" if root.exists() else f"{root}: not found")
    scenes = [FoundScene(scene_words(category_word(d.name)), d, photos_in(d)) for d in _dirs(root)]
    if not scenes:
        raise IngestError(f"{root}: no scene folders (expected {root}/<scene>/*.jpg, e.g. garden/, living_room/)")
    words = [s.scene for s in scenes]
    twice = sorted({w for w in words if words.count(w) > 1})
    if twice:
        raise IngestError(f"{root}: two folders give the scene {twice[0]!r}; rename one")
    return scenes


# --------------------------------------------------------------------------- layouts


def read_dreambooth(classes_file: Path) -> Found:
    """`prompts_and_classes.txt`'s "Classes" section, each subject a folder beside it."""
    root = classes_file.parent
    lines = _text(classes_file).splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().lower() == "classes"), None)
    if start is None:
        raise IngestError(f"{classes_file}: no 'Classes' section (a line 'Classes', then subject_name,class lines)")
    raw, notes = [], []
    for number, line in enumerate(lines[start + 1 :], start + 2):
        text = line.strip()
        if not text:
            if raw:
                break  # the blank line before "Prompts" ends the section
            continue
        if text.lower().replace(" ", "") == "subject_name,class":
            continue
        if text.lower().startswith("prompt"):
            break
        subject, sep, cls = (part.strip() for part in text.partition(","))
        if not sep or not subject or not category_word(cls):
            raise IngestError(f"{classes_file}: line {number}: {text[:80]!r} is not 'subject_name,class'")
        folder = _inside(root, root / subject, classes_file)
        raw.append((subject, category_word(cls), photos_in(folder), folder))
    listed = {name for name, *_ in raw}
    for extra in _dirs(root):
        if extra.name not in listed:
            notes.append(f"{extra}: not listed in {classes_file.name}; left out")
    return Found("dreambooth", classes_file, _name(raw), notes)


def read_cc101_json(path: Path) -> Found:
    """A list of {"instance_data_dir", "class_prompt", ...} objects (CustomConcept101's
    dataset.json, diffusers' concepts_list.json); other keys are ignored."""
    try:
        entries = json.loads(_text(path))
    except json.JSONDecodeError as err:
        raise IngestError(f"{path}: not valid JSON: {err}") from err
    if not isinstance(entries, list) or not entries:
        raise IngestError(f"{path}: expected a non-empty JSON list of concepts")
    raw = []
    for i, entry in enumerate(entries):
        where = f"{path}: entry {i}"
        if not isinstance(entry, dict):
            raise IngestError(f"{where}: expected an object with instance_data_dir and class_prompt")
        folder, cls = entry.get("instance_data_dir"), entry.get("class_prompt")
        if not isinstance(folder, str) or not folder.strip():
            raise IngestError(f"{where}: no instance_data_dir (the concept's photo folder)")
        if not isinstance(cls, str) or not category_word(cls):
            raise IngestError(f"{where}: no class_prompt (the concept's category word)")
        folder_path = _inside(path.parent, path.parent / folder.strip(), path)
        raw.append((folder_path.name, category_word(cls), photos_in(folder_path), folder_path))
    return Found("customconcept101", path, _name(raw))


def read_cc101_csv(path: Path) -> Found:
    """`folder,category` rows (folders relative to the CSV), an optional header row."""
    raw = []
    rows = list(csv.reader(io.StringIO(_text(path))))
    for number, row in enumerate(rows, 1):
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if number == 1 and [c.lower() for c in cells[:2]] == ["folder", "category"]:
            continue
        if len(cells) < 2 or not cells[0] or not category_word(cells[1]):
            raise IngestError(f"{path}: line {number}: expected 'folder,category', got {','.join(cells)[:80]!r}")
        folder = _inside(path.parent, path.parent / cells[0], path)
        raw.append((folder.name, category_word(cells[1]), photos_in(folder), folder))
    if not raw:
        raise IngestError(f"{path}: no folder,category rows")
    return Found("customconcept101", path, _name(raw))


def read_plain(root: Path) -> Found:
    """`<category>/<concept>/*.jpg`: every folder under a category folder is a concept."""
    raw = []
    for cat_dir in _dirs(root):
        loose = [p for p in cat_dir.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES]
        if loose:
            raise IngestError(
                f"{loose[0]}: a photo directly in the category folder {cat_dir.name!r}; "
                "expected <category>/<concept>/*.jpg (or a DreamBooth or CustomConcept101 layout)"
            )
        if not category_word(cat_dir.name):
            raise IngestError(f"{cat_dir}: the folder name makes no category word")
        for concept_dir in _dirs(cat_dir):
            raw.append((concept_dir.name, category_word(cat_dir.name), photos_in(concept_dir), concept_dir))
    return Found("plain", root, _name(raw))


def read_concepts(root: Path) -> Found:
    """The concepts in `root`, from the first layout that matches; IngestError otherwise."""
    if not root.is_dir():
        raise IngestError(f"{root}: not a folder" if root.exists() else f"{root}: not found")
    for candidate in (root / DREAMBOOTH_FILE, root / "dataset" / DREAMBOOTH_FILE):
        if candidate.is_file():
            found = read_dreambooth(candidate)
            break
    else:
        json_file = next((root / n for n in CC101_JSON if (root / n).is_file()), None)
        if json_file is not None:
            found = read_cc101_json(json_file)
        elif (root / CC101_CSV).is_file():
            found = read_cc101_csv(root / CC101_CSV)
        elif _dirs(root):
            found = read_plain(root)
        else:
            raise IngestError(
                f"{root}: no concepts found; expected {DREAMBOOTH_FILE} (DreamBooth), "
                f"{' or '.join(CC101_JSON)} or {CC101_CSV} (CustomConcept101), "
                "or <category>/<concept>/*.jpg folders"
            )
    if len(found.concepts) < MIN_CONCEPTS:
        raise IngestError(
            f"{found.source}: {len(found.concepts)} concept(s) found; a recipe needs at least {MIN_CONCEPTS}"
        )
    return found


# --------------------------------------------------------------------------- association

# Settings and the categories usually seen in them: two categories that share settings are
# likely in one photo (the paper chose its compositions by this kind of judgement).
SETTINGS: dict[str, set[str]] = {
    "living room": {"cat", "dog", "plant", "chair", "sofa", "lamp", "vase", "clock", "candle", "book",
                    "teddy bear", "plushie", "stuffed animal", "toy", "cushion", "mug", "cup"},
    "kitchen table": {"mug", "cup", "bowl", "teapot", "vase", "plant", "can", "bottle", "glass",
                      "fruit", "cat", "candle", "pot"},
    "desk": {"laptop", "keyboard", "mug", "cup", "plant", "lamp", "book", "glasses", "sunglasses",
             "toy", "robot", "clock", "backpack", "headphones"},
    "bedroom": {"cat", "dog", "teddy bear", "plushie", "stuffed animal", "toy", "lamp", "book",
                "backpack", "sneaker", "shoe", "boot", "clock"},
    "garden": {"dog", "cat", "plant", "flower", "chair", "ball", "pot", "bicycle", "watering can"},
    "street": {"person", "dog", "bicycle", "car", "motorcycle", "backpack", "sneaker", "shoe", "boot",
               "sunglasses", "bench"},
    "beach": {"dog", "person", "sunglasses", "ball", "backpack", "chair", "bottle"},
}
_WORDS = {word for cats in SETTINGS.values() for word in cats}


def settings_of(category: str) -> set[str]:
    """The table's settings for a category: the whole word, else its last word, singular
    ('stuffed animal', 'red teapot' -> 'teapot', 'dogs' -> 'dog'); empty when unknown."""
    text = category.lower().strip()
    last = text.split()[-1] if text.split() else text
    for word in (text, last, text.rstrip("s"), last.rstrip("s")):
        if word in _WORDS:
            return {s for s, cats in SETTINGS.items() if word in cats}
    return set()


@dataclass
class Offered:
    """A proposed composition; shaped like models.llm_planner.Proposal."""

    concepts: list[str]
    why: str


def propose(pool: list[tuple[str, str]], most: int, taken: list[list[str]] = ()) -> list[Offered]:
    """Up to `most` new compositions of 2 or 3 of the (id, category) pool.

    Greedy, in order: first what brings in concepts not yet used (so every concept appears
    when `most` allows), then the settings its categories share, then concepts used less,
    then triples over pairs, then the pool's order. Concepts of unknown categories share no
    setting and are still composed, so any pool of 2 or more gives a proposal.
    """
    if len(pool) < MIN_CONCEPTS:
        raise ValueError(f"concepts: association needs at least {MIN_CONCEPTS} concepts, got {len(pool)}")
    if most < 1:
        raise ValueError(f"most: must be at least 1, got {most}")
    where = [settings_of(cat) for _, cat in pool]
    seen = {frozenset(t) for t in taken}
    candidates = []
    for size in (2, 3):
        for combo in itertools.combinations(range(len(pool)), size):
            if frozenset(pool[i][0] for i in combo) in seen:
                continue
            shared = set.intersection(*(where[i] for i in combo))
            same = len({pool[i][1].lower() for i in combo}) < size  # two of one kind: less varied
            candidates.append((combo, shared, len(shared) - 0.5 * same))
    used = [0] * len(pool)
    chosen: list[Offered] = []
    while candidates and len(chosen) < most:
        def rank(c):
            combo, _, score = c
            return (sum(used[i] == 0 for i in combo), score, -sum(used[i] for i in combo), len(combo))

        best = max(candidates, key=rank)  # max keeps the first of equals: the pool's order
        candidates.remove(best)
        combo, shared, _ = best
        for i in combo:
            used[i] += 1
        names = ", ".join(pool[i][1] for i in combo)
        why = (f"{names}: often seen together ({', '.join(sorted(shared)[:3])})" if shared
               else f"{names}: no shared setting in the table; composed so every concept is used")
        chosen.append(Offered([pool[i][0] for i in combo], why))
    return chosen
