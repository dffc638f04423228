"""Class: a full disk. On a real, tiny file system (a tmpfs mounted by the test: it skips,
saying why, where mounting is not allowed), a write that runs out of room names the file,
leaves no temporary or half-written file, and a run that fills the disk fails saying "no
space left on device" and where, not with Prefect's "Run is in PENDING state"."""

from __future__ import annotations

import errno
import json
import subprocess
from pathlib import Path

import pytest

from gen4gen.infra import storage


@pytest.fixture
def small_disk(tmp_path):
    """Mounts a tmpfs of the given size (KiB) under tmp_path; unmounted after the test."""
    mounted: list[Path] = []

    def mount(kib: int) -> Path:
        where = tmp_path / f"disk-{len(mounted)}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def whole(root: Path) -> list[str]:
    """Files under root that are temporary or not whole (a PNG that does not decode, JSON
    that does not parse)."""
    from PIL import Image

    bad = []
    for f in root.rglob("*"):
        if f.is_dir():
            continue
        if f.name.endswith(".tmp"):
            bad.append(f"temporary: {f}")
        elif f.suffix == ".png":
            try:
                with Image.open(f) as im:
                    im.load()
            except Exception as err:  # noqa: BLE001
                bad.append(f"broken png {f}: {err}")
        elif f.suffix == ".json":
            try:
                json.loads(f.read_text())
            except ValueError as err:
                bad.append(f"broken json {f}: {err}")
        elif f.suffix == ".jsonl":
            for line in f.read_text().splitlines():
                try:
                    json.loads(line)
                except ValueError as err:
                    bad.append(f"broken jsonl {f}: {err}")
    return bad


def test_a_write_on_a_full_disk_names_the_file_and_leaves_nothing(small_disk):
    disk = small_disk(64)
    with pytest.raises(OSError) as err:
        storage.write_bytes(str(disk / "sub" / "big.bin"), b"x" * 200_000)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(disk / "sub" / "big.bin")
    assert not storage.is_transient(err.value)
    assert [p.name for p in disk.rglob("*") if p.is_file()] == []


def test_a_report_on_a_full_disk_names_the_page_and_leaves_nothing(small_disk, tmp_path):
    from gen4gen.tasks.views.report import write_report
    from hostile_kit import publish_without_prefect, tiny_recipe

    publish_without_prefect(tiny_recipe(tmp_path, tmp_path / "ds"))
    disk = small_disk(16)
    with pytest.raises(OSError) as err:
        write_report(str(tmp_path / "ds"), str(disk / "report.html"))
    assert err.value.errno == errno.ENOSPC and str(disk) in str(err.value.filename)
    assert whole(disk) == [] and not (disk / "report.html").exists()


def test_a_run_that_fills_the_disk_says_so_and_where(small_disk, tmp_path, prefect_harness):
    from conftest import run_recipe, small_recipe
    from gen4gen.flows.cli import _cause

    disk = small_disk(256)
    raw = small_recipe(tmp_path, samples=3, canvas=256)
    raw["compositions"] = raw["compositions"][:1]
    raw["run"]["retries"] = 0
    out = disk / "ds"
    with pytest.raises(OSError) as err:
        run_recipe(raw, str(out))
    assert err.value.errno == errno.ENOSPC and str(out) in str(err.value.filename)
    message = _cause(err.value)
    assert message.startswith(f"no space left on device in {out}"), message
    assert "PENDING" not in message
    assert whole(disk) == []
    assert not (out / "manifest.json").exists()
