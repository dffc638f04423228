"""The dataset report: one self-contained HTML page that shows what the factory made.

`build_report(dataset_uri, ...)` reads a published version the way any reader must (the
manifest, then each composition's samples.jsonl, whose hash the manifest records) and
returns the page as a string: summary numbers, per-composition and per-concept counts, drop
reasons as bars, every sample as a row of stage thumbnails (source photos -> mask ->
composite -> final) with caption and verdict, filters by composition and verdict, and
optionally the changes from another version and the filter's agreement with human ratings.

The markup is `templates/report.html.j2` (Jinja2, autoescaped); this module builds what it
is given, `PageView` (`page_view`, `report_view`: numbers and rows), and the rows as JSON for
the page's script, streamed into the template one sample at a time.

Everything the page needs is inline (CSS, JS, thumbnails as data URIs), so it opens from a
mail attachment or an S3 console with no network and no access to the dataset. No Prefect
is needed to build or test it.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from PIL import Image

from gen4gen.infra.errors import BadInput
from gen4gen.infra.storage import (
    decode_image, exists, filesystem, join, list_files, local_path, read_bytes, read_input, resolve, sha256,
    signed_url, write_bytes,
)
from gen4gen.models.detect.checks import detections_from_measures
from gen4gen.tasks.publishing.card import main_reasons
from gen4gen.tasks.publishing.publish import composition_stats, published_path
from gen4gen.tasks.reader import load_json, read_manifest, read_shard
from gen4gen.tasks.stage import STAGES_DIR
from gen4gen.infra.records import Manifest, Sample

# The paper kept only images people rated 4 or 5.
HUMAN_KEEP_RATING = 4
THUMB = 160  # pixels on the long side; 160 px JPEG at q=70 is ~5 KB, so 100 samples ~2 MB
JPEG_QUALITY = 70
STAGES = ("mask", "composite", "repaint")  # shown after the source photos, in flow order
MAX_DECISIONS_BYTES = 16 * 2**20  # a rating per sample of 100,000 samples is ~5 MB
MAX_IMAGE_BYTES = 64 * 2**20  # a stage output or thumbnail the page shows
PAGE_SIZE = 50  # sample rows drawn at a time: the page opens as fast at 10,000 samples as at 50
MAX_VIEW_BYTES = 4 * 2**20  # a gallery's view record (tasks/views/gallery.py)
LINK_SECONDS = 7 * 24 * 3600  # presigned thumbnail links (S3) last a week


class DecisionsError(ValueError):
    """A decisions file that cannot be used; the message names the file, row and value."""


# --------------------------------------------------------------------------- data


@dataclass
class Version:
    """One published dataset version as the report sees it."""

    uri: str
    manifest: Manifest
    samples: list[Sample]
    published: bool = True  # False: a review page before publishing (nothing in images/ yet)

    @property
    def by_id(self) -> dict[str, Sample]:
        return {s.id: s for s in self.samples}


def load_version(uri: str) -> Version:
    """Read a version through its manifest only (a reader trusts only what it lists)."""
    uri = resolve(uri)
    manifest = read_manifest(uri)
    samples = [s for st in manifest.compositions for s in read_shard(uri, st)]
    return Version(uri=uri, manifest=manifest, samples=samples)


# --------------------------------------------------------------------------- decisions


def parse_decisions(data: bytes, name: str) -> dict[str, int]:
    """Sample id -> rating 1..5, from JSON or CSV bytes.

    JSON: {"<sample id>": rating, ...}, or the page's export {"ratings": {...}, ...}.
    CSV: a header with `sample_id` (or `id`) and `rating` columns, one row per sample.
    """
    if len(data) > MAX_DECISIONS_BYTES:
        raise DecisionsError(f"{name}: {len(data):,} bytes is over the {MAX_DECISIONS_BYTES:,} byte limit of a decisions file")
    text = data.decode("utf-8-sig", errors="replace")
    if not text.strip():
        raise DecisionsError(f"{name}: empty decisions file")
    if text.lstrip()[0] in "{[":
        try:
            raw = load_json(data, name, object_pairs_hook=_Pairs)
        except BadInput as err:
            raise DecisionsError(f"{name}: {err.reason}") from err
        if isinstance(raw, dict) and isinstance(raw.get("ratings"), dict):
            raw = raw["ratings"]
        if not isinstance(raw, dict):
            raise DecisionsError(f"{name}: expected an object of sample id -> rating, got {type(raw).__name__}")
        # Every pair as written, repeats included: a repeated id meets the same check as a
        # repeated CSV row below (json.loads alone keeps the last one, silently).
        rows = [(str(k), v, f"entry {i} (key {_short(k)})") for i, (k, v) in enumerate(raw.pairs, 1)]
    else:
        reader = csv.DictReader(io.StringIO(text), restkey=_EXTRA)
        try:
            cols = [c.strip() for c in reader.fieldnames or []]
            id_col = next((c for c in ("sample_id", "id") if c in cols), None)
            if id_col is None or "rating" not in cols:
                raise DecisionsError(f"{name}: CSV header {cols} needs a 'sample_id' (or 'id') and a 'rating' column")
            rows = []
            for row in reader:
                where = f"line {reader.line_num}"
                if _EXTRA in row:
                    raise DecisionsError(f"{name}: {where}: {len(cols) + len(row[_EXTRA])} fields where the header has {len(cols)}")
                row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
                rows.append((row[id_col], row["rating"], where))
        except csv.Error as err:
            raise DecisionsError(f"{name}: line {reader.line_num}: not valid CSV: {err}") from err
    ratings: dict[str, int] = {}
    first: dict[str, str] = {}
    for sample_id, value, where in rows:
        rating = _rating(value)
        if rating is None:
            raise DecisionsError(f"{name}: {where}: rating {_short(value)} for {_short(sample_id)} is not a whole number 1 to 5")
        if sample_id in ratings and ratings[sample_id] != rating:
            raise DecisionsError(f"{name}: {where}: sample {sample_id!r} is rated {rating} here and {ratings[sample_id]} "
                                 f"on {first[sample_id]}")
        ratings[sample_id] = rating
        first.setdefault(sample_id, where)
    return ratings


_EXTRA = "\x00extra"  # DictReader's key for fields beyond the header's


class _Pairs(dict):
    """A JSON object that also keeps its pairs in order, repeated keys included."""

    def __init__(self, pairs: list[tuple[str, object]]):
        super().__init__(pairs)
        self.pairs = pairs


def _short(value) -> str:
    if isinstance(value, (dict, list)):
        return "dict" if isinstance(value, dict) else "list"  # a JSON object is a _Pairs here
    return repr(value)[:80]


def _rating(value) -> int | None:
    if isinstance(value, bool):
        return None
    # ASCII digits only: str.isdigit() is true for '²' (which int() refuses) and for '٣' or
    # '３' (which int() reads as 3): a rating is one of the characters 1 to 5 a person types.
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and 1 <= value <= 5 else None


def read_decisions(uri: str) -> dict[str, int]:
    try:
        data = read_bytes(uri, limit=MAX_DECISIONS_BYTES)
    except BadInput as err:
        raise DecisionsError(str(err)) from err
    return parse_decisions(data, uri)


@dataclass
class Agreement:
    """How the automatic filter's "keep" agrees with people's (rating >= min_rating)."""

    min_rating: int
    both_keep: int = 0  # true positives
    filter_only: int = 0  # false positives: the filter kept what people would drop
    human_only: int = 0  # false negatives: the filter dropped what people would keep
    both_drop: int = 0
    unknown: list[str] = field(default_factory=list)  # rated ids not in this version

    def unknown_line(self) -> str:
        n = len(self.unknown)
        return f"{n:,} rating{'s' if n != 1 else ''} name{'s' if n == 1 else ''} no sample of this dataset"

    @property
    def rated(self) -> int:
        return self.both_keep + self.filter_only + self.human_only + self.both_drop

    @property
    def precision(self) -> float | None:
        n = self.both_keep + self.filter_only
        return self.both_keep / n if n else None

    @property
    def recall(self) -> float | None:
        n = self.both_keep + self.human_only
        return self.both_keep / n if n else None

    def lines(self) -> list[str]:
        def pct(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.2f}"

        out = [
            f"filter agreement on {self.rated} rated samples (people keep a rating >= {self.min_rating}):",
            f"  precision of keep {pct(self.precision)}: {self.both_keep} of "
            f"{self.both_keep + self.filter_only} samples the filter kept were kept by people",
            f"  recall of keep    {pct(self.recall)}: {self.both_keep} of "
            f"{self.both_keep + self.human_only} samples people kept were kept by the filter",
            f"  both drop {self.both_drop}; filter kept, people dropped {self.filter_only}; "
            f"filter dropped, people kept {self.human_only}",
        ]
        if self.unknown:
            out.append(f"  {self.unknown_line()} (ignored): {', '.join(self.unknown[:5])}"
                       + (" ..." if len(self.unknown) > 5 else ""))
        return out


def filter_agreement(samples: list[Sample], ratings: dict[str, int], min_rating: int = HUMAN_KEEP_RATING) -> Agreement:
    """Compare the filter's verdict (kept, or not) with the rating of every rated sample."""
    by_id = {s.id: s for s in samples}
    agreement = Agreement(min_rating=min_rating, unknown=sorted(set(ratings) - set(by_id)))
    for sample_id, rating in ratings.items():
        sample = by_id.get(sample_id)
        if sample is None:
            continue
        auto, human = sample.status == "kept", rating >= min_rating
        if auto and human:
            agreement.both_keep += 1
        elif auto:
            agreement.filter_only += 1
        elif human:
            agreement.human_only += 1
        else:
            agreement.both_drop += 1
    return agreement


# --------------------------------------------------------------------------- compare


@dataclass
class Changes:
    """What differs between an earlier version (`old`) and this one."""

    old_label: str
    added: list[Sample]
    removed: list[Sample]
    verdict_changed: list[tuple[Sample, str]]  # (new sample, old status)
    per_composition: list[dict]  # composition, planned/kept before and now


def compare_versions(new: Version, old: Version) -> Changes:
    new_ids, old_ids = new.by_id, old.by_id
    rows = []
    before = {st.composition: st for st in old.manifest.compositions}
    now = {st.composition: st for st in new.manifest.compositions}
    for comp in list(now) + [c for c in before if c not in now]:
        b, n = before.get(comp), now.get(comp)
        rows.append(
            {
                "composition": comp,
                "planned_before": b.planned if b else 0,
                "planned_now": n.planned if n else 0,
                "kept_before": b.kept if b else 0,
                "kept_now": n.kept if n else 0,
            }
        )
    return Changes(
        old_label=f"{old.manifest.dataset} {old.manifest.version} ({old.uri})",
        added=[s for s in new.samples if s.id not in old_ids],
        removed=[s for s in old.samples if s.id not in new_ids],
        verdict_changed=[(s, old_ids[s.id].status) for s in new.samples if s.id in old_ids and old_ids[s.id].status != s.status],
        per_composition=rows,
    )


# --------------------------------------------------------------------------- thumbnails


@dataclass
class Thumb:
    """A data URI, or why there is none (shown in the page instead of the image)."""

    src: str | None
    note: str = ""
    skipped: bool = False  # the stage never ran for this sample: not a fault, shown neutral


def thumbnail_jpeg(data: bytes, name: str, size: int = THUMB, grey: bool = False) -> bytes:
    """A small JPEG of an image's bytes."""
    img = decode_image(data, name)
    img.draft("L" if grey else "RGB", (size, size))  # JPEG sources decode at a reduced size
    img = img.convert("L" if grey else "RGB")
    img.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=2.0)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buf.getvalue()


def data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def thumbnail(data: bytes, name: str, size: int = THUMB, grey: bool = False) -> str:
    """A small JPEG data URI of an image's bytes."""
    return data_uri(thumbnail_jpeg(data, name, size, grey))


class _Thumbs:
    """Where a page's thumbnails come from, and how it refers to them.

    `folder` None: inline, each a data URI (a self-contained page: the review page, small
    reports). Else linked: a thumbnail the factory stored in the dataset (`.thumbs/`, named
    by the image's sha256) is linked where it lies (file://, or presigned on S3); one it did
    not make is made here once into `folder` (beside the page, never inside the dataset:
    the report only reads a dataset) and linked relatively. Stage images are checked by a
    listing, so a deleted one shows as missing; their bytes are hashed only when decoded.
    """

    def __init__(self, version: Version, size: int, folder: str | None, rel_folder: str = ""):
        self.version, self.size, self.folder, self.rel_folder = version, size, folder, rel_folder
        self.stored = {relative_to(u, version.uri) for u in list_files(join(version.uri, THUMBS, str(size)))}
        self.present: set[str] = set()
        for st in version.manifest.compositions:
            for where in (join(STAGES_DIR, st.composition), st.composition):
                self.present |= {relative_to(u, version.uri) for u in list_files(join(version.uri, where))}

    def _src(self, jpeg: bytes | None, sha: str, stored: str | None) -> str:
        if self.folder is None:
            return data_uri(jpeg if jpeg is not None else read_bytes(join(self.version.uri, stored), limit=MAX_IMAGE_BYTES))
        if stored is not None:
            uri = join(self.version.uri, stored)
            return signed_url(uri, LINK_SECONDS) or resolve(uri)
        name = f"{sha[:2]}/{sha}.jpg"
        target = join(self.folder, name)
        if jpeg is not None or not exists(target):
            write_bytes(target, jpeg)
        return f"{self.rel_folder}/{name}"

    def image(self, rel: str, sha: str | None, grey: bool = False) -> Thumb:
        uri = join(self.version.uri, rel)
        if rel not in self.present:
            return Thumb(None, f"{uri}: not found")
        stored = thumb_path(sha, self.size) if sha and thumb_path(sha, self.size) in self.stored else None
        made = sha and self.folder is not None and exists(join(self.folder, f"{sha[:2]}/{sha}.jpg"))
        try:
            if stored or made:
                return Thumb(self._src(None, sha, stored))
            data = read_bytes(uri, limit=MAX_IMAGE_BYTES)
            if sha and sha256(data) != sha:
                return Thumb(None, f"{uri}: changed since the stage wrote it")
            return Thumb(self._src(thumbnail_jpeg(data, uri, self.size, grey), sha or sha256(data), None))
        except BadInput as err:  # a missing or broken file is shown, not fatal: it is what the page is for
            return Thumb(None, str(err))

    def photo(self, uri: str, stored: str | None, allowed: frozenset[str]) -> Thumb:
        """A source photo: from a thumbnail the factory stored (named in a gallery view), or
        from the photo itself only when it is one of the recipe's (`allowed`). Never from
        what a record names: a record may say file:///home/someone/private.png."""
        try:
            if stored is not None and stored in self.stored:
                return Thumb(self._src(None, stored.rsplit("/", 1)[1][:-4], stored))
            if uri in allowed:
                data = read_input(uri)
                return Thumb(self._src(thumbnail_jpeg(data, uri, self.size), sha256(data), None))
        except BadInput as err:
            return Thumb(None, str(err))
        return Thumb(None, "no thumbnail made by the factory", skipped=True)


def relative_to(uri: str, base: str) -> str:
    return resolve(uri)[len(resolve(base).rstrip("/")) + 1:]


def _sample_thumbs(thumbs: _Thumbs, sample: Sample) -> dict[str, Thumb]:
    out = {}
    for stage in STAGES:
        if stage not in sample.hashes:
            out[stage] = Thumb(None, f"no {stage} output: the sample stopped before this stage", skipped=True)
            continue
        # A kept sample's final image is read from its published copy, which the manifest lists.
        published = thumbs.version.published and stage == "repaint" and sample.status == "kept"
        rel = published_path(sample) if published else sample.paths[stage]
        out[stage] = thumbs.image(rel, sample.hashes[stage], grey=stage == "mask")
    return out


def _stored_photos(version: Version) -> dict[str, str]:
    """Photo URI -> its stored thumbnail, from the galleries' views (tasks/views/gallery.py) of
    this version's compositions; paths checked to lie under `.thumbs/`."""
    found: dict[str, str] = {}
    for st in version.manifest.compositions:
        uri = join(version.uri, THUMBS, st.composition, f"gallery-{st.shard_sha256[:16]}.json")
        try:
            view = load_json(read_bytes(uri, limit=MAX_VIEW_BYTES), uri) if exists(uri) else {}
        except BadInput:
            continue
        photos = view.get("photos") if isinstance(view, dict) else None
        for photo, rel in (photos or {}).items():
            if isinstance(rel, str) and rel.startswith(f"{THUMBS}/") and ".." not in rel.split("/"):
                found.setdefault(photo, rel)
    return found


# --------------------------------------------------------------------------- page


@dataclass
class Report:
    html: str
    agreement: Agreement | None
    changes: Changes | None
    samples: int
    bytes: int = 0


def _read(dataset_uri: str, compare_uri: str | None, ratings: dict[str, int] | None):
    """What a page shows: the version, what changed since `compare_uri`, the agreement."""
    version = load_version(dataset_uri)
    changes = compare_versions(version, load_version(compare_uri)) if compare_uri else None
    agreement = filter_agreement(version.samples, ratings) if ratings is not None else None
    return version, changes, agreement


def build_report(
    dataset_uri: str,
    compare_uri: str | None = None,
    ratings: dict[str, int] | None = None,
    size: int = THUMB,
    workers: int = 4,
    page_size: int = PAGE_SIZE,
) -> Report:
    """Read a version (and optionally an earlier one) and render a self-contained page
    (thumbnails inline). For large versions use `write_report`, which links them."""
    version, changes, agreement = _read(dataset_uri, compare_uri, ratings)
    thumbs = _Thumbs(version, size, None)
    page = "".join(_page(version, thumbs, changes, agreement, ratings or {}, workers, HUMAN_KEEP_RATING, page_size))
    return Report(html=page, agreement=agreement, changes=changes, samples=len(version.samples), bytes=len(page.encode()))


def write_report(
    dataset_uri: str,
    page_uri: str,
    compare_uri: str | None = None,
    ratings: dict[str, int] | None = None,
    size: int = THUMB,
    workers: int = 4,
    page_size: int = PAGE_SIZE,
) -> Report:
    """Write the report page to `page_uri`, streamed (never the whole page in memory),
    thumbnails linked: those the factory stored in the dataset where they lie, the rest
    made once into `{page stem}_files/` beside the page. The page shows `page_size` rows
    at a time; filters, ratings and the agreement panel work over all rows."""
    version, changes, agreement = _read(dataset_uri, compare_uri, ratings)
    page_uri = resolve(page_uri)
    stem = page_uri.rsplit("/", 1)[1].rsplit(".", 1)[0] + "_files"
    thumbs = _Thumbs(version, size, join(page_uri.rsplit("/", 1)[0], stem), stem)
    chunks = _page(version, thumbs, changes, agreement, ratings or {}, workers, HUMAN_KEEP_RATING, page_size)
    fs, path = filesystem(page_uri)
    local = local_path(page_uri)
    written = 0
    if local:
        os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
        tmp = f"{local}.{os.getpid()}.tmp"
        try:
            try:
                with open(tmp, "wb") as f:
                    for chunk in chunks:
                        written += f.write(chunk.encode())
            except OSError as err:  # f.write() names no file: a full disk must say where
                raise OSError(err.errno, err.strerror or str(err), err.filename or local) from err
            os.replace(tmp, local)  # a reader never sees half a page
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    else:
        with fs.open(path, "wb") as f:  # S3: one multipart upload, atomic on completion
            for chunk in chunks:
                written += f.write(chunk.encode())
    return Report(html="", agreement=agreement, changes=changes, samples=len(version.samples), bytes=written)


def build_review_page(
    dataset: str, version: str, uri: str, samples: list[Sample], min_rating: int, size: int = THUMB, workers: int = 4,
    photos: frozenset[str] | set[str] = frozenset(),
) -> str:
    """The page of samples not published yet, for people to rate before the flow publishes.

    Built from the records in memory: the numbers a manifest would hold are counted here,
    and final images are read from the repaint stage's outputs. Source photos are read only
    when they are in `photos` (the recipe's own), never because a record names them.
    """
    comps = list(dict.fromkeys(s.composition for s in samples))
    stats = [composition_stats([s for s in samples if s.composition == c]) for c in comps]
    manifest = Manifest(
        dataset=dataset, version=version, uri=resolve(uri), created=datetime.now(timezone.utc), config_sha256="",
        packages={}, compositions=stats, files={}, planned=len(samples),
        **{k: sum(s.status == k for s in samples) for k in ("kept", "dropped", "failed")},
    )
    preview = Version(uri=resolve(uri), manifest=manifest, samples=samples, published=False)
    thumbs = _Thumbs(preview, size, None)
    return "".join(_page(preview, thumbs, None, None, {}, workers, min_rating, PAGE_SIZE, frozenset(photos)))


THUMBS = ".thumbs"  # thumbnails the factory made (tasks/views/gallery.py), a view outside the manifest


def thumb_path(sha: str, size: int = THUMB) -> str:
    """Where the thumbnail of the image with this sha256 lives, relative to the dataset:
    named by content, so an image is thumbnailed once whoever shows it."""
    return f"{THUMBS}/{size}/{sha[:2]}/{sha}.jpg"


def _page(version, thumbs, changes, agreement, ratings, workers, min_rating, page_size, allowed=frozenset()):
    """The page as a sequence of strings, from templates/report.html.j2: the summary, then
    one data row per sample, streamed (the template draws rows as this generator makes them)."""
    comps = [st.composition for st in version.manifest.compositions]
    samples = sorted(version.samples, key=lambda s: (comps.index(s.composition), s.plan.index))  # recipe order
    # Decoding PNGs dominates; PIL releases the GIL while decoding, and S3 reads wait.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        photo_thumbs = _photo_thumbs(version, thumbs, pool, allowed)
        view = page_view(version, samples, photo_thumbs, changes, agreement, ratings, min_rating, page_size)
        rows = _rows(pool, thumbs, samples, photo_thumbs, comps, changes, workers)
        stream = _TEMPLATES.get_template("report.html.j2").stream(v=view, rows=rows, css=Markup(_CSS), js=Markup(_JS))
        stream.enable_buffering(64)  # a few rows a write, not one write per template piece
        yield from stream


def report_view(
    dataset_uri: str, compare_uri: str | None = None, ratings: dict[str, int] | None = None, size: int = THUMB,
    workers: int = 4, page_size: int = PAGE_SIZE,
) -> PageView:
    """What `build_report` would show, as numbers and rows, without the page."""
    version, changes, agreement = _read(dataset_uri, compare_uri, ratings)
    comps = [st.composition for st in version.manifest.compositions]
    samples = sorted(version.samples, key=lambda s: (comps.index(s.composition), s.plan.index))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        photo_thumbs = _photo_thumbs(version, _Thumbs(version, size, None), pool, frozenset())
    return page_view(version, samples, photo_thumbs, changes, agreement, ratings or {}, HUMAN_KEEP_RATING, page_size)


def _photo_thumbs(version, thumbs, pool, allowed) -> dict[str, Thumb]:
    """Each source photo's thumbnail, once however many samples show it."""
    stored = _stored_photos(version)
    photos = sorted({u for s in version.samples for cid, u in s.plan.photos.items() if cid in s.concepts}
                    | {s.plan.background.photo for s in version.samples if s.plan.background is not None})
    return dict(zip(photos, pool.map(lambda u: thumbs.photo(u, stored.get(u), allowed), photos)))


def _rows(pool, thumbs, samples, photo_thumbs, comps, changes, workers):
    """Each sample's row as JSON for the page's script, thumbnails made in order, a bounded
    window ahead: memory stays flat in the number of samples."""
    added = {s.id for s in changes.added} if changes else set()
    photo_class = {uri: f"p{i}" for i, uri in enumerate(photo_thumbs)}
    window, pending = workers * 8, []
    for s in samples:
        pending.append((s, pool.submit(_sample_thumbs, thumbs, s)))
        if len(pending) > window:
            yield _row_json(pending.pop(0), photo_thumbs, photo_class, comps, added)
    for item in pending:
        yield _row_json(item, photo_thumbs, photo_class, comps, added)


def _pct(n: int, d: int) -> str:
    return f"{100 * n / d:.0f}%" if d else "-"


def _row_json(item, photo_thumbs, photo_class, comps, added) -> Markup:
    """JSON with every '<' as \\u003c: no string in it can close the script element."""
    sample, fut = item
    row = _row(sample, fut.result(), photo_thumbs, photo_class, comps, sample.id in added)
    return Markup(json.dumps(row, separators=(",", ":")).replace("<", "\\u003c"))


def _cell(thumb: Thumb) -> list:
    """A thumbnail as the page's script draws it: [src or null, note, skipped]."""
    return [thumb.src, thumb.note, 1 if thumb.skipped else 0]


def _row(s: Sample, thumbs: dict[str, Thumb], photo_thumbs, photo_class, comps, new: bool) -> list:
    """One sample as a compact array (tasks/views/report.js: draw): a few hundred bytes linked."""
    pics = [[cid, photo_class[u] if photo_thumbs[u].src else None, f"{cid}: {u}", _cell(photo_thumbs[u])]
            for cid in s.concepts if (u := s.plan.photos.get(cid))]
    if s.plan.background is not None and (u := s.plan.background.photo) in photo_thumbs:
        pics.append(["background", photo_class[u] if photo_thumbs[u].src else None, f"background ({s.plan.scene}): {u}",
                     _cell(photo_thumbs[u])])
    # What the class checks' detector saw on the final, for the dropped ones: why it was dropped
    # is easier to judge with the boxes drawn (models/detect/checks.py keeps them in measures).
    dets = [[d["label"], d["score"], *d["box"]] for d in detections_from_measures(s.measures)] \
        if s.status == "dropped" else []
    return [s.id, comps.index(s.composition), s.status, 1 if new else 0, s.plan.scene, s.caption,
            [[r.code, r.stage, r.detail] for r in s.reasons], pics, [_cell(thumbs[k]) for k in STAGES], dets]


# --------------------------------------------------------------------------- the page's view


@dataclass
class CompositionRow:
    composition: str
    concepts: list[str]
    planned: int
    kept: int
    dropped: int
    failed: int
    bar: list[tuple[str, float]]  # (verdict, percent of planned) for the verdicts it has
    seconds: list[float]  # per stage, in PageView.stage_names order
    # Yield (tasks/targets.py): kept asked for ("-": none), samples planned in all rounds.
    target: str = "-"
    attempts: int = 0
    rounds: int = 1
    yield_rate: str = ""
    main_reasons: str = ""


@dataclass
class ConceptRow:
    concept: str
    token: str
    photos: list[Thumb]
    compositions: int
    samples: int
    kept: int
    keep_rate: str


@dataclass
class ReasonRow:
    code: str
    count: int
    pct: float  # of the most common reason's count (the bar's length)
    where: str  # "composition count, ..." most first


@dataclass
class ChangesView:
    old_label: str
    added: list[tuple[str, str]]  # (sample id, composition)
    removed: list[tuple[str, str, str]]  # (sample id, composition, status)
    verdict_changed: list[tuple[str, str, str, str]]  # (sample id, composition, old, new)
    per_composition: list[dict]  # composition, planned/kept before and now, kept_change, trend


@dataclass
class PageView:
    """What the report page shows, as numbers and rows (the template turns it into HTML)."""

    title: str
    dataset: str
    version: str
    uri: str
    published: bool
    created: str
    stats: list[tuple[str, object, str]]  # (label, value, class)
    unusable_photos: list[tuple[str, str]]
    flagged_photos: list[tuple[str, str]]
    stage_names: list[str]
    compositions: list[CompositionRow]
    short: list[tuple[str, str]]  # composition -> why it is short of its target (the manifest's)
    concepts: list[ConceptRow]
    reasons: list[ReasonRow]
    changes: ChangesView | None
    agreement_note: str  # above the agreement panel, which the page always draws (and recomputes)
    composition_ids: list[str]
    verdicts: list[str]  # the verdict filters: those some sample has, and "new" after a comparison
    photo_styles: list[tuple[str, str]]  # (class, thumbnail URL): each source photo drawn once
    data: dict = field(default_factory=dict)  # REPORT, for the page's script

    @property
    def data_json(self) -> Markup:
        # '<' escaped so no string in the data can close the script element.
        return Markup(json.dumps(self.data).replace("<", "\\u003c"))


def page_view(version, samples, photo_thumbs, changes, agreement, ratings, min_rating, page_size) -> PageView:
    """The page's numbers and rows from a version and its thumbnails."""
    m = version.manifest
    comps = [st.composition for st in m.compositions]
    concepts_of: dict[str, list[str]] = {}
    for s in samples:
        concepts_of.setdefault(s.composition, s.concepts)
    stages_seen = sorted({k for st in m.compositions for k in st.seconds})
    composition_rows = [
        CompositionRow(
            composition=st.composition, concepts=list(concepts_of.get(st.composition, [])), planned=st.planned,
            kept=st.kept, dropped=st.dropped, failed=st.failed,
            bar=[(cls, 100 * n / st.planned) for cls, n in (("kept", st.kept), ("dropped", st.dropped), ("failed", st.failed))
                 if st.planned and n],
            seconds=[st.seconds.get(k, 0) for k in stages_seen],
            target="-" if st.target is None else f"{st.target}" + (" (budget spent)" if st.out_of_budget else ""),
            attempts=st.tried, rounds=st.rounds, yield_rate=_pct(st.kept + st.unused, st.tried),
            main_reasons=", ".join(f"{code} {n}" for code, n in main_reasons(st)) or "-",
        )
        for st in m.compositions
    ]

    # Concepts: which photos, in how many samples, how many kept.
    per_concept: dict[str, Counter] = defaultdict(Counter)
    tokens, concept_photos = {}, defaultdict(set)
    for s in samples:
        for cid, tok in zip(s.concepts, s.tokens):
            per_concept[cid]["samples"] += 1
            per_concept[cid]["kept"] += s.status == "kept"
            per_concept[cid][f"c:{s.composition}"] = 1
            tokens[cid] = tok
            if cid in s.plan.photos:
                concept_photos[cid].add(s.plan.photos[cid])
    concept_rows = [
        ConceptRow(concept=cid, token=tokens[cid], photos=[photo_thumbs[u] for u in sorted(concept_photos[cid])],
                   compositions=sum(1 for k in c if k.startswith("c:")), samples=c["samples"], kept=c["kept"],
                   keep_rate=_pct(c["kept"], c["samples"]))
        for cid, c in sorted(per_concept.items())
    ]

    # Drop reasons (the first reason of each dropped or failed sample, as the manifest counts them).
    reasons: Counter = Counter()
    by_comp: dict[str, Counter] = defaultdict(Counter)
    for st in m.compositions:
        for code, n in st.reasons.items():
            reasons[code] += n
            by_comp[code][st.composition] += n
    top = max(reasons.values(), default=0)
    reason_rows = [ReasonRow(code=code, count=n, pct=100 * n / top,
                             where=", ".join(f"{c} {k}" for c, k in by_comp[code].most_common()))
                   for code, n in reasons.most_common()]

    verdicts = [v for v in ("kept", "dropped", "failed") if any(s.status == v for s in samples)]
    if changes and changes.added:
        verdicts.append("new")
    photo_class = {uri: f"p{i}" for i, uri in enumerate(photo_thumbs)}
    note = ("From the decisions file; updated as you rate samples below." if agreement is not None else
            f"Rate samples below ({min_rating} or more keeps; the paper kept 4 and 5) to see how the automatic filter agrees.")
    if agreement is not None and agreement.unknown:
        note += f" {agreement.unknown_line()}: left out of this page."
    known = {s.id for s in samples}
    return PageView(
        title=f"{m.dataset} {m.version}: dataset report", dataset=m.dataset, version=m.version, uri=m.uri,
        published=version.published, created=m.created.strftime("%Y-%m-%d %H:%M UTC"),
        stats=[("planned", m.planned, ""), ("kept", m.kept, "kept"), ("dropped", m.dropped, "dropped"),
               ("failed", m.failed, "failed"), ("keep rate", _pct(m.kept, m.planned), "")],
        unusable_photos=list(m.unusable_photos.items()), flagged_photos=list(m.flagged_photos.items()),
        stage_names=stages_seen, compositions=composition_rows, short=sorted(m.short.items()),
        concepts=concept_rows, reasons=reason_rows,
        changes=_changes_view(changes) if changes is not None else None,
        agreement_note=note, composition_ids=comps, verdicts=verdicts,
        photo_styles=[(photo_class[u], t.src) for u, t in photo_thumbs.items() if t.src],
        data={"dataset": m.dataset, "version": m.version, "minRating": min_rating,
              # Only this version's ratings: a decisions file naming other samples is counted
              # (the agreement panel), never shipped, so the page's size follows the dataset's.
              "ratings": {k: v for k, v in ratings.items() if k in known},
              "pageSize": page_size, "compositions": comps},
    )


def _changes_view(changes: Changes) -> ChangesView:
    rows = [{**r, "kept_change": r["kept_now"] - r["kept_before"],
             "trend": "up" if r["kept_now"] > r["kept_before"] else "down" if r["kept_now"] < r["kept_before"] else ""}
            for r in changes.per_composition]
    return ChangesView(
        old_label=changes.old_label,
        added=[(s.id, s.composition) for s in changes.added],
        removed=[(s.id, s.composition, s.status) for s in changes.removed],
        verdict_changed=[(s.id, s.composition, old, s.status) for s, old in changes.verdict_changed],
        per_composition=rows,
    )


def report_size(page: str) -> int:
    return len(page.encode())


# The page's style and behaviour live beside this module as plain files, its markup in
# templates/report.html.j2 (package data, autoescaped).
_CSS = Path(__file__).with_name("report.css").read_text()
_JS = Path(__file__).with_name("report.js").read_text()
_TEMPLATES = Environment(loader=PackageLoader("gen4gen.tasks.views", "templates"), autoescape=select_autoescape(["j2"]))
