"""The offline repainter: paints the planned scene behind the objects without weights or GPU.

The real backend inpaints the background with SDXL; this one paints it procedurally so the
factory produces sensible, good-looking images on any machine:
- an upper part (a wall or a sky with soft clouds, optionally a brick wall) and a ground
  part below the horizon, each a gradient between the scene's two colours;
- the ground carries a greyscale texture (skimage's grass / gravel / brick photos, or
  procedural wood planks or a plain mottled floor) mapped through a ground-plane
  perspective, so it is coarse near the bottom and fine towards the horizon (mip-mapped,
  so the far ground does not shimmer);
- a scene detail at the horizon (a skirting board, a hedge, hills, dunes, the sea, a
  sidewalk) that tells the scenes apart at a glance;
- a soft contact shadow under each object, so objects stand rather than float;
- depth of field (the wall and far ground blurrier than the near ground; the paper also
  starts from a slightly blurred background), a light colour bounce from the objects onto
  the background next to them, and mild grain so nothing is flat.
Only the background is painted: the result is mask * composite + (1 - mask) * background,
and wherever the mask is 1 the composite's pixels come back bit for bit.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np

from gen4gen.models.backgrounds import soften
from gen4gen.models.contracts import Backdrop
from gen4gen.models.scenes import Scene
from gen4gen.models.scenes import scene as scene_of

_TEX = 512  # side of every texture tile (skimage's textures are 512x512)
_LEVELS = 7  # mip levels 512 .. 8

_cache: dict[str, list[np.ndarray]] = {}
_cache_lock = threading.Lock()  # the default Prefect task runner is a thread pool


# --------------------------------------------------------------------------- textures


def _smooth_tileable(t: np.ndarray) -> np.ndarray:
    """Make a photo texture wrap without seams: cross-fade it with a half-rolled copy.

    Done per axis so the copies' own seams always fall where their weight is 0. The blend
    is divided by sqrt(w^2 + (1-w)^2) so the contrast does not dip where the copies mix.
    """
    n = t.shape[0]
    w = np.sin(np.pi * (np.arange(n, dtype=np.float32) + 0.5) / n) ** 2
    norm = 1.0 / np.sqrt(w**2 + (1 - w) ** 2)
    for axis in (1, 0):
        r = np.roll(t, n // 2, axis=axis)
        wa = w[None, :] if axis == 1 else w[:, None]
        na = norm[None, :] if axis == 1 else norm[:, None]
        t = (wa * t + (1 - wa) * r) * na
    return t


def _normalise(t: np.ndarray) -> np.ndarray:
    """Zero mean, unit spread, clipped so a few specks cannot dominate the tint."""
    t = t.astype(np.float32)
    t -= t.mean()
    t /= t.std() + 1e-6
    return np.clip(t, -3.0, 3.0)


def _pyramid(t: np.ndarray) -> list[np.ndarray]:
    """Mip levels of a tileable texture; each level is filtered with wrap-around borders."""
    levels = [t.astype(np.float32)]
    for _ in range(_LEVELS - 1):
        cur = levels[-1]
        n = cur.shape[0]
        big = np.tile(cur, (3, 3))  # pyrDown has no wrap border; tile and crop instead
        levels.append(np.ascontiguousarray(cv2.pyrDown(big)[n // 2 : n // 2 + n // 2, n // 2 : n // 2 + n // 2]))
    return levels


def _photo_texture(name: str) -> list[np.ndarray]:
    """skimage's grass / gravel / brick photo as a tileable, normalised mip pyramid (cached)."""
    with _cache_lock:
        if name in _cache:
            return _cache[name]
    import skimage.data  # imported lazily: only this path needs it

    img = getattr(skimage.data, name)().astype(np.float32)
    # Remove the photo's own lighting falloff; the scene supplies the large-scale shading.
    img -= cv2.GaussianBlur(img, (0, 0), 24, borderType=cv2.BORDER_REFLECT)
    if name == "brick":
        # A cross-fade would ghost the mortar lines; mirrored bricks still read as bricks,
        # so tile by reflection (period 2x) and scale back to the common tile size.
        img = np.block([[img, img[:, ::-1]], [img[::-1], img[::-1, ::-1]]])
        img = cv2.resize(img, (_TEX, _TEX), interpolation=cv2.INTER_AREA)
        tile = _normalise(img)
    else:
        tile = _normalise(_smooth_tileable(_normalise(img)))
    pyr = _pyramid(tile)
    with _cache_lock:
        _cache.setdefault(name, pyr)
        return _cache[name]


def _periodic_noise(rng: np.random.Generator, n: int, scale: float, aspect: float = 1.0) -> np.ndarray:
    """Smooth noise that wraps around (white noise low-passed in the Fourier domain).

    scale: feature size in pixels across x; aspect > 1 stretches features along y.
    """
    white = rng.standard_normal((n, n)).astype(np.float32)
    fy = np.fft.fftfreq(n)[:, None] * aspect
    fx = np.fft.rfftfreq(n)[None, :]
    envelope = np.exp(-((fx**2 + fy**2) * (scale**2) * 2.0))
    out = np.fft.irfft2(np.fft.rfft2(white) * envelope, s=(n, n)).astype(np.float32)
    return _normalise(out)


def _wood_texture(rng: np.random.Generator) -> np.ndarray:
    """Planks running along the texture's v axis, tileable; greyscale, zero mean.

    Each plank has its own tone and grain phase, planks are separated by dark gaps, and
    butt joints sit at random lengths along each plank, as on a real floor.
    """
    n = _TEX
    planks = 8
    pw = n // planks
    v, u = np.mgrid[0:n, 0:n].astype(np.float32)
    idx = (u // pw).astype(np.int32)
    local = u - idx * pw
    tone = rng.normal(0.0, 0.55, planks).astype(np.float32)[idx]
    phase = rng.uniform(0, 1, planks).astype(np.float32)[idx]
    warp = _periodic_noise(rng, n, 10.0, aspect=8.0)  # wobble that varies slowly along v
    grain = np.sin(2 * np.pi * (local / 9.0 + phase + 0.6 * warp))
    fibres = _periodic_noise(rng, n, 1.0, aspect=12.0)
    t = tone + 0.35 * grain + 0.25 * fibres
    # Gaps between planks.
    gap = np.minimum(local, pw - local)
    t -= 2.2 * np.exp(-(gap**2) / 1.2)
    # Butt joints: each plank is cut once per tile at its own offset.
    cut = rng.integers(0, n, planks).astype(np.float32)[idx]
    dj = np.abs(((v - cut + n / 2) % n) - n / 2)
    t -= 1.6 * np.exp(-(dj**2) / 1.0)
    return _normalise(t)


def _plain_texture(rng: np.random.Generator) -> np.ndarray:
    """A quiet floor: faint mottling plus a fine carpet-like grain."""
    n = _TEX
    t = 0.4 * _periodic_noise(rng, n, 60.0) + 0.6 * _periodic_noise(rng, n, 1.0)
    return _normalise(t)


def _sand_texture(rng: np.random.Generator, ripples: bool) -> np.ndarray:
    """Fine sand grain, with wind ripples across the view for a desert."""
    n = _TEX
    t = _periodic_noise(rng, n, 0.8) + 0.5 * _periodic_noise(rng, n, 6.0)
    if ripples:
        v = np.arange(n, dtype=np.float32)[:, None]
        warp = _periodic_noise(rng, n, 40.0, aspect=0.5)
        t = t + 1.4 * np.sin(2 * np.pi * (v / 16.0 + 0.5 * warp))  # 32 ripples per tile
    return _normalise(t)


# --------------------------------------------------------------------------- geometry


def _perspective_sample(pyr: list[np.ndarray], d: np.ndarray, xs: np.ndarray, near: float, texel: float,
                        u0: float, v0: float) -> np.ndarray:
    """Sample a tiled texture lying on a plane seen in perspective.

    d: distance in rows from the horizon (> 0) for each output row; near: that distance at
    the nearest row (where a texel spans `texel` pixels, the same across and along); xs:
    column offsets from the vanishing point. Returns (rows, cols) float32. The mip level
    follows the footprint of a pixel, so the far plane averages out instead of aliasing.
    """
    k = near / texel
    du = k / d  # texels per pixel across a row
    dv = k * near / d**2  # texels per pixel down the rows (foreshortened)
    level = np.clip(np.log2(np.maximum(np.sqrt(du * dv), 1.0)), 0, _LEVELS - 1).astype(np.float32)
    out = np.zeros((d.size, xs.size), np.float32)
    for j in range(_LEVELS):
        wj = np.clip(1.0 - np.abs(level - j), 0.0, 1.0)
        rows = np.nonzero(wj > 0)[0]
        if rows.size == 0:
            continue
        r0, r1 = rows[0], rows[-1] + 1
        tex = pyr[j]
        n = tex.shape[0]
        s = 1.0 / (2**j)
        # Wrap in float64 first: remap keeps coordinates in 16-bit fixed point.
        mu = np.mod((xs[None, :] * du[r0:r1, None] + u0) * s, n).astype(np.float32)
        mv = np.mod((k * near / d[r0:r1] + v0) * s, n).astype(np.float32)
        mv = np.broadcast_to(mv[:, None], mu.shape).astype(np.float32)
        sample = cv2.remap(tex, mu, mv, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
        out[r0:r1] += wj[r0:r1, None] * sample
    return out


def _ramp(a, b, t: np.ndarray) -> np.ndarray:
    """Colours a -> b along t in [0, 1]; t of shape (rows,) gives (rows, 1, 3)."""
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    return a + (b - a) * t[:, None, None]


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _ridge(rng: np.random.Generator, w: int, feature: float, octaves: int = 3) -> np.ndarray:
    """A 1-D smooth random profile in [-1, 1] for skylines (hills, hedges, dunes)."""
    prof = np.zeros(w, np.float32)
    amp = 1.0
    for o in range(octaves):
        cells = max(2, int(w / (feature / 2**o)) + 2)
        knots = rng.uniform(-1, 1, cells).astype(np.float32)
        prof += amp * cv2.resize(knots[None, :], (w, 1), interpolation=cv2.INTER_CUBIC)[0]
        amp *= 0.45
    return prof / max(1e-6, float(np.abs(prof).max()))


def _mix(dst: np.ndarray, colour, alpha: np.ndarray) -> None:
    """In place: dst = dst * (1 - alpha) + colour * alpha; alpha (rows, cols)."""
    a = alpha[..., None]
    dst *= 1 - a
    dst += a * np.asarray(colour, np.float32)


# --------------------------------------------------------------------------- objects


# How much of the ground's light each shadow takes (times twice `shadow`, 1 by default): a
# soft cast shadow, and the contact shadow right under the base where no light reaches.
CAST_SHADOW, CONTACT_SHADOW = 0.5, 0.85


@dataclass
class _Part:
    """One object of a composite: its silhouette on the canvas and where its base is."""

    canvas: tuple[int, int]
    silhouette: np.ndarray  # float32 canvas-sized, the object's mask inside its box
    base: int  # the lowest row of the object
    x0: int  # the base's extent (its lowest tenth)
    x1: int
    height: int


def _object_in_box(mask: np.ndarray, box: tuple[int, int, int, int]) -> _Part | None:
    x, y, bw, bh = (int(v) for v in box)
    h, w = mask.shape
    region = mask[max(0, y) : min(h, y + bh), max(0, x) : min(w, x + bw)]
    rows = np.nonzero((region >= 0.5).any(axis=1))[0]
    if rows.size == 0:
        return None
    top, bottom = int(rows[0]), int(rows[-1])
    low = region[max(top, bottom - max(1, (bottom - top) // 10)) : bottom + 1] >= 0.5
    cols = np.nonzero(low.any(axis=0))[0]
    silhouette = np.zeros((h, w), np.float32)
    silhouette[max(0, y) : min(h, y + bh), max(0, x) : min(w, x + bw)] = region
    return _Part((h, w), silhouette, max(0, y) + bottom, max(0, x) + int(cols[0]), max(0, x) + int(cols[-1]) + 1,
                 bottom - top + 1)


# --------------------------------------------------------------------------- repainter


@dataclass
class _Canvas:
    h: int
    w: int
    hy: int  # first ground row
    vx: float  # vanishing point's column: the ground and anything on it converge there


class OfflineRepainter:
    """Paints the scene behind the objects procedurally; the objects' pixels stay exact.

    Options (all keyword, with defaults tuned by eye at 1024x1024):
    blur: depth-of-field strength (Gaussian sigma in pixels at 1024 for the far wall;
        the near ground gets a third of it);
    shadow: darkness of the contact shadow under each object, 0 = none;
    noise: grain standard deviation in 8-bit levels;
    texture: contrast of the ground / wall textures, 1 = as tuned;
    harmonise: how much of the objects' colour bounces onto the background next to them;
    details: paint the per-scene horizon detail (skirting, hedge, hills, sea ...);
    clouds: paint clouds in sky scenes;
    photo_blur: on a background photo, its Gaussian blur radius in pixels at 1024 (the paper's 1);
    premultiplied: the composite's soft rims already hold mask * colour (objects pasted
        over black); blend with `composite + (1 - mask) * background` so the rims do not
        darken twice. Off: `mask * composite + (1 - mask) * background` (straight colour).
    """

    name = "offline"
    batch_size = 8  # no batched kernel: the chunk is painted image by image

    def __init__(
        self,
        blur: float = 2.0,
        shadow: float = 0.5,
        noise: float = 2.0,
        texture: float = 1.0,
        harmonise: float = 0.12,
        details: bool = True,
        clouds: bool = True,
        premultiplied: bool = False,
        photo_blur: float = 1.0,
    ):
        if blur < 0 or shadow < 0 or noise < 0 or texture < 0 or harmonise < 0:
            raise ValueError("blur, shadow, noise, texture and harmonise must be >= 0")
        self.blur = float(blur)
        self.shadow = float(min(shadow, 1.0))
        self.noise = float(noise)
        self.texture = float(texture)
        self.harmonise = float(min(harmonise, 1.0))
        self.details = bool(details)
        self.clouds = bool(clouds)
        self.premultiplied = bool(premultiplied)
        if photo_blur < 0:
            raise ValueError("photo_blur must be >= 0")
        self.photo_blur = float(photo_blur)

    # ------------------------------------------------------------------ public

    def repaint_batch(self, composites, masks, scenes, seeds, boxes, backdrops=None) -> list[np.ndarray]:
        backdrops = backdrops or [None] * len(composites)
        return [self.repaint(*args, backdrop=b) if b is not None else self.repaint(*args)
                for *args, b in zip(composites, masks, scenes, seeds, boxes, backdrops)]

    def on_photo(self, composite: np.ndarray, mask: np.ndarray, boxes: list[tuple[int, int, int, int]],
                 backdrop: Backdrop) -> np.ndarray:
        """The objects standing in a real background photo: the photo slightly blurred (the
        paper's radius 1), a soft shadow cast by each object away from the light and a dark
        contact shadow where it meets the ground, then the objects over it through their
        soft masks (their colours were drawn toward the photo's when composited)."""
        h, w = mask.shape
        photo = backdrop.image
        if photo.shape != (h, w, 3):
            raise ValueError(f"background {photo.shape} does not match the canvas {(h, w, 3)}")
        bg = soften(photo, self.photo_blur).astype(np.float32)
        if self.shadow > 0:
            shade = np.zeros((h, w), np.float32)
            for box in boxes:
                part = _object_in_box(mask, box)
                if part is None or part.base >= h - 2:
                    continue  # its base is out of the picture (a close-up the frame cut): no shadow in view
                shade = np.maximum(shade, self._cast_shadow(part, backdrop.light))
                shade = np.maximum(shade, self._contact_shadow(part))
            bg *= (1.0 - min(1.0, 2 * self.shadow) * shade)[..., None]
        m = mask[..., None]
        out = m * composite.astype(np.float32) + (1.0 - m) * bg
        out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
        solid = mask >= 1.0
        out[solid] = composite[solid]
        return out

    @staticmethod
    def _cast_shadow(part: "_Part", light: float) -> np.ndarray:
        """The object's silhouette laid on the ground: flipped about its base, flattened, and
        slanted away from the light; sharp at the base, softer and fainter farther out."""
        h, w = part.canvas
        squash, slant = 0.32, -0.9 * light
        yb = float(part.base)
        # dest = A @ src + t: y' = yb + (yb - y) * squash, x' = x + slant * (yb - y) * squash
        a = np.float32([[1.0, -slant * squash, slant * squash * yb], [0.0, -squash, yb * (1 + squash)]])
        flat = cv2.warpAffine(part.silhouette, a, (w, h), flags=cv2.INTER_LINEAR)
        soft = cv2.GaussianBlur(flat, (0, 0), max(1.0, 0.025 * part.height))
        rows = np.arange(h, dtype=np.float32)[:, None]
        fade = np.clip(1.0 - (rows - yb) / max(1.0, squash * part.height * 1.2), 0.0, 1.0)
        return CAST_SHADOW * soft * fade * (rows >= yb - 2)

    @staticmethod
    def _contact_shadow(part: "_Part") -> np.ndarray:
        """A dark, tight ellipse under the object's base, where no light reaches."""
        h, w = part.canvas
        cx, a = (part.x0 + part.x1) / 2.0, max(3.0, 0.55 * (part.x1 - part.x0))
        b = max(3.0, 0.14 * a)
        ys = np.arange(h, dtype=np.float32)[:, None] - (part.base - 0.2 * b)
        xs = np.arange(w, dtype=np.float32)[None, :] - cx
        return CONTACT_SHADOW * np.exp(-((xs / a) ** 2 + (ys / b) ** 2) * 1.2)

    def repaint(
        self,
        composite: np.ndarray,
        mask: np.ndarray,
        scene: str,
        seed: int,
        boxes: list[tuple[int, int, int, int]],
        backdrop: Backdrop | None = None,
    ) -> np.ndarray:
        """The composite with its background painted as `scene`, or standing in the
        `backdrop` photo; HxWx3 uint8."""
        mask = self._check(composite, mask, scene, seed, boxes)
        if backdrop is not None:
            return self.on_photo(composite, mask, boxes, backdrop)
        h, w = mask.shape
        sc = scene_of(scene)
        rng = np.random.default_rng(seed)
        bg = self.background(sc, h, w, rng, boxes)
        if self.harmonise > 0 and float(mask.max()) > 0:
            self._bounce(bg, composite, mask)
        if self.noise > 0:
            # Luminance grain, drawn at full size so it is sharp like a sensor's.
            grain = rng.standard_normal((h, w), dtype=np.float32) * self.noise
            bg += grain[..., None]
        m = mask[..., None]
        if self.premultiplied:
            out = composite.astype(np.float32) + (1.0 - m) * bg
        else:
            out = m * composite.astype(np.float32) + (1.0 - m) * bg
        out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
        # Objects come back bit for bit (not through float arithmetic).
        solid = mask >= 1.0
        out[solid] = composite[solid]
        return out

    def background(
        self, sc: Scene, h: int, w: int, rng: np.random.Generator, boxes: list[tuple[int, int, int, int]]
    ) -> np.ndarray:
        """The painted scene alone (float32 HxWx3, 0..255), shadows and blur included."""
        hy = sc.horizon + rng.uniform(-0.02, 0.02)
        hy = int(round(np.clip(hy, 0.15, 0.85) * h))
        # Objects stand on the ground: if a box ends above the horizon, lower the horizon
        # line to just above it rather than leave the object standing on the wall.
        bottoms = [y + bh for (_, y, _, bh) in boxes if bh > 0]
        if bottoms:
            hy = int(min(hy, max(int(0.15 * h), min(bottoms) - int(0.03 * h))))
        cv_ = _Canvas(h, w, hy, float(rng.uniform(0.3, 0.7) * w))
        bg = np.empty((h, w, 3), np.float32)
        outdoor = sc.upper_texture == "sky"
        # Scene colours vary a little per sample, as lighting would.
        gain = rng.uniform(0.94, 1.06)
        tint = rng.uniform(0.97, 1.03, 3).astype(np.float32)
        self._paint_upper(bg, sc, cv_, rng)
        self._paint_ground(bg, sc, cv_, rng, outdoor)
        if self.details and h >= 96:  # on thumbnails the details would be a few pixels
            self._paint_detail(bg, sc, cv_, rng)
        bg *= gain * tint
        self._shadows(bg, cv_, boxes)
        self._depth_of_field(bg, cv_)
        return bg

    # ------------------------------------------------------------------ checks

    @staticmethod
    def _check(composite, mask, scene, seed, boxes) -> np.ndarray:
        if not isinstance(composite, np.ndarray) or composite.dtype != np.uint8:
            raise ValueError(f"composite must be a uint8 numpy array, got {getattr(composite, 'dtype', type(composite))}")
        if composite.ndim != 3 or composite.shape[2] != 3:
            raise ValueError(f"composite must be HxWx3, got shape {composite.shape}")
        if not isinstance(mask, np.ndarray) or mask.dtype not in (np.float32, np.float64):
            raise ValueError(f"mask must be a float32 numpy array in [0, 1], got {getattr(mask, 'dtype', type(mask))}")
        if mask.shape != composite.shape[:2]:
            raise ValueError(f"mask shape {mask.shape} does not match composite shape {composite.shape} (need HxW)")
        if composite.shape[0] < 16 or composite.shape[1] < 16:
            raise ValueError(f"canvas too small: {composite.shape}")
        mask = mask.astype(np.float32, copy=False)
        lo, hi = float(mask.min()), float(mask.max())
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            raise ValueError(f"mask values must lie in [0, 1], got [{lo}, {hi}]")
        if not isinstance(scene, str):
            raise ValueError(f"scene must be a str, got {type(scene).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an int, got {type(seed).__name__}")
        for b in boxes:
            if len(b) != 4:
                raise ValueError(f"boxes must be (x, y, w, h) tuples, got {b!r}")
        return mask

    # ------------------------------------------------------------------ painting

    def _paint_upper(self, bg: np.ndarray, sc: Scene, c: _Canvas, rng: np.random.Generator) -> None:
        h, w, hy = c.h, c.w, c.hy
        top, bottom = sc.upper
        ys = (np.arange(hy, dtype=np.float32) + 0.5) / max(hy, 1)
        if sc.upper_texture == "sky":
            # Skies brighten sharply towards the horizon.
            up = bg[:hy]
            up[:] = _ramp(top, bottom, ys**1.8)
            if self.clouds:
                self._clouds(up, c, rng)
            return
        up = bg[:hy]
        up[:] = _ramp(top, bottom, ys)
        # One soft light pool from above (a window or lamp), so the wall is not flat.
        lx = rng.uniform(0.2, 0.8) * w
        xx = (np.arange(w, dtype=np.float32) - lx) / w
        yy = ys * hy / h
        light = 1.0 + 0.09 * np.exp(-(xx[None, :] ** 2 / 0.18 + yy[:, None] ** 2 / 0.35)) - 0.05 * yy[:, None]
        up *= light[..., None]
        if sc.upper_texture == "brick":
            self._brick_wall(up, c, rng)
        else:
            # Barely-there plaster unevenness; more reads as stains.
            plaster = _periodic_noise(rng, 128, 30.0)
            plaster = cv2.resize(plaster, (w, hy), interpolation=cv2.INTER_CUBIC)
            up *= (1.0 + 0.008 * self.texture * plaster)[..., None]

    def _brick_wall(self, up: np.ndarray, c: _Canvas, rng: np.random.Generator) -> None:
        """Stretcher-bond bricks facing the camera, drawn procedurally.

        skimage's brick photo is upright and in slight perspective, so tiled as a wall it
        shows seams; bricks are simple enough to lay exactly: courses of 1/16 of the
        canvas, bricks 3 courses long, offset half a brick per course, each with its own
        tone, mortar joints anti-aliased over a pixel, and gravel-photo grain as surface.
        """
        hy, w = up.shape[:2]
        course = c.h / 16.0
        length = 3.0 * course
        mortar = max(1.5, 0.12 * course)
        ys = np.arange(hy, dtype=np.float32) + rng.uniform(0, course)
        xs = np.arange(w, dtype=np.float32) + rng.uniform(0, length)
        row = np.floor(ys / course).astype(np.int32)
        shift = (row % 2) * (length / 2)
        xb = xs[None, :] + shift[:, None]
        col = np.floor(xb / length).astype(np.int32)
        # Distance to the nearest joint, in pixels, across and along.
        dy = np.minimum(ys - row * course, (row + 1) * course - ys)
        dx = np.minimum(xb - col * length, (col + 1) * length - xb)
        joint = np.maximum(
            _smoothstep(mortar / 2 + 0.75, mortar / 2 - 0.75, dx),
            _smoothstep(mortar / 2 + 0.75, mortar / 2 - 0.75, dy)[:, None],
        )
        tones = rng.normal(0.0, 1.0, (int(row.max()) + 2, int(col.max()) + 2)).astype(np.float32)
        tone = tones[row[:, None], col - int(col.min())]
        grain_pyr = _photo_texture("gravel")
        grain = cv2.resize(grain_pyr[1], (w, hy), interpolation=cv2.INTER_LINEAR)
        light_wall = float(up.mean()) > 190
        if light_wall:
            # Painted brick: smoother faces, and the recessed joints read darker.
            face = 1.0 + self.texture * (0.04 * tone + 0.015 * grain)
            joint_f = np.float32(0.87)
        else:
            # Bare brick with pale lime mortar.
            face = 1.0 + self.texture * (0.07 * tone + 0.05 * grain)
            joint_f = np.float32(1.22)
        up *= (face * (1 - joint) + joint_f * joint)[..., None]
        # A shadow line under each course's top joint gives the bricks some relief.
        top = (ys - row * course)
        relief = 1.0 - 0.08 * self.texture * np.exp(-((top - mortar - 1.0) ** 2) / 2.0)
        up *= relief[:, None, None]

    def _clouds(self, up: np.ndarray, c: _Canvas, rng: np.random.Generator) -> None:
        """Soft clouds on a sky plane: big overhead, small and flat near the horizon."""
        hy, w = c.hy, c.w
        n = 256
        fbm = (
            _periodic_noise(rng, n, 45.0, aspect=0.7)
            + 0.45 * _periodic_noise(rng, n, 15.0, aspect=0.7)
            + 0.2 * _periodic_noise(rng, n, 4.0)
        )
        fbm = _normalise(fbm)
        pyr = _pyramid(fbm)
        d = hy - (np.arange(hy, dtype=np.float32) + 0.5) + 0.02 * c.h  # distance above horizon
        xs = np.arange(w, dtype=np.float32) - w / 2
        dens = _perspective_sample(pyr, d, xs, near=float(hy), texel=c.h / 220.0, u0=rng.uniform(0, n),
                                   v0=rng.uniform(0, n))
        cover = rng.uniform(0.3, 1.1)  # threshold: higher = fewer clouds
        a = _smoothstep(cover, cover + 1.1, dens)
        # Near the horizon clouds fade into haze.
        a *= _smoothstep(0.0, 0.25, d / c.h)[:, None]
        shade = 1.0 - 0.12 * _smoothstep(cover + 0.4, cover + 1.8, dens)  # thick parts greyer
        white = np.array([250, 250, 252], np.float32)
        cloud = white[None, None, :] * shade[..., None]
        up *= 1 - 0.85 * a[..., None]
        up += 0.85 * a[..., None] * cloud

    def _paint_ground(self, bg: np.ndarray, sc: Scene, c: _Canvas, rng: np.random.Generator, outdoor: bool) -> None:
        h, w, hy = c.h, c.w, c.hy
        far, near_c = sc.ground
        g = h - hy
        d = np.arange(g, dtype=np.float32) + 0.5  # rows below the horizon
        t = d / g
        ground = bg[hy:]
        ground[:] = _ramp(far, near_c, t**0.7)
        kind = sc.ground_texture
        # Screen pixels per texel at the bottom row, per texture (relative to a 1024 canvas).
        texel_px = {"grass": 1.6, "gravel": 0.8, "brick": 2.0, "wood": 2.4, "plain": 2.0}.get(kind, 1.5)
        contrast = {"grass": 0.30, "gravel": 0.22, "brick": 0.18, "wood": 0.16, "plain": 0.04}.get(kind, 0.2)
        detail = getattr(sc, "detail", "none")
        # Light gravel by the sea or among dunes is sand: a finer, quieter grain.
        sand = kind == "gravel" and (detail in ("dunes", "sea") or min(far) > 150)
        if sand:
            pyr = _pyramid(_sand_texture(rng, ripples=detail == "dunes"))
            texel_px, contrast = 1.2, 0.09
        elif kind in ("grass", "gravel", "brick"):
            pyr = _photo_texture(kind)
            if kind != "brick" and rng.random() < 0.5:
                pyr = [np.ascontiguousarray(p.T) for p in pyr]  # isotropic photos: any orientation
        elif kind == "wood":
            tex = _wood_texture(rng)
            if rng.random() < 0.3:
                tex = np.ascontiguousarray(tex.T)  # planks across the view instead of into it
            pyr = _pyramid(tex)
        else:
            pyr = _pyramid(_plain_texture(rng))
        xs = np.arange(w, dtype=np.float32) - c.vx
        tex = _perspective_sample(pyr, d, xs, near=float(g), texel=texel_px * h / 1024.0,
                                  u0=rng.uniform(0, _TEX), v0=rng.uniform(0, _TEX))
        ground *= (1.0 + contrast * self.texture * tex)[..., None]
        # Large patches of slightly different colour (worn grass, damp sand, floor wear).
        patches = _periodic_noise(rng, 128, 8.0)
        patches = cv2.resize(patches, (w, g), interpolation=cv2.INTER_CUBIC)
        ground *= (1.0 + (0.05 if outdoor else 0.025) * patches)[..., None]
        if outdoor:
            # Aerial perspective: the far ground takes on the sky's colour.
            haze = (0.35 * np.exp(-d / (0.08 * h))).astype(np.float32)
            _mix(ground, sc.upper[1], np.broadcast_to(haze[:, None], (g, w)))
        else:
            # Floors are a touch darker where they meet the wall (ambient occlusion).
            ao = 1.0 - 0.18 * np.exp(-d / (0.015 * h))
            ground *= ao[:, None, None]

    def _paint_detail(self, bg: np.ndarray, sc: Scene, c: _Canvas, rng: np.random.Generator) -> None:
        """The scene's horizon detail; what each one means is described on Scene.detail."""
        h, w, hy = c.h, c.w, c.hy
        detail = getattr(sc, "detail", "none")
        cols = np.arange(w)
        rows = np.arange(h, dtype=np.float32)[:, None]
        if detail == "skirting":
            sh = max(3, int(0.028 * h))
            board = np.asarray(sc.upper[1], np.float32) * 0.35 + 0.65 * np.array([238, 236, 230], np.float32)
            band = bg[hy - sh : hy]
            band[:] = board * np.linspace(1.02, 0.9, sh, dtype=np.float32)[:, None, None]
            bg[hy - sh : hy - sh + 2] *= 1.08  # the lit top edge
            # Its shadow on the wall just above.
            s = 1.0 - 0.12 * np.exp(-np.arange(int(0.02 * h), dtype=np.float32)[::-1] / (0.005 * h))
            bg[hy - sh - s.size : hy - sh] *= s[:, None, None]
        elif detail == "table_edge":
            # The table's far edge: a thin lit lip, the wall a little darker right above it.
            e = max(2, int(0.004 * h))
            bg[hy : hy + e] = bg[hy : hy + e] * 0.6 + 0.4 * 255
            s = 1.0 - 0.15 * np.exp(-np.arange(int(0.03 * h), dtype=np.float32)[::-1] / (0.008 * h))
            bg[hy - s.size : hy] *= s[:, None, None]
        elif detail == "sidewalk":
            # A paved sidewalk between the building and the road: square slabs on the
            # ground plane (joints converge to the vanishing point), then a kerb.
            sw = int(0.075 * h)
            y1 = min(h, hy + sw)
            g = h - hy
            d = np.arange(y1 - hy, dtype=np.float32) + 0.5
            slab = 0.16 * h  # slab side in bottom-row pixels
            u = (cols[None, :] - c.vx) * g / d[:, None] / slab + rng.uniform(0, 1)
            v = (g * g / d) / slab + rng.uniform(0, 1)
            # Distance to the nearest joint in screen pixels; 1 px wide dark lines.
            ju = np.abs(((u + 0.5) % 1.0) - 0.5) * slab * d[:, None] / g
            jv = np.abs(((v + 0.5) % 1.0) - 0.5) * slab * d**2 / g**2
            joint = np.maximum(np.exp(-(ju**2) / 0.8), np.exp(-(jv**2) / 0.8)[:, None])
            pave = np.array([172, 168, 162], np.float32) * (1.0 - 0.25 * joint)[..., None]
            seg = bg[hy:y1]
            seg[:] = 0.2 * seg + 0.8 * pave
            kh = max(2, int(0.01 * h))
            bg[y1 : y1 + kh] = np.array([200, 198, 194], np.float32)  # the kerb's lit top
            bg[y1 + kh : y1 + 2 * kh] *= 0.62  # its face, in shade
            fade = bg[y1 + 2 * kh : y1 + 4 * kh]  # clipped at the canvas bottom
            fade *= np.linspace(0.8, 1.0, 2 * kh, dtype=np.float32)[: fade.shape[0], None, None]
        elif detail in ("hedge", "hills", "dunes", "sea"):
            self._skyline(bg, sc, c, rng, detail, rows)

    def _skyline(self, bg, sc: Scene, c: _Canvas, rng, detail: str, rows: np.ndarray) -> None:
        h, w, hy = c.h, c.w, c.hy
        sky_low = np.asarray(sc.upper[1], np.float32)
        far = np.asarray(sc.ground[0], np.float32)
        if detail == "sea":
            top = hy - int(0.09 * h)
            sea_far = np.array([52, 112, 160], np.float32) * 0.8 + 0.2 * sky_low
            sea_near = np.array([70, 150, 180], np.float32)
            n = hy - top
            t = np.linspace(0, 1, n, dtype=np.float32)
            band = bg[top:hy]
            band[:] = _ramp(sea_far, sea_near, t)
            # Horizontal glints, finer towards the far line.
            ripples = _periodic_noise(rng, 256, 2.0, aspect=0.15)
            ripples = cv2.resize(ripples, (w, n), interpolation=cv2.INTER_LINEAR)
            band *= (1.0 + 0.06 * ripples)[..., None]
            bg[top : top + 1] = 0.5 * bg[top : top + 1] + 0.5 * sky_low * 0.9  # crisp sea horizon
            # Foam and wet sand at the shore.
            f = max(3, int(0.008 * h))
            wave = (0.5 + 0.5 * _ridge(rng, w, 0.3 * w)) * f
            dy = rows[hy - 3 * f : hy + 2 * f] - (hy - wave[None, :])
            foam = np.exp(-(dy**2) / (0.5 * f * f)) * 0.8
            _mix(bg[hy - 3 * f : hy + 2 * f], (245, 245, 240), foam.astype(np.float32))
            return
        if detail == "hedge":
            self._treeline(bg, sc, c, rng, rows)
            return
        if detail == "hills":
            colour = 0.55 * far + 0.45 * sky_low
            layers = [(0.12 * h, 0.5 * w, colour * 1.02, 0.05), (0.07 * h, 0.3 * w, colour * 0.9, 0.05)]
        else:  # dunes: lit on one face, in shade on the other
            layers = [(0.13 * h, 0.45 * w, far * 1.03, 0.22), (0.07 * h, 0.3 * w, far * 0.98, 0.22)]
        for height, feature, colour, relief in layers:
            prof = _ridge(rng, w, feature, octaves=2)
            crest = hy - height * (0.55 + 0.45 * prof)  # crest row per column
            span = int(height * 1.1) + 2
            y0 = max(0, hy - span)
            inside = _smoothstep(-1.0, 1.0, rows[y0:hy] - crest[None, :])  # 1 below the crest
            # Light from the left: faces rising to the right are lit, falling ones in shade.
            slope = np.gradient(crest) / max(1e-6, height) * w / 10.0
            lit = np.tanh(slope)[None, :]
            # Lighter towards its own top, as lit from above; hazier at the foot.
            depth = np.clip((rows[y0:hy] - crest[None, :]) / height, 0, 1)
            shade = (1.0 - relief * lit) * (1.04 - 0.1 * depth)
            layer = colour[None, None, :] * shade[..., None]
            seg = bg[y0:hy]
            seg *= 1 - inside[..., None]
            seg += inside[..., None] * layer

    def _treeline(self, bg, sc: Scene, c: _Canvas, rng, rows: np.ndarray) -> None:
        """A hedge with trees behind it: rounded crowns of foliage along the horizon."""
        h, w, hy = c.h, c.w, c.hy
        x = np.arange(w, dtype=np.float32)
        # Crowns: round bumps of random size; the outline is their upper envelope.
        n = max(8, int(w / (0.05 * w)) * 2)
        cx = rng.uniform(-0.05 * w, 1.05 * w, n).astype(np.float32)
        r = rng.uniform(0.03, 0.09, n).astype(np.float32) * h
        base = rng.uniform(0.02, 0.07, n).astype(np.float32) * h
        q = 1.0 - ((x[None, :] - cx[:, None]) / r[:, None]) ** 2
        crowns = (base[:, None] + r[:, None] * np.sqrt(np.maximum(q, 0.0))) * (q > 0)
        hedge = 0.035 * h * (1.0 + 0.08 * _ridge(rng, w, 0.05 * w))
        top = np.maximum(crowns.max(axis=0), hedge)
        crest = hy - top
        y0 = max(0, int(crest.min()) - 2)
        seg_rows = rows[y0:hy]
        inside = _smoothstep(-1.0, 1.0, seg_rows - crest[None, :])
        leaves = _periodic_noise(rng, 256, 1.5) + 0.6 * _periodic_noise(rng, 256, 5.0)
        leaves = cv2.resize(_normalise(leaves), (w, hy - y0), interpolation=cv2.INTER_LINEAR)
        depth = np.clip((seg_rows - crest[None, :]) / (0.05 * h), 0, 1)
        shade = (1.0 + 0.22 * leaves) * (1.15 - 0.35 * depth)
        dark = np.asarray(sc.ground[1], np.float32) * np.array([0.55, 0.62, 0.55], np.float32)
        # A little haze: the trees are some way off.
        colour = 0.85 * dark + 0.15 * np.asarray(sc.upper[1], np.float32)
        layer = colour[None, None, :] * shade[..., None]
        seg = bg[y0:hy]
        seg *= 1 - inside[..., None]
        seg += inside[..., None] * layer

    # ------------------------------------------------------------------ finishing

    def _shadows(self, bg: np.ndarray, c: _Canvas, boxes) -> None:
        """A soft elliptical contact shadow under each box's bottom edge.

        Two lobes: a tight dark core where the object touches the ground and a wide faint
        penumbra. Each is an analytic Gaussian ellipse, so only the box's neighbourhood
        is touched and there is nothing to blur.
        """
        if self.shadow <= 0:
            return
        h, w = c.h, c.w
        for (x, y, bw, bh) in boxes:
            if bw <= 0 or bh <= 0:
                continue
            cx, yb = x + bw / 2.0, float(y + bh)
            a = 0.55 * bw
            b = max(4.0, 0.10 * bw, 0.04 * bh)
            x0, x1 = int(max(0, cx - 2 * a)), int(min(w, cx + 2 * a + 1))
            y0, y1 = int(max(0, yb - 3 * b)), int(min(h, yb + 3 * b + 1))
            if x0 >= x1 or y0 >= y1:
                continue
            dx = (np.arange(x0, x1, dtype=np.float32) - cx)[None, :]
            dy = (np.arange(y0, y1, dtype=np.float32) - (yb - 0.25 * b))[:, None]
            core = np.exp(-((dx / (0.8 * a)) ** 2 + (dy / (0.45 * b)) ** 2))
            wide = np.exp(-((dx / (1.2 * a)) ** 2 + (dy / (1.2 * b)) ** 2))
            dark = self.shadow * np.minimum(1.0, 0.65 * core + 0.45 * wide)
            bg[y0:y1, x0:x1] *= (1.0 - dark)[..., None]

    def _depth_of_field(self, bg: np.ndarray, c: _Canvas) -> None:
        """Blur the far scene more than the near ground; objects sit in the focal plane."""
        if self.blur <= 0:
            return
        h, w, hy = c.h, c.w, c.hy
        s = self.blur * h / 1024.0
        near = cv2.GaussianBlur(bg, (0, 0), max(0.3, s / 3))
        # The strong blur is done at half size: a Gaussian that wide loses nothing there.
        small = cv2.resize(bg, (max(8, w // 2), max(8, h // 2)), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), max(0.5, s / 2))
        far = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        rows = np.arange(h, dtype=np.float32)
        wf = np.where(rows < hy, 1.0, np.clip(1.0 - (rows - hy) / (0.6 * max(1, h - hy)), 0.0, 1.0))
        wf = wf.astype(np.float32)[:, None, None]
        bg[:] = near * (1 - wf) + far * wf

    def _bounce(self, bg: np.ndarray, composite: np.ndarray, mask: np.ndarray) -> None:
        """Tint the background near objects with their colour, as light bounced off them.

        Normalised convolution at quarter size gives each background pixel the average
        colour of the objects around it; only its hue is applied (luminance kept), and
        only to the background, never to the objects.
        """
        h, w = mask.shape
        sw, sh = max(4, w // 4), max(4, h // 4)
        m = cv2.resize(mask, (sw, sh), interpolation=cv2.INTER_AREA)
        cm = cv2.resize(composite.astype(np.float32) * mask[..., None], (sw, sh), interpolation=cv2.INTER_AREA)
        sigma = 0.02 * max(sw, sh)
        mb = cv2.GaussianBlur(m, (0, 0), sigma)
        cb = cv2.GaussianBlur(cm, (0, 0), sigma)
        colour = cb / np.maximum(mb, 1e-4)[..., None]
        lum = colour.mean(axis=2, keepdims=True)
        chroma = colour / np.maximum(lum, 1.0)  # 1 = grey; >1 where that channel dominates
        weight = self.harmonise * np.clip(mb * 2.0, 0.0, 1.0)
        factor = 1.0 + weight[..., None] * (np.clip(chroma, 0.5, 1.6) - 1.0)
        factor = cv2.resize(factor, (w, h), interpolation=cv2.INTER_LINEAR)
        bg *= factor
