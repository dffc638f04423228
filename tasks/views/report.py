"""The dataset report: one self-contained HTML page that shows what the factory made.

`build_report(dataset_uri, ...)` reads a published version the way any reader must (the
manifest, then each composition's samples.jsonl, whose hash the manifest records) and
returns the page as a string: summary numbers, per-composition and per-concept counts, drop
reasons as bars, every sample as a row of stage thumbnails (source photos -> mask ->
composite -> final) with caption and verdict, filters by composition and verdict, and
optionally the changes from another version and the filter's agreement with human ratings.

Everything the page needs is inline (CSS, JS, thumbnails as data URIs), so it opens from a
mail attachment or an S3 console with no network and no access to the dataset. No Prefect
is needed to build or test it.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from PIL import Image

from gen4gen.infra.errors import BadInput
from gen4gen.infra.storage import (
    decode_image, exists, filesystem, join, list_files, local_path, read_bytes, read_input, resolve, sha256,
    signed_url, write_bytes,
)
from gen4gen.tasks.publishing.ownership import GENERATOR
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
        return "an object" if isinstance(value, dict) else "a list"
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
    """The page as a sequence of strings: the summary, then one data row per sample."""
    stored = _stored_photos(version)
    photos = sorted({u for s in version.samples for cid, u in s.plan.photos.items() if cid in s.concepts})
    m = version.manifest
    comps = [st.composition for st in m.compositions]
    samples = sorted(version.samples, key=lambda s: (comps.index(s.composition), s.plan.index))  # recipe order
    # Decoding PNGs dominates; PIL releases the GIL while decoding, and S3 reads wait.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        photo_thumbs = dict(zip(photos, pool.map(lambda u: thumbs.photo(u, stored.get(u), allowed), photos)))
        yield _render_head(version, samples, photo_thumbs, changes, agreement, ratings, min_rating, page_size)
        added = {s.id for s in changes.added} if changes else set()
        photo_class = {uri: f"p{i}" for i, uri in enumerate(photo_thumbs)}
        yield "<script>const ROWS = [\n"
        # In order, a bounded window ahead: memory stays flat in the number of samples.
        window, pending = workers * 8, []
        for s in samples:
            pending.append((s, pool.submit(_sample_thumbs, thumbs, s)))
            if len(pending) > window:
                yield _row_json(pending.pop(0), photo_thumbs, photo_class, comps, added)
        for item in pending:
            yield _row_json(item, photo_thumbs, photo_class, comps, added)
    yield "];</script>"
    yield f"<script>{_JS}</script></body></html>"


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _img(thumb: Thumb, label: str, cls: str = "") -> str:
    if thumb.skipped:
        return f'<div class="thumb skipped {cls}" title="{_e(thumb.note)}"><span>not made</span></div>'
    if thumb.src is None:
        state = "missing" if thumb.note.endswith("not found") else "unreadable"
        return f'<div class="thumb missing {cls}" title="{_e(thumb.note)}"><span>{_e(label)}<br>{state}</span></div>'
    return f'<img class="thumb {cls}" src="{_e(thumb.src)}" alt="{_e(label)}" loading="lazy">'


def _stat(label: str, value, cls: str = "") -> str:
    return f'<div class="stat {cls}"><div class="num">{_e(value)}</div><div class="lbl">{_e(label)}</div></div>'


def _pct(n: int, d: int) -> str:
    return f"{100 * n / d:.0f}%" if d else "-"


def _row_json(item, photo_thumbs, photo_class, comps, added) -> str:
    sample, fut = item
    row = _row(sample, fut.result(), photo_thumbs, photo_class, comps, sample.id in added)
    return json.dumps(row, separators=(",", ":")).replace("<", "\\u003c") + ",\n"


def _cell(thumb: Thumb) -> list:
    """A thumbnail as the page's script draws it: [src or null, note, skipped]."""
    return [thumb.src, thumb.note, 1 if thumb.skipped else 0]


def _row(s: Sample, thumbs: dict[str, Thumb], photo_thumbs, photo_class, comps, new: bool) -> list:
    """One sample as a compact array (tasks/views/report.js: draw): a few hundred bytes linked."""
    pics = [[cid, photo_class[u] if photo_thumbs[u].src else None, f"{cid}: {u}", _cell(photo_thumbs[u])]
            for cid in s.concepts if (u := s.plan.photos.get(cid))]
    return [s.id, comps.index(s.composition), s.status, 1 if new else 0, s.plan.scene, s.caption,
            [[r.code, r.stage, r.detail] for r in s.reasons], pics, [_cell(thumbs[k]) for k in STAGES]]


def _render_head(version, samples, photo_thumbs, changes, agreement, ratings, min_rating, page_size) -> str:
    m = version.manifest
    comps = [st.composition for st in m.compositions]
    added = {s.id for s in changes.added} if changes else set()
    photo_class = {uri: f"p{i}" for i, uri in enumerate(photo_thumbs)}
    parts: list[str] = []
    add = parts.append
    add(f"<header><h1>{_e(m.dataset)} <span class=ver>{_e(m.version)}</span></h1>"
        f"<div class=sub>{_e(m.uri)} &middot; {'published' if version.published else 'awaiting review since'} "
        f"{_e(m.created.strftime('%Y-%m-%d %H:%M UTC'))}"
        f" &middot; {len(comps)} compositions</div></header>")
    add('<section class="stats">' + _stat("planned", m.planned) + _stat("kept", m.kept, "kept")
        + _stat("dropped", m.dropped, "dropped") + _stat("failed", m.failed, "failed")
        + _stat("keep rate", _pct(m.kept, m.planned)) + "</section>")
    if m.unusable_photos:
        add("<section><h2>Unusable photos</h2><ul class=notes>" + "".join(
            f"<li><code>{_e(p)}</code>: {_e(why)}</li>" for p, why in m.unusable_photos.items()) + "</ul></section>")
    if m.flagged_photos:
        add("<section><h2>Flagged cut-outs</h2><p class=sub>The planner uses the concept's other photos; "
            "a sample built from one of these is dropped by the filter. <code>gen4gen segment</code> "
            "shows them.</p><ul class=notes>" + "".join(
                f"<li><code>{_e(p)}</code>: {_e(why)}</li>" for p, why in m.flagged_photos.items()) + "</ul></section>")

    # Compositions: counts, a keep bar and seconds per stage.
    stages_seen = sorted({k for st in m.compositions for k in st.seconds})
    concepts_of = {}
    for s in samples:
        concepts_of.setdefault(s.composition, s.concepts)
    rows = []
    for st in m.compositions:
        bar = "".join(
            f'<i class="{cls}" style="width:{100 * n / st.planned:.1f}%"></i>'
            for cls, n in (("kept", st.kept), ("dropped", st.dropped), ("failed", st.failed)) if st.planned and n
        )
        secs = "".join(f"<td class=n>{st.seconds.get(k, 0):.1f}</td>" for k in stages_seen)
        rows.append(
            f"<tr><td><b>{_e(st.composition)}</b><div class=small>{_e(', '.join(concepts_of.get(st.composition, [])))}</div></td>"
            f"<td class=n>{st.planned}</td><td class=n>{st.kept}</td><td class=n>{st.dropped}</td><td class=n>{st.failed}</td>"
            f"<td><div class=bar title='kept {st.kept}, dropped {st.dropped}, failed {st.failed}'>{bar}</div></td>{secs}</tr>"
        )
    add("<section><h2>Compositions</h2><table><thead><tr><th>composition</th><th>planned</th><th>kept</th>"
        "<th>dropped</th><th>failed</th><th>verdicts</th>"
        + "".join(f"<th>{_e(k)} s</th>" for k in stages_seen) + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></section>")

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
    crow = []
    for cid in sorted(per_concept):
        c = per_concept[cid]
        pics = "".join(_img(photo_thumbs[u], cid, "photo") for u in sorted(concept_photos[cid]))
        crow.append(f"<tr><td><b>{_e(cid)}</b><div class=small><code>{_e(tokens[cid])}</code></div></td><td class=pics>{pics}</td>"
                    f"<td class=n>{sum(1 for k in c if k.startswith('c:'))}</td><td class=n>{c['samples']}</td>"
                    f"<td class=n>{c['kept']}</td><td class=n>{_pct(c['kept'], c['samples'])}</td></tr>")
    add("<section><h2>Concepts</h2><table><thead><tr><th>concept</th><th>source photos</th><th>compositions</th>"
        "<th>samples</th><th>kept</th><th>keep rate</th></tr></thead><tbody>" + "".join(crow) + "</tbody></table></section>")

    # Drop reasons (the first reason of each dropped or failed sample, as the manifest counts them).
    reasons: Counter = Counter()
    by_comp: dict[str, Counter] = defaultdict(Counter)
    for st in m.compositions:
        for code, n in st.reasons.items():
            reasons[code] += n
            by_comp[code][st.composition] += n
    if reasons:
        top = max(reasons.values())
        bars = "".join(
            f'<div class=rrow><span class=rcode>{_e(code)}</span><span class=rbar><i style="width:{100 * n / top:.1f}%"></i></span>'
            f'<span class=rn>{n}</span><span class=small>{_e(", ".join(f"{c} {k}" for c, k in by_comp[code].most_common()))}</span></div>'
            for code, n in reasons.most_common()
        )
    else:
        bars = "<p class=small>No sample was dropped or failed.</p>"
    add(f"<section><h2>Drop reasons</h2><div class=reasons>{bars}</div></section>")

    if changes is not None:
        add(_render_changes(changes))
    add(_render_agreement(agreement, min_rating))

    # Samples: drawn by the page's script from ROWS, one page at a time, filterable.
    comp_buttons = "".join(f'<button data-filter=composition data-value="{_e(c)}">{_e(c)}</button>' for c in comps)
    verdicts = [v for v in ("kept", "dropped", "failed") if any(s.status == v for s in samples)]
    verdict_buttons = "".join(f'<button data-filter=verdict data-value="{v}">{v}</button>' for v in verdicts)
    if added:
        verdict_buttons += '<button data-filter=verdict data-value="new">new</button>'
    add(
        "<section><h2>Samples</h2><div class=filters>"
        f'<div class=group><span>composition</span><button data-filter=composition data-value="" aria-pressed=true>all</button>{comp_buttons}</div>'
        f'<div class=group><span>verdict</span><button data-filter=verdict data-value="" aria-pressed=true>all</button>{verdict_buttons}</div>'
        f'<div class=group><span id=shown></span><button id=export>export decisions</button><a id=download hidden></a></div>'
        '<div class="group pager"><button id=prev>&larr; previous</button><span id=page></span><button id=next>next &rarr;</button></div>'
        "</div><div id=rows></div></section>"
    )
    photo_css = "".join(f".{photo_class[u]}{{background-image:url({t.src})}}" for u, t in photo_thumbs.items() if t.src)
    known = {s.id for s in samples}
    page_data = {
        "dataset": m.dataset,
        "version": m.version,
        "minRating": min_rating,
        # Only this version's ratings: a decisions file naming other samples is counted
        # (the agreement panel), never shipped, so the page's size follows the dataset's.
        "ratings": {k: v for k, v in ratings.items() if k in known},
        "pageSize": page_size,
        "compositions": comps,
    }
    # '<' escaped so no string in the data can close the script element.
    data_json = json.dumps(page_data).replace("<", "\\u003c")
    title = f"{m.dataset} {m.version}: dataset report"
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8>{GENERATOR}<title>{_e(title)}</title>"
        f'<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<style>{_CSS}{photo_css}</style></head><body>{''.join(parts)}"
        f"<script>const REPORT = {data_json};</script>"
    )


def _render_changes(changes: Changes) -> str:
    rows = "".join(
        f"<tr><td>{_e(r['composition'])}</td><td class=n>{r['planned_before']}</td><td class=n>{r['planned_now']}</td>"
        f"<td class=n>{r['kept_before']}</td><td class=n>{r['kept_now']}</td>"
        f"<td class=\"n delta {'up' if r['kept_now'] > r['kept_before'] else 'down' if r['kept_now'] < r['kept_before'] else ''}\">"
        f"{r['kept_now'] - r['kept_before']:+d}</td></tr>"
        for r in changes.per_composition
    )

    def ids(samples, extra=lambda s: "") -> str:
        if not samples:
            return "<span class=small>none</span>"
        return "<ul class=ids>" + "".join(f"<li><code>{_e(s.id)}</code> {_e(s.composition)}{extra(s)}</li>" for s in samples) + "</ul>"

    changed = "".join(
        f"<li><code>{_e(s.id)}</code> {_e(s.composition)}: {_e(old)} &rarr; <b>{_e(s.status)}</b></li>"
        for s, old in changes.verdict_changed
    )
    return (
        f"<section id=changes><h2>Changes since {_e(changes.old_label)}</h2>"
        f"<div class=stats>{_stat('samples added', len(changes.added))}{_stat('samples removed', len(changes.removed))}"
        f"{_stat('verdicts changed', len(changes.verdict_changed))}</div>"
        "<table><thead><tr><th>composition</th><th>planned before</th><th>planned now</th><th>kept before</th>"
        f"<th>kept now</th><th>kept change</th></tr></thead><tbody>{rows}</tbody></table>"
        f"<details><summary>added samples ({len(changes.added)})</summary>{ids(changes.added)}</details>"
        f"<details><summary>removed samples ({len(changes.removed)})</summary>{ids(changes.removed, lambda s: ' (' + s.status + ')')}</details>"
        f"<details><summary>verdicts changed ({len(changes.verdict_changed)})</summary><ul class=ids>{changed}</ul></details>"
        "</section>"
    )


def _render_agreement(agreement: Agreement | None, min_rating: int = HUMAN_KEEP_RATING) -> str:
    # Always rendered: the page recomputes it live as a reviewer rates samples.
    intro = (
        "From the decisions file; updated as you rate samples below."
        if agreement is not None
        else f"Rate samples below ({min_rating} or more keeps; the paper kept 4 and 5) to see how the automatic filter agrees."
    )
    if agreement is not None and agreement.unknown:
        intro += f" {agreement.unknown_line()}: left out of this page."
    return (
        f"<section id=agreement><h2>Filter agreement</h2><p class=small>{_e(intro)}</p>"
        "<div class=stats><div class=stat><div class=num id=ag-precision>-</div><div class=lbl>precision of keep</div></div>"
        "<div class=stat><div class=num id=ag-recall>-</div><div class=lbl>recall of keep</div></div>"
        "<div class=stat><div class=num id=ag-rated>0</div><div class=lbl>rated</div></div></div>"
        "<table class=confusion><thead><tr><th></th><th>people keep</th><th>people drop</th></tr></thead><tbody>"
        "<tr><th>filter keeps</th><td class=n id=ag-tp>0</td><td class=n id=ag-fp>0</td></tr>"
        "<tr><th>filter drops</th><td class=n id=ag-fn>0</td><td class=n id=ag-tn>0</td></tr></tbody></table></section>"
    )


def report_size(page: str) -> int:
    return len(page.encode())


# The page's style and behaviour live beside this module as plain files (package data).
_CSS = Path(__file__).with_name("report.css").read_text()
_JS = Path(__file__).with_name("report.js").read_text()
NEW_BADGE = '<span class="badge new">new</span>'
