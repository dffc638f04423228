"""Write the bad-input corpus into tests/data/bad/ (or the folder given).

    python tests/data/make_bad.py [FOLDER]

Every file is generated, deterministically, from a photo that ships with scikit-image, so
the corpus can be rebuilt and checked byte for byte (tests/infra/test_bad_inputs.py does).
What each file must give is in EXPECTED: "ok" (used, with the property named) or the
words the error must contain.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent

# file -> ("ok", what to check) or ("error", words the reason must contain)
EXPECTED = {
    "zero_bytes.png": ("error", "empty file"),
    "truncated.jpg": ("error", "cannot decode image"),
    "text_named.png": ("error", "cannot decode image"),
    "png_named.jpg": ("ok", "decodes by content, not by extension"),
    "bomb.png": ("error", "decompression bomb refused"),
    "deep16.png": ("ok", "16-bit scaled to 8-bit"),
    "cmyk.jpg": ("ok", "CMYK converted to RGB"),
    "grey.png": ("ok", "greyscale"),
    "palette.png": ("ok", "palette"),
    "rgba_cutout.png": ("ok", "alpha used as the mask"),
    "exif_rotated.jpg": ("ok", "EXIF orientation respected"),
    "animated.gif": ("ok", "first frame"),
    "one_pixel.png": ("error", "too small"),
    "strip_10000x10.png": ("error", "aspect ratio"),
}


def _photo() -> Image.Image:
    import skimage.data

    return Image.fromarray(skimage.data.coffee())  # 600x400, a cup on a table


def _bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def build() -> dict[str, bytes]:
    photo = _photo()
    jpeg = _bytes(photo, "JPEG", quality=85)
    disc = np.zeros((200, 300, 4), np.uint8)
    yy, xx = np.mgrid[:200, :300]
    inside = (yy - 100) ** 2 + (xx - 150) ** 2 < 70**2
    disc[inside] = (200, 40, 40, 255)  # a red disc on a fully transparent background
    deep = (np.asarray(photo.convert("L"), np.uint16) * 257).astype(np.uint16)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees
    frames = [photo.resize((150, 100)), photo.resize((150, 100)).transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return {
        "zero_bytes.png": b"",
        "truncated.jpg": jpeg[: len(jpeg) // 3],
        "text_named.png": b"This is a text file with a .png name.\n",
        "png_named.jpg": _bytes(photo, "PNG"),
        "bomb.png": _bytes(Image.new("1", (20000, 20000)), "PNG", optimize=True),
        "deep16.png": _bytes(Image.fromarray(deep), "PNG"),
        "cmyk.jpg": _bytes(photo.convert("CMYK"), "JPEG", quality=85),
        "grey.png": _bytes(photo.convert("L"), "PNG"),
        "palette.png": _bytes(photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=64), "PNG"),
        "rgba_cutout.png": _bytes(Image.fromarray(disc), "PNG"),
        "exif_rotated.jpg": _bytes(photo, "JPEG", quality=85, exif=exif.tobytes()),
        "animated.gif": gif.getvalue(),
        "one_pixel.png": _bytes(Image.new("RGB", (1, 1), (255, 0, 0)), "PNG"),
        "strip_10000x10.png": _bytes(Image.new("RGB", (10000, 10), (0, 128, 0)), "PNG"),
    }


def main(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in build().items():
        (folder / name).write_bytes(data)
    print(f"{len(EXPECTED)} files in {folder}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "bad")
