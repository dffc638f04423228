"""The offline segmenter: a soft foreground mask from one product-style photo, no weights.

The real backend (SAM / a salient-object model) needs weights that a fresh machine does not
have; this one uses only OpenCV so that the factory runs anywhere. It is made for the
photos the factory is fed: one object, roughly centred, on a background that differs from
it in colour.

How it works (``OfflineSegmenter.segment``):

1. If the photo came with a real transparency channel, that alpha *is* the mask: it is
   only cleaned of specks. No guessing when the photographer already cut the object out.
2. Otherwise GrabCut runs on a shrunken copy (longer side ``grabcut_size``, by default
   2/5 of ``work_size``): its graph covers every pixel and is by far the slow part, and a
   mask needs far less resolution than the photo. A light bilateral filter first keeps
   fine texture (fur, wood grain) from blurring the two colour models into each other.
3. Seeds: "the border is background, the centre is the object", with two refinements.
   A saliency map (how unlike every side of the border a pixel's colour is) picks out a
   clearly salient central region if there is one; that region, plus the centre box minus
   border-coloured pixels, is "probably object" (a thin rocket in a big sky is not a box).
   And objects often touch an edge (a portrait's shoulders, a cup cut off by the frame),
   so the border is cut into pieces and only pieces that look like background become
   *definite* background; pieces the salient region reaches, whose colour stands out from
   the rest of the border, or that match the centre, are only *probable* background.
4. GrabCut runs for ``rounds`` rounds. After each, the mask is tidied (opening / closing,
   main component(s) near the centre kept, small holes filled); later rounds restart from
   that tidy shape (deep inside = object, far outside = background), so stray background
   blobs stop teaching the colour models and only the outline is left to settle.
5. The mask is brought to ``work_size`` through a smooth interpolation (no staircase of
   GrabCut pixels), where a guided filter steered by the photo moves the outline onto the
   photo's own edges; then to full size, cut at 0.5, and given a Gaussian feather.

An optional category hint (``segment(rgb, category="woman")``) swaps step 3's seeds for a
category prior where one is known:

- person words (``PERSON_WORDS``: person, woman, astronaut, ...): a frontal face is looked
  for (scikit-image's LBP cascade). The face box grown upward (hair, a hat) and a body
  widening below it down to the bottom edge are "probably person"; the face core, crown and
  neck are "surely person"; beside the head and the borders the body does not reach are
  background, but the bottom border never is (portraits are cut off by it). The component
  that holds the face is the one kept. No face found: the plain seeds are used.
- vehicle words (``VEHICLE_WORDS``: motorcycle, car, ...): the "probably object" box is
  widened to most of the lower frame (wheels, chrome and the engine are not salient against
  a garage), and the top and bottom borders are background (the floor is not the object).
- anything else, or None: the plain seeds, byte for byte.

When no foreground can be told apart (a flat or almost flat photo, or GrabCut finds
nothing sizeable) the result is an all-zero mask: the caller records "empty mask".
"""

from __future__ import annotations

import re

import numpy as np
import cv2

__all__ = ["OfflineSegmenter", "PERSON_WORDS", "VEHICLE_WORDS", "alpha_cutout", "clean_alpha"]

# Category words (any word of a multi-word category, singular or plural) that mean "a
# person": for these the segmenter looks for a face and seeds GrabCut from it.
PERSON_WORDS = frozenset(
    """person people human man men woman women boy boys girl girls child children kid kids
    baby babies toddler teenager teen adult lady ladies gentleman gentlemen guy guys
    astronaut astronauts portrait face selfie player athlete runner dancer soldier sailor
    officer admiral doctor nurse worker chef student teacher businessman businesswoman
    grandmother grandfather grandma grandpa mother father mom dad son daughter bride groom
    model actor actress singer""".split()
)

# Vehicles (a motorcycle, a car): wide, low objects standing on the ground, often with thin
# parts (spokes, chrome) that the saliency seeds miss; for these the "probably object" box is
# widened to most of the lower frame.
VEHICLE_WORDS = frozenset(
    """motorcycle motorcycles motorbike motorbikes bike bikes bicycle bicycles scooter
    scooters moped car cars truck trucks bus buses van tractor""".split()
)

# Frontal face detection: scikit-image's LBP cascade (the OpenCV one it ships). OpenCV 5
# wheels no longer bundle CascadeClassifier or the Haar cascade files, and one detector for
# every install keeps the masks the same everywhere. Faces are looked for on a copy whose
# longer side is _FACE_SIDE; the cascade's 24-pixel window makes the smallest face found
# 24/_FACE_SIDE of the photo's longer side.
_FACE_SIDE = 320
_face_cascade = None


def _category_words(category: str | None) -> set[str]:
    if not category:
        return set()
    return set(re.findall(r"[a-z]+", category.lower()))


def _detect_face(rgb: np.ndarray) -> tuple[float, float, float] | None:
    """(x, y, size) of the main frontal face as shares of the photo's longer side, or None.

    The largest detection wins; detections overlapping it (the cascade reports one face at
    a few neighbouring scales) are averaged in.
    """
    global _face_cascade
    if _face_cascade is None:
        from skimage.data import lbp_frontal_face_cascade_filename
        from skimage.feature import Cascade

        _face_cascade = Cascade(lbp_frontal_face_cascade_filename())
    h, w = rgb.shape[:2]
    scale = min(1.0, _FACE_SIDE / max(h, w))
    if scale < 1.0:
        rgb = cv2.resize(rgb, (max(8, round(w * scale)), max(8, round(h * scale))), interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    side = min(grey.shape)
    if side < 24:
        return None
    found = _face_cascade.detect_multi_scale(
        img=grey, scale_factor=1.2, step_ratio=1, min_size=(24, 24), max_size=(side, side)
    )
    if not found:
        return None
    boxes = np.array([(d["c"], d["r"], d["width"]) for d in found], np.float64)
    best = boxes[int(np.argmax(boxes[:, 2]))]
    # Same face: centres within half the best box's size of each other.
    near = np.hypot(
        (boxes[:, 0] + boxes[:, 2] / 2) - (best[0] + best[2] / 2),
        (boxes[:, 1] + boxes[:, 2] / 2) - (best[1] + best[2] / 2),
    ) < 0.5 * best[2]
    x, y, size = boxes[near].mean(axis=0)
    long_side = float(max(grey.shape))
    return x / long_side, y / long_side, size / long_side


def batch_categories(items: list, categories: list[str | None] | None) -> list[str | None]:
    """A segment batch's category per item (None when none given), checked for its length:
    every backend is called alike, whether or not it reads class words."""
    if categories is None:
        return [None] * len(items)
    if len(categories) != len(items):
        raise ValueError(f"got {len(categories)} categories for {len(items)} items")
    return list(categories)


def _check_rgb(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray):
        raise ValueError(f"rgb must be a numpy array, got {type(rgb).__name__}")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must have shape (H, W, 3), got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be uint8, got dtype {rgb.dtype} (shape {rgb.shape})")
    if rgb.shape[0] < 8 or rgb.shape[1] < 8:
        raise ValueError(f"rgb is too small to segment: shape {rgb.shape}, need at least 8x8")


def _check_alpha(alpha: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if not isinstance(alpha, np.ndarray):
        raise ValueError(f"alpha must be a numpy array, got {type(alpha).__name__}")
    if alpha.shape != hw:
        raise ValueError(f"alpha must have shape {hw} to match rgb, got shape {alpha.shape}")
    if not np.issubdtype(alpha.dtype, np.floating):
        raise ValueError(f"alpha must be a float array in [0, 1], got dtype {alpha.dtype}")
    a = np.nan_to_num(alpha.astype(np.float32, copy=False), nan=0.0)
    return np.clip(a, 0.0, 1.0)


def _ellipse(size: int) -> np.ndarray:
    size = max(1, int(size))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def _guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter with a grey guide, written with box filters.

    It keeps ``src`` smooth where the photo is flat and lets its transitions snap to the
    photo's edges: a soft edge that follows hair and rims better than a plain blur.
    """
    k = (2 * radius + 1, 2 * radius + 1)

    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, cv2.CV_32F, k, borderType=cv2.BORDER_REFLECT)

    mean_i = box(guide)
    mean_p = box(src)
    cov_ip = box(guide * src) - mean_i * mean_p
    var_i = box(guide * guide) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box(a) * guide + box(b)


def alpha_cutout(alpha: np.ndarray | None, hw: tuple[int, int], min_area: float = 0.005) -> np.ndarray | None:
    """The mask a photo's own transparency gives, or None when it has none to give.

    An alpha channel that is opaque everywhere carries no cut-out (many PNGs are saved with
    one by habit); only a real transparency is trusted as the mask, cleaned of specks. Every
    backend that takes photos with alpha uses this, so they agree on such photos.
    """
    if alpha is None:
        return None
    a = _check_alpha(alpha, hw)
    return clean_alpha(a, min_area) if float(a.min()) < 0.99 else None


def clean_alpha(a: np.ndarray, min_area: float = 0.005) -> np.ndarray:
    """Keep the given alpha, minus specks (dust, stray semi-transparent pixels); all zero
    when less than `min_area` of the photo is solid."""
    h, w = a.shape
    solid = (a >= 0.5).astype(np.uint8)
    if solid.sum() < min_area * h * w:
        return np.zeros((h, w), np.float32)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(solid, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.zeros(n, bool)
    keep[1:] = areas >= max(4, 0.002 * h * w)
    # Soft edge pixels (below 0.5) stay only next to a kept component.
    near = cv2.dilate(keep[labels].astype(np.uint8), _ellipse(5)).astype(bool)
    return np.where(near, a, 0.0).astype(np.float32)


class OfflineSegmenter:
    """Classical foreground extraction (GrabCut seeded from the border) into a soft mask.

    ``segment(rgb, alpha=None, category=None)`` takes an HxWx3 uint8 photo (and, when the
    photo had one, its HxW float32 alpha in [0, 1]; and optionally the concept's category
    word, which may bring a category prior: see the module docstring) and returns an HxW
    float32 mask in [0, 1], 1 on the object. Same input, same bytes out: OpenCV's RNG
    (used by GrabCut's k-means) is seeded before every call. An all-zero mask means "no
    object found"; only malformed input raises (``ValueError``).

    Options:
      work_size   longer side of the image the outline is refined on.
      rounds      GrabCut rounds, re-seeded from the tidied mask in between.
      feather     Gaussian sigma of the soft edge, in output pixels (0 = hard edge).
      iterations  GrabCut iterations in the first round (half as many in later ones).
      grabcut_size longer side of the image GrabCut runs on (default 2/5 of work_size).
      region_level share of the top saliency score a pixel needs to be in the salient region.
      box_level   pixels of the centre box below this share of the top score are left out
                  of the initial object (only when a salient region was found).
      odd_level   Lab distance above which a border piece "stands out" from the border.
      guided      snap the upsampled outline to the photo's edges with a guided filter.
      keep_ratio  other components are kept when at least this share of the main one.
      max_hole    holes up to this share of the object's area are filled; bigger ones
                  (the space inside a wheel, a handle's loop) stay open.
      min_area    below this share of the image the result counts as empty.
      min_contrast photos whose colour spread (Lab std) is below this are "flat": empty.
    """

    name = "offline"

    def __init__(
        self,
        work_size: int = 512,
        rounds: int = 2,
        feather: float = 2.0,
        *,
        iterations: int = 4,
        grabcut_size: int | None = None,
        region_level: float = 0.45,
        box_level: float = 0.2,
        odd_level: float = 30.0,
        guided: bool = True,
        keep_ratio: float = 0.2,
        max_hole: float = 0.08,
        min_area: float = 0.005,
        min_contrast: float = 3.0,
    ) -> None:
        if work_size < 32:
            raise ValueError(f"work_size must be at least 32, got {work_size}")
        if rounds < 1:
            raise ValueError(f"rounds must be at least 1, got {rounds}")
        if feather < 0:
            raise ValueError(f"feather must be >= 0, got {feather}")
        self.work_size = int(work_size)
        self.rounds = int(rounds)
        self.feather = float(feather)
        self.iterations = max(1, int(iterations))
        self.region_level = float(region_level)
        self.box_level = float(box_level)
        self.odd_level = float(odd_level)
        # GrabCut's graph is built over every pixel and is the slow part; it runs on a
        # smaller image than the outline is refined on (see _to_full).
        self.grabcut_size = int(grabcut_size) if grabcut_size else max(32, self.work_size * 2 // 5)
        self.guided = bool(guided)
        self.keep_ratio = float(keep_ratio)
        self.max_hole = float(max_hole)
        self.min_area = float(min_area)
        self.min_contrast = float(min_contrast)

    # ------------------------------------------------------------------ public

    def segment(
        self, rgb: np.ndarray, alpha: np.ndarray | None = None, category: str | None = None
    ) -> np.ndarray:
        _check_rgb(rgb)
        h, w = rgb.shape[:2]
        given = alpha_cutout(alpha, (h, w), self.min_area)
        if given is not None:
            return given

        small = self._shrink(rgb, self.grabcut_size)
        lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32)
        if float(lab.reshape(-1, 3).std(axis=0).max()) < self.min_contrast:
            return np.zeros((h, w), np.float32)  # flat photo: nothing to cut out

        # Edge-preserving smoothing first: at GrabCut size fine texture (fur, wood grain)
        # becomes pixel noise that makes both colour models overlap.
        seeds, anchor = self._category_seeds(category, rgb, small, lab)
        fg = self._grabcut(cv2.bilateralFilter(small, 5, 30, 5), lab, seeds, anchor)
        if fg is None:
            return np.zeros((h, w), np.float32)
        return self._to_full(fg, rgb)

    def segment_batch(
        self,
        items: list[tuple[np.ndarray, np.ndarray | None]],
        categories: list[str | None] | None = None,
    ) -> list[np.ndarray]:
        # GrabCut has no batched form; the batch call exists so that callers treat every
        # backend alike (the real ones batch on the GPU).
        categories = batch_categories(items, categories)
        return [self.segment(rgb, alpha, cat) for (rgb, alpha), cat in zip(items, categories)]

    # ------------------------------------------------------------------ steps

    def _category_seeds(
        self, category: str | None, rgb: np.ndarray, small: np.ndarray, lab: np.ndarray
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """GrabCut seeds (and an anchor the kept component must hold) from a category prior.

        (None, None) when the category brings none: the saliency seeds are used.
        """
        words = _category_words(category)
        if words & PERSON_WORDS:
            face = _detect_face(rgb)
            if face is not None:
                h, w = small.shape[:2]
                x, y, size = (v * max(h, w) for v in face)
                return self._person_seeds(h, w, x, y, size)
        elif words & VEHICLE_WORDS:
            h, w = small.shape[:2]
            seeds = self._seeds(lab)
            wide = np.zeros((h, w), bool)
            wide[int(0.25 * h) : int(0.9 * h), int(0.12 * w) : int(0.88 * w)] = True
            seeds[wide & (seeds != cv2.GC_BGD)] = cv2.GC_PR_FGD
            # The ground it stands on reaches the bottom edge and the sky or wall the top:
            # both borders are background (letting the bottom in brought the whole floor).
            band = max(2, round(0.03 * max(h, w)))
            seeds[:band] = cv2.GC_BGD
            seeds[h - band :] = cv2.GC_BGD
            return seeds, None
        return None, None

    @staticmethod
    def _person_seeds(h: int, w: int, fx: float, fy: float, fs: float) -> tuple[np.ndarray, np.ndarray]:
        """Seeds for a person whose face box is (fx, fy, fs) in GrabCut pixels.

        Head (the face box grown upward for hair or a hat) and a body that widens below it
        down to the bottom edge are "probably person"; the face core, the top of the head
        and the neck are "surely person". Beside the head, beyond about a face width, is
        surely background, as are the top border and the side borders outside the body:
        people are often cut off by the bottom edge (and a wide body by the sides), so
        neither is taken as background where the body reaches it.
        """
        mask = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
        cx = fx + fs / 2
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

        def ellipse(x0: float, y0: float, ax: float, ay: float) -> np.ndarray:
            return ((xx - x0) / ax) ** 2 + ((yy - y0) / ay) ** 2 <= 1.0

        head = ellipse(cx, fy + 0.25 * fs, 0.62 * fs, 0.88 * fs)
        # Body: a trapezoid from the neck (about a face wide) to the shoulders (about 2.8
        # face widths), then straight down to the bottom edge.
        t = np.clip((yy - (fy + 1.0 * fs)) / (0.9 * fs), 0.0, 1.0)
        half = 0.45 * fs + t * (1.4 * fs - 0.45 * fs)
        body = (yy >= fy + 0.9 * fs) & (np.abs(xx - cx) <= half)

        # Surely background: beside the head, and the borders the person does not reach.
        beside = (yy < fy + 0.9 * fs) & (np.abs(xx - cx) > 1.0 * fs)
        mask[beside] = cv2.GC_BGD
        band = max(2, round(0.03 * max(h, w)))
        edge = np.zeros((h, w), bool)
        edge[:band] = True
        edge[:, :band] = True
        edge[:, w - band :] = True
        mask[edge & ~head & ~body] = cv2.GC_BGD

        mask[head | body] = cv2.GC_PR_FGD
        core = ellipse(cx, fy + 0.55 * fs, 0.3 * fs, 0.4 * fs)  # eyes, nose, mouth
        crown = (np.abs(xx - cx) <= 0.25 * fs) & (yy >= fy - 0.3 * fs) & (yy <= fy + 0.2 * fs)
        neck = (np.abs(xx - cx) <= 0.2 * fs) & (yy >= fy + 1.05 * fs) & (yy <= fy + 1.5 * fs)
        sure = core | crown | neck
        mask[sure] = cv2.GC_FGD
        return mask, core

    def _shrink(self, rgb: np.ndarray, side: int) -> np.ndarray:
        h, w = rgb.shape[:2]
        scale = min(1.0, side / max(h, w))  # never enlarge: no detail to gain
        if scale == 1.0:
            return np.ascontiguousarray(rgb)
        size = (max(8, round(w * scale)), max(8, round(h * scale)))
        return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)

    def _saliency(self, lab: np.ndarray) -> np.ndarray:
        """How unlike the border each pixel's colour is, in Lab units.

        Each side of the border gets a few typical colours (k-means); a pixel's distance to
        a side is its distance to the nearest of them. The second smallest of the four
        distances is kept: an object touching one side still stands out against the other
        three, while a background colour seen on two sides or more does not.
        """
        h, w = lab.shape[:2]
        b = max(2, round(0.03 * max(h, w)))
        sides = [lab[:b], lab[h - b :], lab[:, :b], lab[:, w - b :]]
        dist = []
        for px in sides:
            centres = self._kmeans(px.reshape(-1, 3), 5)
            d = np.linalg.norm(lab[:, :, None, :] - centres[None, None], axis=3).min(axis=2)
            dist.append(d)
        sal = np.sort(np.stack(dist), axis=0)[1]
        # Colour edges are blends that match no cluster; a blur stops them lighting up.
        return cv2.GaussianBlur(sal, (0, 0), max(1.0, 0.01 * max(h, w)))

    @staticmethod
    def _kmeans(data: np.ndarray, k: int) -> np.ndarray:
        data = np.ascontiguousarray(data[:: max(1, len(data) // 3000)], np.float32)
        k = min(k, len(data))
        cv2.setRNGSeed(0)
        crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 10, 1.0)
        _, _, centres = cv2.kmeans(data, k, None, crit, 1, cv2.KMEANS_PP_CENTERS)
        return centres

    def _seeds(self, lab: np.ndarray) -> np.ndarray:
        """GrabCut's starting labels: border = background, salient centre = object."""
        h, w = lab.shape[:2]
        mask = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
        band = max(2, round(0.03 * max(h, w)))
        pieces = self._border_pieces(h, w, band)

        sal = self._saliency(lab)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        # A mild centre prior: product photos put the object in the middle.
        prior = np.exp(-(((xx / w - 0.5) / 0.45) ** 2 + ((yy / h - 0.5) / 0.45) ** 2))
        score = sal * prior
        region = self._salient_region(score, sal)

        # The centre box is "probably object". When a salient region shows where the
        # object is, box pixels that clearly look like the border (the table around a cup)
        # are left out: they would teach the object's colour model the background's colours.
        y0, y1, x0, x1 = int(0.2 * h), int(0.8 * h), int(0.2 * w), int(0.8 * w)
        box = np.zeros((h, w), bool)
        box[y0:y1, x0:x1] = True
        top = float(np.percentile(score, 99.5))
        if region is not None:
            box &= score > self.box_level * top
            box |= region
        mask[box] = cv2.GC_PR_FGD

        # Border pieces become definite background unless they look like part of an object
        # touching the edge: the salient region reaches them, their colour stands out from
        # the rest of the border, or it matches the centre better than the border.
        means = np.array([lab[sl].reshape(-1, 3).mean(axis=0) for sl in pieces])
        d = np.linalg.norm(means[:, None, :] - means[None, :, :], axis=2)
        odd = np.median(d, axis=1)
        cc = self._kmeans(lab[y0:y1, x0:x1][box[y0:y1, x0:x1]].reshape(-1, 3), 4) if box.any() else means[:1]
        to_centre = np.linalg.norm(means[:, None, :] - cc[None, :, :], axis=2).min(axis=1)
        to_border = np.sort(d, axis=1)[:, 1:4].mean(axis=1)  # its nearest peers
        for sl, o, tc, tb in zip(pieces, odd, to_centre, to_border):
            if region is None:
                # Nothing stands out from the border: the object likely fills the frame
                # (a close-up). Only pieces unlike every centre colour are surely background.
                object_like = tc < 20.0
            else:
                touched = region[sl].mean() > 0.15
                object_like = touched or o > self.odd_level or (tc < 0.6 * tb and tc < 12.0)
            mask[sl] = cv2.GC_PR_BGD if object_like else cv2.GC_BGD
        return mask

    def _salient_region(self, score: np.ndarray, sal: np.ndarray) -> np.ndarray | None:
        """The clearly salient, central part of the photo, or None if there is none."""
        h, w = score.shape
        top = float(np.percentile(score, 99.5))
        if top < 15.0:  # nothing differs from the border by a visible colour step
            return None
        s8 = np.clip(score * (255.0 / top), 0, 255).astype(np.uint8)
        t, _ = cv2.threshold(s8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        region = (s8 > max(t, self.region_level * 255)).astype(np.uint8)
        k = max(3, round(0.015 * max(h, w)) | 1)
        region = cv2.morphologyEx(region, cv2.MORPH_OPEN, _ellipse(k))
        region = self._main_components(region).astype(bool)
        share = region.mean()
        if not 0.01 <= share <= 0.75:
            return None
        # It must really stand out: far more unlike the border than the rest is.
        inside, outside = float(sal[region].mean()), float(sal[~region].mean())
        if inside < 2.0 * outside:
            return None
        return region

    @staticmethod
    def _border_pieces(h: int, w: int, band: int, n: int = 8) -> list[tuple[slice, slice]]:
        pieces = []
        for i in range(n):
            xs = slice(i * w // n, (i + 1) * w // n)
            ys = slice(i * h // n, (i + 1) * h // n)
            pieces.append((slice(0, band), xs))  # top
            pieces.append((slice(h - band, h), xs))  # bottom
            pieces.append((ys, slice(0, band)))  # left
            pieces.append((ys, slice(w - band, w)))  # right
        return pieces

    def _grabcut(
        self,
        small: np.ndarray,
        lab: np.ndarray,
        seeds: np.ndarray | None = None,
        anchor: np.ndarray | None = None,
    ) -> np.ndarray | None:
        h, w = small.shape[:2]
        if seeds is None:
            seeds = self._seeds(lab)
        mask = seeds.copy()
        bgd = np.zeros((1, 65), np.float64)
        fgd = np.zeros((1, 65), np.float64)
        fg = None
        for r in range(self.rounds):
            cv2.setRNGSeed(0)  # GrabCut's GMM init uses k-means: fix it for repeatability
            # Later rounds keep the colour models learnt so far (GC_EVAL re-learns them
            # from the new labels without a fresh k-means start).
            mode = cv2.GC_INIT_WITH_MASK if r == 0 else cv2.GC_EVAL
            iters = self.iterations if r == 0 else max(1, self.iterations // 2)
            try:
                cv2.grabCut(small, mask, None, bgd, fgd, iters, mode)
            except cv2.error:
                # GrabCut refuses when one side has no samples at all (e.g. everything
                # ended up definite background): that is "no object", not a crash.
                return None
            fg = self._tidy((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD), anchor)
            if fg.sum() < self.min_area * h * w:
                return None
            if r + 1 < self.rounds:
                mask = self._reseed(fg, seeds)
        return fg

    def _reseed(self, fg: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        """Labels for the next round from the cleaned mask of this one.

        Deep inside the object = definite object; far outside = definite background; a
        band around the outline stays open, so the next round only has to settle the edge.
        """
        h, w = fg.shape
        r = max(3, round(0.04 * max(h, w)))
        fg8 = fg.astype(np.uint8)
        inner = cv2.erode(fg8, _ellipse(2 * r + 1)).astype(bool)
        outer = cv2.dilate(fg8, _ellipse(4 * r + 1)).astype(bool)
        mask = np.where(fg, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
        mask[inner] = cv2.GC_FGD
        mask[~outer] = cv2.GC_BGD
        mask[(seeds == cv2.GC_BGD) & ~inner] = cv2.GC_BGD
        mask[seeds == cv2.GC_FGD] = cv2.GC_FGD  # a category prior's sure object stays so
        return mask

    def _tidy(self, fg: np.ndarray, anchor: np.ndarray | None = None) -> np.ndarray:
        """Opening, closing, main component(s), small holes filled."""
        h, w = fg.shape
        k = max(3, round(0.008 * max(h, w)) | 1)
        m = fg.astype(np.uint8)
        m = cv2.morphologyEx(m, cv2.MORPH_OPEN, _ellipse(k))
        m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, _ellipse(k))
        m = self._main_components(m, anchor)
        return self._fill_holes(m).astype(bool)

    def _main_components(self, m: np.ndarray, anchor: np.ndarray | None = None) -> np.ndarray:
        n, labels, stats, cents = cv2.connectedComponentsWithStats(m, connectivity=8)
        if n <= 1:
            return m
        if anchor is not None:
            # A category prior knows where the object is (a person's face): the component
            # holding it is the object, whatever its size or place.
            hits = np.bincount(labels[anchor], minlength=n)
            hits[0] = 0
            if hits.max() > 0:
                return (labels == int(np.argmax(hits))).astype(np.uint8)
        h, w = m.shape
        areas = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
        # Distance of each component's centroid from the centre, in half-diagonals: a big
        # blob in the middle is the object, one of equal size in a corner is likelier to
        # be a piece of background GrabCut could not explain.
        off = np.hypot((cents[1:, 0] - w / 2) / (w / 2), (cents[1:, 1] - h / 2) / (h / 2)) / np.sqrt(2)
        score = areas * np.exp(-2.0 * off**2)
        best = int(np.argmax(score))
        keep = score >= self.keep_ratio * score[best]
        keep[best] = True
        lut = np.zeros(n, np.uint8)
        lut[1:][keep] = 1
        return lut[labels]

    def _fill_holes(self, m: np.ndarray) -> np.ndarray:
        inv = (m == 0).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(inv, connectivity=4)
        if n <= 1:
            return m
        h, w = m.shape
        x, y = stats[1:, cv2.CC_STAT_LEFT], stats[1:, cv2.CC_STAT_TOP]
        bw, bh = stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT]
        touches = (x == 0) | (y == 0) | (x + bw == w) | (y + bh == h)
        small = stats[1:, cv2.CC_STAT_AREA] <= self.max_hole * max(1, int(m.sum()))
        fill = np.zeros(n, bool)
        fill[1:] = ~touches & small  # a hole is background the object encloses
        out = m.copy()
        out[fill[labels]] = 1
        return out

    def _to_full(self, fg: np.ndarray, rgb: np.ndarray) -> np.ndarray:
        """GrabCut-size binary mask -> full-size soft mask.

        At work size a guided filter, steered by the photo, moves the outline onto the
        photo's edges (GrabCut ran on a coarser grid); the result is cut at 0.5 again so
        that the feather below is the only softness, the same for every photo.
        """
        h, w = rgb.shape[:2]
        work = self._shrink(rgb, self.work_size)
        wh, ww = work.shape[:2]
        # Blur a little, interpolate, (cut at 0.5): a smooth outline instead of a
        # staircase of GrabCut-size pixels.
        soft = cv2.GaussianBlur(fg.astype(np.float32), (0, 0), 0.8)
        soft = cv2.resize(soft, (ww, wh), interpolation=cv2.INTER_LINEAR)
        if self.guided:
            grey = cv2.cvtColor(work, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
            radius = max(2, round(max(wh, ww) / 128))
            soft = _guided_filter(grey, soft, radius, 2e-3)
        if (wh, ww) != (h, w):
            soft = cv2.resize(soft, (w, h), interpolation=cv2.INTER_LINEAR)
        mask = (soft >= 0.5).astype(np.float32)
        if self.feather > 0:
            mask = cv2.GaussianBlur(mask, (0, 0), self.feather)
        return np.clip(mask, 0.0, 1.0).astype(np.float32)
