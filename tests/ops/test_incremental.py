"""Changing or adding one composition recomputes that composition's work and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_recipe, small_recipe
from gen4gen.infra import progress

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def stage_outputs(out: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in out.rglob("*.png") if p.parent.name in ("composite", "mask", "repaint")}


def test_one_changed_and_one_added_composition_rerun_alone(tmp_path):
    raw = small_recipe(tmp_path, samples=1, canvas=128)
    first = run_recipe(raw)
    out = Path(first.uri.removeprefix("file://"))
    before = stage_outputs(out)

    raw["compositions"][1]["scenes"] = ["a garden"]  # cat-mug-rocket changes
    raw["compositions"].append({"id": "mug-rocket", "concepts": ["coffee", "rocket"], "samples": 1})
    raw["run"]["workers"] = 1  # a run setting: changes no image, so no cache key
    calls: list[tuple[str, str]] = []
    stop = progress.listen_computed(lambda comp, stage, n: calls.append((comp, stage)))
    try:
        second = run_recipe(raw)
    finally:
        stop()

    ran = {comp for comp, _ in calls}
    assert ran == {"cat-mug-rocket", "mug-rocket"}, f"stages ran for {sorted(ran)}"
    for comp in ("cat-mug-rocket", "mug-rocket"):
        assert {s for c, s in calls if c == comp} >= {"composite", "repaint", "caption", "filter"}
    after = stage_outputs(out)
    untouched = {p: t for p, t in before.items() if p.relative_to(out).parts[1] == "cat-mug"}
    assert untouched and all(after[p] == t for p, t in untouched.items())  # not even rewritten
    assert {st.composition for st in second.compositions} == {"cat-mug", "cat-mug-rocket", "mug-rocket"}
    kept_first = {k: v for k, v in first.files.items() if k.startswith("cat-mug/")}
    assert kept_first and all(second.files[k] == v for k, v in kept_first.items())
