"""Tier 2: `gen4gen segment`: the segment stage's masks, cut-outs, checks and contact sheet."""

from __future__ import annotations

import csv

import numpy as np
from PIL import Image

from gen4gen.flows.cli import main


def drawn(path, across=False, transparent=True):
    h, w = 150, 200
    rgb = np.full((h, w, 3), 230, np.uint8)
    alpha = np.zeros((h, w), np.uint8)
    alpha[40:110, 60:140] = 255
    if across:
        alpha[:, 80:120] = 255
    rgb[alpha > 0] = (180, 40, 30)
    Image.fromarray(np.dstack([rgb, alpha]) if transparent else rgb).save(path)


def test_writes_masks_cut_outs_checks_and_a_sheet_per_photo(tmp_path, capsys):
    photos = tmp_path / "photos"
    (photos / "mug" / "more").mkdir(parents=True)
    (photos / "x<b>y").mkdir()
    drawn(photos / "mug" / "00.png")
    drawn(photos / "mug" / "more" / "01.png", across=True)  # found recursively
    drawn(photos / "x<b>y" / "02.png")
    Image.fromarray(np.full((60, 80, 3), 128, np.uint8)).save(photos / "x<b>y" / "flat.png")  # nothing in it
    out = tmp_path / "look"
    assert main(["segment", str(photos), "--out", str(out), "--backend", "offline"]) == 0
    said = capsys.readouterr()
    assert "4 photos, 2 flagged (offline)" in said.out and "flagged: more/01: cutout_across" in said.err

    mask = np.asarray(Image.open(out / "mug" / "00.png"))
    assert mask.shape == (150, 200) and mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
    assert (mask[40:110, 60:140] == 255).all() and mask[:30].max() == 0
    cut = Image.open(out / "mug" / "00-cutout.png")
    assert cut.mode == "RGBA" and cut.size == (200, 150) and np.asarray(cut)[0, 0, 3] == 0

    with open(out / "checks.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["photo", "flags", "classes"]
    flags = {r[0]: r[1] for r in rows[1:]}
    assert "no detector" in rows[1][2]  # the suite's cache is empty: no NanoDet to check classes with
    assert flags["mug/00"] == "" and flags["x<b>y/02"] == "" and flags["more/01"] == "cutout_across"
    assert flags["x<b>y/flat"] == "empty_mask" and not (out / "x<b>y" / "flat.png").exists()

    page = (out / "index.html").read_text()
    assert "x&lt;b&gt;y/02" in page and "x<b>y" not in page  # names from disk are escaped
    assert page.count("<tr id=") == 4 and "the mask reaches both the top" in page


def test_bad_paths_and_backends_exit_2_naming_them(tmp_path, capsys):
    assert main(["segment", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "nowhere" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["segment", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no photos" in capsys.readouterr().err
    drawn(tmp_path / "a.png")
    assert main(["segment", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--backend", "nope"]) == 2
    assert "unknown backend 'nope'" in capsys.readouterr().err


def test_uses_the_recipes_categories_and_settings(tmp_path, capsys):
    drawn(tmp_path / "p.png")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: r\nconcepts:\n  - {id: cup1, category: mug, token: '<cup1>', photos: [p.png]}\n"
        "  - {id: cup2, category: mug, token: '<cup2>', photos: [p.png]}\n"
        "compositions:\n  - {id: c, concepts: [cup1, cup2], samples: 1}\n"
        "stages:\n  segment: {backend: offline, options: {feather: 0}}\n")
    out = tmp_path / "o"
    assert main(["segment", str(tmp_path / "p.png"), "--out", str(out), "--recipe", str(recipe)]) == 0
    assert "(offline)" in capsys.readouterr().out
    assert "<td><code>tmp" not in (out / "index.html").read_text()
    assert "mug" in (out / "index.html").read_text()  # the recipe's category, not the folder's name
