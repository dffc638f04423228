"""Tier 1: storage over fsspec: atomic writes, decoding rules, and s3:// with the same code."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from gen4gen.infra import storage
from gen4gen.infra.errors import BadInput


def png_bytes(img: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path):
    uri = str(tmp_path / "a" / "b.bin")
    storage.write_bytes(uri, b"one")
    storage.write_bytes(uri, b"two")
    assert storage.read_bytes(uri) == b"two"
    assert os.listdir(tmp_path / "a") == ["b.bin"]


def test_pkgdata_resolves_into_the_installed_package():
    rgb = storage.read_rgb("pkgdata://skimage/data/chelsea.png")
    assert rgb.shape == (300, 451, 3) and rgb.dtype == np.uint8
    with pytest.raises(BadInput, match="package 'no_such_pkg' is not installed"):
        storage.read_bytes("pkgdata://no_such_pkg/x.png")


def test_missing_file_is_a_bad_input_naming_it(tmp_path):
    with pytest.raises(BadInput, match=r"nothere\.png: not found"):
        storage.read_bytes(str(tmp_path / "nothere.png"))


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty file"),
        (b"hello, I am text", "cannot decode image"),
        (png_bytes(Image.new("RGB", (64, 64)))[:60], "cannot decode image"),
        (png_bytes(Image.new("RGB", (4, 4))), "too small"),
    ],
)
def test_undecodable_inputs_raise_bad_input(data, message):
    with pytest.raises(BadInput, match=message) as err:
        storage.decode_image(data, "photo-x")
    assert err.value.name == "photo-x"


def test_decompression_bomb_is_refused_before_decoding():
    # A tiny file declaring 20000 x 20000 pixels.
    bomb = png_bytes(Image.new("1", (20000, 20000)))
    with pytest.raises(BadInput, match="decompression bomb refused"):
        storage.decode_image(bomb, "bomb.png")


def test_exif_orientation_is_respected():
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    data = png_bytes(img, fmt="JPEG", exif=exif.tobytes())
    assert storage.decode_image(data, "rot.jpg").size == (20, 40)


def test_modes_become_rgb_and_real_alpha_is_kept():
    grey = storage.to_rgb_alpha(Image.new("L", (16, 16), 100))
    assert grey[0].shape == (16, 16, 3) and grey[1] is None
    rgba = Image.new("RGBA", (16, 16), (10, 20, 30, 0))
    rgba.paste((200, 0, 0, 255), (4, 4, 12, 12))
    rgb, alpha = storage.to_rgb_alpha(rgba)
    assert alpha is not None and alpha[8, 8] == 1.0 and alpha[0, 0] == 0.0
    opaque = storage.to_rgb_alpha(Image.new("RGBA", (16, 16), (1, 2, 3, 255)))
    assert opaque[1] is None  # an all-opaque alpha carries no mask
    deep = Image.fromarray(np.full((16, 16), 40000, np.uint16))
    assert storage.to_rgb_alpha(deep)[0].max() == 255


def test_png_encoding_is_deterministic_and_masks_round_trip(tmp_path):
    mask = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    assert storage.encode_png(mask) == storage.encode_png(mask.copy())
    uri = str(tmp_path / "m.png")
    digest = storage.write_png(uri, mask)
    assert digest == storage.sha256(storage.read_bytes(uri))
    assert np.abs(storage.read_mask(uri) - mask).max() <= 0.5 / 255 + 1e-6


def test_same_code_reads_and_writes_s3(s3_server):
    uri = storage.join(s3_server, "demo", "comp", "mask", "s1.png")
    mask = np.zeros((32, 32), np.float32)
    mask[8:24, 8:24] = 1
    digest = storage.write_png(uri, mask)
    assert storage.exists(uri)
    assert storage.sha256(storage.read_bytes(uri)) == digest
    assert storage.read_mask(uri)[16, 16] == 1.0
    assert storage.list_files(storage.join(s3_server, "demo")) == [uri]
    storage.remove(uri)
    assert not storage.exists(uri)
    with pytest.raises(BadInput, match="not found"):
        storage.read_bytes(uri)
