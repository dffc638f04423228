"""Summarising scores: every group's mean is the mean of its images' scores; groups by
composition and by number of concepts; the comparison with earlier checkpoints."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from gen4gen.tasks.evaluation.summarise import (
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
    assert rows[1]["CP-CLIP"] == round(old.overall.cp_clip.mean, 4)  # a number: the table sorts and plots
    assert rows[1]["CP-CLIP 95% CI"] == f"[{old.overall.cp_clip.low:.3f}, {old.overall.cp_clip.high:.3f}]"
    assert isinstance(rows[0]["TI-CLIP"], float) and rows[0]["CP-CLIP 4"] == round(other.by_concepts["4"].cp_clip.mean, 4)
    table = text_table(result_rows(new))
    assert table.splitlines()[0].split()[:3] == ["group", "composition", "images"]
    assert len(table.splitlines()) == 2 + 1 + 3 + 4


def test_history_holds_evaluations_that_finish_together(prefect_harness, tmp_path):
    """Two checkpoints of a run evaluated at once: neither saw the other's results.json
    while it scored, and the one that saw less publishes last. The run's history table (its
    newest version) still holds both, read back through Prefect's API."""
    import json

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    from gen4gen.tasks.evaluation.summarise import history_key, publish_history

    made = {}
    for step in (100, 200):
        folder = tmp_path / "checkpoints" / f"step-{step:06d}"
        folder.mkdir(parents=True)
        (folder / "checkpoint.json").write_text("{}")  # what marks a sibling checkpoint
        made[step] = _summary(_images(step), checkpoint=f"file://{folder}", step=step)  # earlier: none seen
        made[step] = made[step].model_copy(update={"run": "together"})
    for step in (100, 200):
        write_results(made[step])
    publish_history(made[200])
    publish_history(made[100])  # last, with the comparison it made before step 200's results landed
    with get_client(sync_client=True) as client:
        newest = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[history_key(made[100])])),
                                       sort=ArtifactSort.CREATED_DESC, limit=1)[0]
    rows = json.loads(newest.data)
    assert [r["step"] for r in rows] == [100, 200]
    assert [r["CP-CLIP"] for r in rows] == [round(made[s].overall.cp_clip.mean, 4) for s in (100, 200)]
    assert rows[0]["checkpoint"] == "step-000100 (this)"
