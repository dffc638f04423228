"""Class: code execution from data. A URI never imports a package; Pillow decodes only the
formats we accept."""

from __future__ import annotations

import io
import sys

import pytest
from PIL import Image

from gen4gen.infra import storage
from gen4gen.infra.errors import BadInput


@pytest.fixture
def booby_trapped_package(tmp_path, monkeypatch):
    """An importable package whose import (of it or its subpackage) leaves a mark."""
    mark = tmp_path / "imported"
    pkg = tmp_path / "site" / "trapped_pkg"
    (pkg / "sub").mkdir(parents=True)
    for init in (pkg / "__init__.py", pkg / "sub" / "__init__.py"):
        init.write_text(f"open({str(mark)!r}, 'a').write('ran {init.parent.name}\\n')\n")
    Image.new("RGB", (32, 32), (200, 10, 10)).save(pkg / "sub" / "x.png")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    yield mark
    for name in [m for m in sys.modules if m.startswith("trapped_pkg")]:
        del sys.modules[name]


@pytest.mark.parametrize("uri", ["pkgdata://trapped_pkg.sub/x.png", "pkgdata://trapped_pkg/sub/x.png"])
def test_pkgdata_finds_the_file_without_running_the_package(booby_trapped_package, uri):
    rgb = storage.read_rgb(uri)
    assert rgb.shape == (32, 32, 3)
    assert not booby_trapped_package.exists(), booby_trapped_package.read_text()
    assert "trapped_pkg" not in sys.modules


@pytest.mark.parametrize("uri, words", [
    ("pkgdata://skimage/../../../../etc/passwd", "leaves the package"),
    ("pkgdata://os.path/x.png", "not installed"),  # a module, not a package folder
    ("pkgdata://not-a-name/x.png", "PACKAGE/PATH"),
    ("pkgdata://skimage", "PACKAGE/PATH"),
])
def test_pkgdata_refuses_escapes_and_non_packages(uri, words):
    with pytest.raises(BadInput, match=words):
        storage.read_bytes(uri)


def _encoded(fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 10)).save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PPM", "ICO", "TGA", "PCX", "SGI", "DDS"])
def test_formats_outside_the_accepted_list_are_not_decoded(fmt):
    with pytest.raises(BadInput, match="not one of the accepted formats") as err:
        storage.decode_image(_encoded(fmt), f"photo.{fmt.lower()}")
    assert err.value.name == f"photo.{fmt.lower()}"


def test_an_eps_file_never_reaches_ghostscript():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n(%pipe%touch /tmp/pwned) (w) file\nshowpage\n"
    with pytest.raises(BadInput, match="accepted formats"):
        storage.decode_image(eps, "photo.eps")


@pytest.mark.parametrize("fmt", storage.IMAGE_FORMATS)
def test_every_accepted_format_still_decodes(fmt):
    assert storage.decode_image(_encoded(fmt), "ok").size == (64, 64)


class _Planted:
    """What a hostile state.pt holds: unpickling it would run a shell command."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_planted_training_state_runs_no_code(tmp_path):
    """state.pt (a checkpoint's resume state) comes from storage: it is read with
    torch.load(weights_only=True), so a pickle that calls os.system is refused unrun."""
    import torch

    from gen4gen.tasks.training.train import read_state

    marker = tmp_path / "pwned"
    ckpt = tmp_path / "step-000001"
    ckpt.mkdir()
    torch.save({"step": 1, "rng": _Planted(str(marker))}, ckpt / "state.pt")
    with pytest.raises(BadInput, match="more than plain tensors and numbers"):
        read_state(str(ckpt))
    assert not marker.exists()
    torch.save({"step": 1, "rng": {"numpy": ["MT19937", [1, 2], 0, 0, 0.0]}}, ckpt / "state.pt")
    assert read_state(str(ckpt))["step"] == 1  # plain state still loads
