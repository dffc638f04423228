"""Real background photos: the canvas a sample stands on, where its ground is, its light.

The paper's repaint starts from a real photo per scene, slightly blurred, with the objects
pasted over it (PAPER-NOTES "Background repainting"). What planning, compositing and both
repainters need from such a photo is here, in one place:

- `cover_crop`: the photo scaled to cover the square canvas and cropped about its centre
  (the reference code stretched it to 1024x1024; a stretched lawn still reads as a lawn, a
  stretched room does not);
- `soften`: the paper's slight blur (a Gaussian of radius 1 at 1024 px);
- `estimate_ground`: where the ground is, per column band: the floor, lawn, path or table
  top that objects may stand on. The bottom rows of a photo of a place are its ground; the
  ground is what looks like them and reaches them: a colour model (k-means in Lab) of the
  bottom strip, the pixels close to it that connect to the bottom edge, and per column
  the top of the unbroken run from the bottom. Where the far ground ends (`horizon`) sets
  the perspective: an object standing there is smallest (`depth_scale`). A recipe may give
  the ground line itself (`ground_from_hint`) for a photo the estimate gets wrong;
- `light_side`: which side the light comes from (the brighter side of the upper half), so
  every object of an image casts its shadow the same way.
All of it is numpy and OpenCV on a small copy: milliseconds per photo.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from gen4gen.infra.storage import read_bytes, read_photo

GROUND_BANDS = 32  # column bands the ground line is kept in (a plan record stays small)
WORK_SIDE = 128  # the estimate runs on a copy this size
BOTTOM_STRIP = 0.08  # share of the height at the bottom taken as surely ground
TOP_STRIP = 0.15  # ... and at the top as surely not (sky, wall, ceiling)
EDGE_LEVEL = 24.0  # a vertical step in L (Sobel, 128 px copy) stronger than across: an edge
CLUSTERS = 5  # colours of the ground model
ALIKE = 10.0  # Lab units (8-bit): a bottom strip this close to the top's colours is not told apart
AMBIGUOUS_EDGE = 4.0  # mean horizontal-edge strength of a row that counts as the floor's line
# The far end of the ground stays within these shares: photos of places are taken from eye
# height, so ground that seems to reach above 40% from the top is a wall or a sky like it.
MIN_HORIZON, MAX_HORIZON = 0.4, 0.9
# Nearest objects are drawn at full size; the farthest at this share of it. Farther than
# that an object would be a speck beside the others (the paper's ratio floor is 0.4 of the
# largest object, and sizes multiply).
FARTHEST_SCALE = 0.6


@dataclass(frozen=True)
class Ground:
    """Where the ground is on a square canvas of side `side`: per column band its first
    row (`tops`), and the row where the far ground ends (`horizon`)."""

    side: int
    tops: tuple[int, ...]
    horizon: int

    def top_at(self, x0: float, x1: float) -> int:
        """The lowest (largest) ground top over columns x0..x1: an object's whole base must
        stand on ground, so the band where the ground starts latest decides."""
        n = len(self.tops)
        a = int(np.clip(np.floor(x0 / self.side * n), 0, n - 1))
        b = int(np.clip(np.ceil(x1 / self.side * n) - 1, a, n - 1))
        return max(self.tops[a : b + 1])

    def depth_scale(self, bottom: float) -> float:
        """An object's size at base row `bottom` relative to one standing at the canvas's
        bottom edge: a camera over a flat ground sees sizes fall linearly to zero at the
        vanishing line. That line lies above the far end of the ground (`horizon`), where
        the scale is FARTHEST_SCALE."""
        span = max(1.0, self.side - self.horizon)
        vanish = self.horizon - span * FARTHEST_SCALE / (1.0 - FARTHEST_SCALE)
        return float(np.clip((bottom - vanish) / (self.side - vanish), 0.05, 1.0))


def cover_crop(rgb: np.ndarray, side: int) -> np.ndarray:
    """The photo scaled to cover a side x side canvas, cropped about its centre."""
    h, w = rgb.shape[:2]
    scale = side / min(h, w)
    nw, nh = max(side, round(w * scale)), max(side, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    big = cv2.resize(rgb, (nw, nh), interpolation=interp)
    x, y = (nw - side) // 2, (nh - side) // 2
    return np.ascontiguousarray(big[y : y + side, x : x + side])


def read_view(uri: str, side: int, sha256: str | None = None) -> np.ndarray:
    """A background photo (bounded, checked read: infra/storage.py) as a side x side canvas,
    read-only. With the photo's `sha256` (a plan records it) it is decoded once per process
    for compositing, repainting and filtering alike: the same few photos serve every sample,
    and a photo changed since keeps no stale view (its digest is another key)."""
    if sha256 is None:
        return _frozen(cover_crop(read_photo(uri), side))
    return _cached_view(uri, side, sha256)


@lru_cache(maxsize=16)  # 16 views of 1024 px: 48 MB at most
def _cached_view(uri: str, side: int, sha256: str) -> np.ndarray:
    return _frozen(cover_crop(read_photo(uri), side))


def _frozen(view: np.ndarray) -> np.ndarray:
    view.setflags(write=False)  # shared between stages: nobody may paint on it
    return view


MAX_SOURCES_BYTES = 2**20  # an attribution file is small


def attribution(photo: str) -> str | None:
    """Where a background photo comes from and its licence, from a `SOURCES.csv` beside it or
    in the folder above (columns `file`, `licence`, `author_attribution`, `source_repo`,
    `source_path`, as ../shared/backgrounds/ has them; `file` relative to that folder)."""
    folder, name = photo.rsplit("/", 1)
    for where, rel in ((folder, name), (folder.rsplit("/", 1)[0], f"{folder.rsplit('/', 1)[-1]}/{name}")):
        row = _sources(where).get(rel)
        if row is not None:
            parts = [row.get("licence"), row.get("author_attribution"),
                     "/".join(filter(None, (row.get("source_repo"), row.get("source_path"))))]
            return "; ".join(p.strip() for p in parts if p and p.strip())
    return None


@lru_cache(maxsize=256)
def _sources(folder: str) -> dict[str, dict]:
    """A folder's SOURCES.csv by its `file` column (read once per process); {} when absent."""
    import csv
    import io

    try:
        text = read_bytes(f"{folder}/SOURCES.csv", limit=MAX_SOURCES_BYTES).decode("utf-8", "replace")
    except Exception:  # none there, or unreadable: no attribution from it
        return {}
    return {row["file"]: row for row in csv.DictReader(io.StringIO(text)) if row.get("file")}


def soften(rgb: np.ndarray, radius: float = 1.0) -> np.ndarray:
    """The paper's slight blur: a Gaussian of `radius` pixels at 1024, scaled to the canvas."""
    if radius <= 0:
        return rgb
    sigma = radius * rgb.shape[0] / 1024.0
    return cv2.GaussianBlur(rgb, (0, 0), max(0.3, sigma))


def estimate_ground(canvas_rgb: np.ndarray) -> Ground:
    """Where the ground is in a square background canvas (module docstring)."""
    side = canvas_rgb.shape[0]
    small = cv2.resize(canvas_rgb, (WORK_SIDE, WORK_SIDE), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(cv2.GaussianBlur(small, (0, 0), 1.0), cv2.COLOR_RGB2LAB).astype(np.float32)
    n = WORK_SIDE
    bottom = _colours(lab[int(n * (1 - BOTTOM_STRIP)) :].reshape(-1, 3))
    top = _colours(lab[: int(n * TOP_STRIP)].reshape(-1, 3))
    d_bottom, tol = _distance(lab, bottom)
    d_top, _ = _distance(lab, top)
    # "Like the bottom": within the strip's own colour spread of one of its colours (a
    # textured lawn spreads wider than a plain floor), never tighter than 16 Lab units, and
    # nearer the bottom's colours than the top's (a white wall over a pale floor is the wall).
    like = ((d_bottom <= tol) & (d_bottom < d_top)).astype(np.uint8)
    # A long horizontal edge (a floor meeting a wall, a table's far edge) ends the ground
    # even where both sides are alike in colour.
    light = lab[..., 0]
    edge = np.abs(cv2.Sobel(light, cv2.CV_32F, 0, 1, ksize=3)) - np.abs(cv2.Sobel(light, cv2.CV_32F, 1, 0, ksize=3))
    # The ground's own texture (planks, furrows) has such edges too: an edge must stand out
    # from the bottom strip's own vertical steps.
    own = float(np.abs(cv2.Sobel(light, cv2.CV_32F, 0, 1, ksize=3))[int(n * (1 - BOTTOM_STRIP)) :].mean())
    level = max(EDGE_LEVEL, 3.0 * own)
    barrier = cv2.morphologyEx((edge > level).astype(np.uint8), cv2.MORPH_OPEN, np.ones((1, 7), np.uint8))
    like[barrier > 0] = 0
    like = cv2.morphologyEx(like, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    like[int(n * (1 - BOTTOM_STRIP)) :] = 1
    _, comp = cv2.connectedComponents(like, connectivity=4)
    ground = np.isin(comp, np.unique(comp[-1][like[-1] > 0])) & (like > 0)
    if _alike(lab[int(n * (1 - BOTTOM_STRIP)) :].reshape(-1, 3), top):
        # Top and bottom alike in colour (a white floor under a white wall): colour says
        # nothing; the strongest long horizontal edge in the lower half is where the floor
        # meets the wall, else the lower quarter is taken as floor.
        profile = np.clip(edge, 0, None).mean(axis=1)
        lo, hi = n // 2, int(n * (1 - BOTTOM_STRIP))
        row = lo + int(np.argmax(profile[lo:hi]))
        share = row / n if profile[row] > AMBIGUOUS_EDGE else 0.75
        return _ground(np.full(GROUND_BANDS, share), side)
    # Per column: the top of the unbroken run of ground from the bottom (gaps of a few rows,
    # a twig or a crack, do not end it).
    closed = cv2.morphologyEx(ground.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 1), np.uint8)) > 0
    run = np.cumprod(closed[::-1], axis=0)[::-1]  # 1 where every row below is ground
    tops = n - run.sum(axis=0)
    tops = cv2.medianBlur(tops.astype(np.uint8).reshape(1, -1), 5).ravel().astype(np.float32)
    bands = tops.reshape(GROUND_BANDS, -1).max(axis=1) if n % GROUND_BANDS == 0 else np.interp(
        np.linspace(0, n - 1, GROUND_BANDS), np.arange(n), tops)
    return _ground(bands / n, side)


def _colours(pixels: np.ndarray) -> tuple[np.ndarray, float]:
    """A few Lab colours summing up a strip (k-means), and how far its pixels lie from them."""
    k = min(CLUSTERS, len(pixels))
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    cv2.setRNGSeed(0)  # k-means starts from random centres: the same photo, the same ground
    _, labels, centres = cv2.kmeans(pixels, k, None, criteria, 3, cv2.KMEANS_PP_CENTERS)
    spread = np.sqrt(((pixels - centres[labels[:, 0]]) ** 2).sum(1))
    return centres, max(16.0, float(np.percentile(spread, 90)) * 2.5)


def _alike(bottom: np.ndarray, top: np.ndarray) -> bool:
    """Whether most of the bottom strip's pixels have a close match among the top strip's
    colours (Lab units): then the ground looks like the wall or the sky above it."""
    return bool(np.median(_distance(bottom[None], top)[0]) < ALIKE)


def _distance(lab: np.ndarray, model: tuple[np.ndarray, float]) -> tuple[np.ndarray, float]:
    centres, tol = model
    return np.sqrt(((lab[:, :, None, :] - centres[None, None]) ** 2).sum(-1)).min(-1), tol


def ground_from_hint(share: float, side: int, photo_hw: tuple[int, int]) -> Ground:
    """A flat ground line given by the recipe as a share of the photo's height, moved into
    the canvas the photo was cover-cropped to."""
    h, w = photo_hw
    scale = side / min(h, w)
    row = share * h * scale - (round(h * scale) - side) // 2
    return _ground(np.full(GROUND_BANDS, row / side), side)


def _ground(shares: np.ndarray, side: int) -> Ground:
    shares = np.clip(shares, 0.0, 1.0 - BOTTOM_STRIP)
    # The far end of the ground: most columns reach it (a tree trunk's band is ignored).
    horizon = float(np.clip(np.percentile(shares, 25), MIN_HORIZON, MAX_HORIZON))
    tops = tuple(int(round(max(s, horizon) * side)) for s in shares)
    return Ground(side, tops, int(round(horizon * side)))


def light_side(canvas_rgb: np.ndarray, horizon: int) -> float:
    """-1 (light from the left) .. 1 (from the right): the brighter half of the upper part of
    the photo, where the light and what it falls on are. 0 when the two are alike."""
    up = canvas_rgb[: max(1, horizon)]
    grey = cv2.cvtColor(up, cv2.COLOR_RGB2GRAY).astype(np.float32)
    half = grey.shape[1] // 2
    left, right = float(grey[:, :half].mean()), float(grey[:, half:].mean())
    if left + right <= 0:
        return 0.0
    return float(np.clip((right - left) / (right + left) * 6.0, -1.0, 1.0))


def scene_words(folder: str) -> str:
    """Scene words from a scene folder's name, as the reference code's folders give them
    (`garden` -> 'in a garden', `living-room` -> 'in the living room'); a name that already
    starts with a preposition is kept ('on_the_grass' -> 'on the grass')."""
    words = " ".join(folder.replace("_", " ").replace("-", " ").split()).lower()
    if not words:
        return "in a room"
    if words.split()[0] in _PREPOSITIONS:
        return words
    last = words.split()[-1]
    if last in _ROOMS:
        return f"in the {words}"
    prep = "on" if last in _SURFACES else "in"
    article = "an" if words[0] in "aeiou" else "a"
    return f"{prep} {article} {words}"


_PREPOSITIONS = {"in", "on", "at", "by", "under", "beside", "near", "inside", "outside"}
# Rooms of a home take "the" ("in the living room", the reference code's own example).
_ROOMS = {"room", "kitchen", "bedroom", "bathroom", "hallway", "attic", "garage", "basement"}
# Places one stands or puts things on rather than in.
_SURFACES = {"beach", "street", "road", "table", "desk", "floor", "lawn", "grass", "dock", "pier",
             "shelf", "counter", "sofa", "couch", "bed", "sidewalk", "path", "walkway", "rug", "carpet",
             "bench", "windowsill", "balcony", "terrace", "patio", "deck", "rock", "rocks", "snow", "sand"}
