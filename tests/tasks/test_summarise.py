"""Summarising scores: every group's mean is the mean of its images' scores; groups by
composition and by number of concepts; the comparison with earlier checkpoints."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from gen4gen.tasks.summarise import (
    comparison_rows,
    earlier_rows,
    read_results,
    result_rows,
    summarise,
    text_table,
    write_results,
    ScoredImage,
)

COMPS = {"cat-mug": ["a", "b"], "trio": ["a", "b", "c"], "four": ["a", "b", "c", "d"], "five": ["a", "b", "c", "d", "e"]}


def _images(seed: int = 0, per: int = 6) -> list[ScoredImage]:
    rng = np.random.default_rng(seed)
    out = []
    for i, (comp, concepts) in enumerate(COMPS.items()):
        for k in range(per):
            out.append(ScoredImage(composition=comp, prompt_index=i, prompt=f"p{i}", concepts=concepts, sample=k,
                                   seed=1000 * i + k, path=f"eval/s/{comp}/{k}.png", sha256="0" * 64,
                                   cp_clip=float(rng.uniform(0, 0.6)), ti_clip=float(rng.uniform(0.1, 0.3))))
    return out


def _summary(images, checkpoint="file:///x/checkpoints/step-000200", step=200, sha="s1", earlier=()):
    return summarise(images, checkpoint=checkpoint, step=step, run="r", base_model="b", dataset="d",
                     prompt_set={"name": "set", "uri": "u", "sha256": sha}, vision={}, created=datetime.now(timezone.utc),
                     earlier=list(earlier))


def test_group_means_are_means_of_the_images():
    images = _images()
    res = _summary(images)
    mean = lambda ims, m: float(np.mean([getattr(i, m) for i in ims]))  # noqa: E731
    for m in ("cp_clip", "ti_clip"):
        assert getattr(res.overall, m).mean == pytest.approx(mean(images, m))
        for comp in COMPS:
            assert getattr(res.by_composition[comp], m).mean == pytest.approx(mean([i for i in images if i.composition == comp], m))
        assert getattr(res.by_concepts["<=3"], m).mean == pytest.approx(
            mean([i for i in images if i.composition in ("cat-mug", "trio")], m))
        assert getattr(res.by_concepts["4"], m).mean == pytest.approx(mean([i for i in images if i.composition == "four"], m))
        iv = getattr(res.overall, m)
        assert iv.low <= iv.mean <= iv.high and iv.low < iv.high and iv.n == 24
    assert list(res.by_concepts) == ["<=3", "4", "5"] and res.by_composition["trio"].images == 6
    # seeded: the same scores give the same interval
    assert _summary(images).overall == res.overall


def test_groups_without_images_are_left_out():
    res = _summary([i for i in _images() if i.composition == "cat-mug"])
    assert list(res.by_concepts) == ["<=3"] and list(res.by_composition) == ["cat-mug"]
    with pytest.raises(ValueError, match="no scored images"):
        _summary([])


def test_results_round_trip_and_comparison(tmp_path):
    old = _summary(_images(1), checkpoint=f"file://{tmp_path}/checkpoints/step-000100", step=100)
    write_results(old)
    read = read_results(old.checkpoint)
    assert read == old
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text("{}")
    assert read_results(f"file://{tmp_path}/broken") is None and read_results(f"file://{tmp_path}/none") is None
    other = _summary(_images(2), checkpoint="file:///x/checkpoints/step-000050", step=50, sha="s0")
    new = _summary(_images(), earlier=earlier_rows([old, other], "s1"))
    rows = comparison_rows(new)
    assert [r["step"] for r in rows] == [50, 100, 200]
    assert [r["same prompts"] for r in rows] == ["no (set)", "yes", "yes"]
    assert rows[2]["checkpoint"] == "step-000200 (this)"
    assert rows[1]["CP-CLIP"].startswith(f"{old.overall.cp_clip.mean:.3f} [")
    table = text_table(result_rows(new))
    assert table.splitlines()[0].split()[:3] == ["group", "composition", "images"]
    assert len(table.splitlines()) == 2 + 1 + 3 + 4
