"""Tier 2: cut-out checks through the stages: the planner prefers photos that pass, the
filter drops samples built from a flagged one with its reason, the manifest lists it."""

from __future__ import annotations

import numpy as np
from PIL import Image

from conftest import small_recipe
from gen4gen.infra.records import DatasetConfig
from gen4gen.tasks.pipeline import run_local


def rgba_photo(path, across: bool) -> str:
    """A drawn object on transparency; `across`: a strap that runs from the top edge to the
    bottom with it (a backpack worn by a person), as a segmenter would hand it on."""
    h, w = 200, 240
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[..., 0], rgb[..., 1] = np.linspace(40, 220, w)[None, :], 90
    alpha = np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    alpha[((yy - 110) / 60) ** 2 + ((xx - 120) / 70) ** 2 <= 1] = 255
    if across:
        alpha[:, 90:150] = 255
    Image.fromarray(np.dstack([rgb, alpha])).save(path)
    return str(path)


def test_flagged_cut_outs_are_avoided_then_dropped_with_their_reason(tmp_path):
    clean, worn = rgba_photo(tmp_path / "clean.png", False), rgba_photo(tmp_path / "worn.png", True)
    raw = small_recipe(tmp_path, samples=4, canvas=128, extra_concepts=[
        {"id": "pack", "category": "backpack", "token": "<pack>", "photos": [worn, clean]},
        {"id": "worn", "category": "backpack", "token": "<worn>", "photos": [worn]},
    ], extra_compositions=[
        {"id": "cat-pack", "concepts": ["chelsea", "pack"], "samples": 4},
        {"id": "cat-worn", "concepts": ["chelsea", "worn"], "samples": 4},
    ])
    config = DatasetConfig.model_validate(raw)
    manifest, samples, cutouts = run_local(config, config.out)
    flagged = {c.photo: [f.code for f in c.flags] for c in cutouts["pack"]}
    assert flagged == {worn: ["cutout_across"], clean: []}
    # Every sample of the concept with a clean photo uses it; none is dropped for the photo.
    assert {s.plan.photos["pack"] for s in samples["cat-pack"]} == {clean}
    assert not any(r.code.startswith("cutout_") for s in samples["cat-pack"] for r in s.reasons)
    # A concept with only the flagged photo: its samples are made, then dropped saying why.
    worn_samples = samples["cat-worn"]
    assert all(s.status == "dropped" for s in worn_samples)
    for s in worn_samples:
        reason = next(r for r in s.reasons if r.code == "cutout_across")
        assert reason.stage == "filter" and reason.detail.startswith(f"worn: {worn}: the mask reaches both the top")
    stats = {st.composition: st for st in manifest.compositions}
    assert stats["cat-worn"].reasons.get("cutout_across") == 4 and stats["cat-worn"].kept == 0
    assert worn in manifest.flagged_photos and "cutout_across" in manifest.flagged_photos[worn]
    assert clean not in manifest.flagged_photos


def test_flagged_cut_outs_can_be_kept_as_notes(tmp_path):
    worn = rgba_photo(tmp_path / "worn.png", True)
    raw = small_recipe(tmp_path, samples=2, canvas=128, extra_concepts=[
        {"id": "worn", "category": "backpack", "token": "<worn>", "photos": [worn]},
    ], extra_compositions=[{"id": "cat-worn", "concepts": ["chelsea", "worn"], "samples": 2}])
    raw["compositions"] = raw["compositions"][2:]
    raw["stages"] = {"filter": {"drop_flagged_cutouts": False}}
    config = DatasetConfig.model_validate(raw)
    _, samples, _ = run_local(config, config.out)
    for s in samples["cat-worn"]:
        assert not any(r.code.startswith("cutout_") for r in s.reasons)
        assert [n.code for n in s.notes if n.code.startswith("cutout_")] == ["cutout_across"]
