"""Class: a photo that is too large or has no end. Every path that reads a source photo (the
generate run's segment stage, the galleries' and the report's thumbnails, `gen4gen init`)
goes through storage's one bounded reader: a device, a FIFO, a 2 GB sparse file or a folder
with a photo's name fails only the samples that use it, with a reason naming the file (and
the limit), and nothing is read without end."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from gen4gen.infra import storage
from gen4gen.infra.errors import BadInput
from hostile_kit import gen4gen, published  # noqa: F401

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def hostile_photos(folder: Path) -> dict[str, tuple[str, str]]:
    """name -> (photo path, words its reason holds): each unusable without being read whole."""
    folder.mkdir(parents=True, exist_ok=True)
    sparse = folder / "sparse.png"
    with open(sparse, "wb") as f:
        f.truncate(2 * 2**30)  # 2 GB of zeros that cost no disk
    headed = folder / "headed.png"
    with open(headed, "wb") as f:  # a real PNG signature, then far over the limit
        f.write(PNG_SIGNATURE)
        f.truncate(storage.MAX_PHOTO_BYTES + 1)
    fifo = folder / "fifo.png"
    os.mkfifo(fifo)
    link = folder / "zero.png"
    link.symlink_to("/dev/zero")
    (folder / "folder.png").mkdir()
    limit = f"over the {storage.MAX_PHOTO_BYTES:,} byte limit"
    return {
        "devzero": ("/dev/zero", "character device"),
        "sparse": (str(sparse), limit),
        "headed": (str(headed), limit),
        "fifo": (str(fifo), "FIFO"),
        "link": (str(link), "character device"),
        "folder": (str(folder / "folder.png"), "folder"),
    }


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, tuple[str, str]]:
    return hostile_photos(tmp_path_factory.mktemp("hostile-photos"))


@pytest.mark.parametrize("name", ["devzero", "sparse", "headed", "fifo", "link", "folder"])
def test_the_photo_reader_refuses_at_once_naming_the_file(photos, name):
    path, words = photos[name]
    start = time.monotonic()
    with pytest.raises(BadInput) as err:
        storage.read_input(path)
    assert time.monotonic() - start < 3
    assert path in str(err.value) and words in str(err.value)


def test_a_run_with_endless_photos_fails_only_their_samples(tmp_path, photos, prefect_harness):
    """The generate flow (offline backends): one composition per hostile photo beside a
    good one; the run publishes, the good composition keeps its sample."""
    from conftest import run_recipe, small_recipe

    raw = small_recipe(tmp_path, samples=1, canvas=128)
    raw["concepts"] = raw["concepts"][:2]  # chelsea, coffee
    raw["compositions"] = raw["compositions"][:1]
    for name, (path, _) in photos.items():
        raw["concepts"].append({"id": name, "category": "rocket", "token": f"<{name}>", "photos": [path]})
        raw["compositions"].append({"id": f"cat-{name}", "concepts": ["chelsea", name], "samples": 1})
    start = time.monotonic()
    manifest = run_recipe(raw)
    assert time.monotonic() - start < 120  # nothing read 2 GB
    assert (tmp_path / "out" / "manifest.json").is_file()
    stats = {st.composition: st for st in manifest.compositions}
    assert stats["cat-mug"].failed == 0 and stats["cat-mug"].planned == 1
    for name, (path, words) in photos.items():
        assert stats[f"cat-{name}"].failed == 1, (name, stats[f"cat-{name}"])
        assert path in manifest.unusable_photos and words in manifest.unusable_photos[path], name
    from gen4gen.tasks.views.report import load_version

    samples = {s.composition: s for s in load_version(str(tmp_path / "out")).samples}
    for name, (path, words) in photos.items():
        detail = " ".join(r.detail for r in samples[f"cat-{name}"].reasons)
        assert path in detail and words in detail, (name, detail)


@pytest.mark.parametrize("name", ["devzero", "sparse", "headed", "fifo", "link", "folder"])
def test_gallery_and_report_thumbnails_of_an_endless_photo_are_a_note(photos, name, tmp_path):
    from gen4gen.tasks.views import gallery
    from gen4gen.tasks.views.report import THUMB, _Thumbs, load_version

    path, words = photos[name]
    start = time.monotonic()
    rel, note = gallery._thumbnail(str(tmp_path / "ds"), "ab" * 32, path, photo=True)
    assert rel is None and words in note
    assert not (tmp_path / "ds" / ".thumbs").exists() or not any((tmp_path / "ds" / ".thumbs").rglob("*.jpg"))
    assert time.monotonic() - start < 3


def test_report_thumbnail_of_an_allowed_endless_photo_is_a_note(published, photos):
    from gen4gen.tasks.views.report import THUMB, _Thumbs, load_version

    thumbs = _Thumbs(load_version(str(published)), THUMB, None)
    for name, (path, words) in photos.items():
        start = time.monotonic()
        thumb = thumbs.photo(path, None, frozenset({path}))
        assert thumb.src is None and path in thumb.note and words in thumb.note, (name, thumb)
        assert time.monotonic() - start < 3


def test_init_refuses_an_oversized_photo_by_name_without_reading_it(tmp_path):
    import shutil

    import skimage.data

    concept = tmp_path / "photos" / "cat" / "chelsea"
    concept.mkdir(parents=True)
    shutil.copy(Path(skimage.data.__file__).parent / "chelsea.png", concept / "01.png")
    with open(concept / "02.png", "wb") as f:
        f.write(PNG_SIGNATURE)
        f.truncate(2 * 2**30)
    start = time.monotonic()
    result = gen4gen("init", str(tmp_path / "photos"), "--out", str(tmp_path / "r.yaml"), timeout=60)
    assert time.monotonic() - start < 30
    assert result.returncode == 2, result.stderr
    assert str(concept / "02.png") in result.stderr and "byte limit of a photo" in result.stderr
    assert "Traceback" not in result.stderr


def test_init_refuses_a_concept_list_that_never_ends(tmp_path):
    from gen4gen.tasks.intake.ingest import IngestError, _text

    (tmp_path / "list.txt").symlink_to("/dev/zero")
    with pytest.raises(IngestError, match="character device"):
        _text(tmp_path / "list.txt")
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:
        f.truncate(2 * 2**30)
    with pytest.raises(IngestError, match="not a concept list"):
        _text(big)
