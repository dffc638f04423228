"""Identity follows the data: each change recomputes exactly the stages it affects.

Stage calls are counted as the stages report them (infra/progress.py: `computed`, the
samples a stage really ran its backend or code on, not those read back from their records).
Most cases walk the declared stages in a plain loop (tasks/pipeline.py: run_local), the
same stage functions the flow's tasks call; the A -> B -> A case runs the CLI, as a user
does, and a code edit is made to a copy of the package in a subprocess.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from conftest import small_recipe
from gen4gen.infra import progress
from gen4gen.infra.records import DatasetConfig
from gen4gen.tasks.pipeline import run_local
from gen4gen.tasks.publishing.verify import problems

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("segment", "plan", "composite", "repaint", "caption", "filter")


def computed(raw: dict, out: str) -> tuple[Counter, object]:
    """Run the recipe into `out`; (stage -> samples computed, per composition too), manifest."""
    counts: Counter = Counter()
    stop = progress.listen_computed(lambda comp, stage, n: counts.update({stage: n, (comp, stage): n}))
    try:
        manifest, _, _ = run_local(DatasetConfig.model_validate(raw), out)
    finally:
        stop()
    return counts, manifest


def stages_run(counts: Counter) -> dict[str, int]:
    return {s: counts[s] for s in STAGES if counts[s]}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """The first run, computed once; a copy of what it left is kept beside it."""
    tmp = tmp_path_factory.mktemp("identity")
    raw = small_recipe(tmp, samples=2, canvas=128)
    out = str(tmp / "out")
    counts, manifest = computed(raw, out)
    # 3 photos segmented; 2 compositions x 2 samples through every sample stage.
    assert stages_run(counts) == {"segment": 3, "plan": 4, "composite": 4, "repaint": 4, "caption": 4, "filter": 4}
    shutil.copytree(out, tmp / "first", symlinks=True)  # copy2: contents and mtimes
    return raw, out, manifest, tmp / "first"


@pytest.fixture()
def first(first_run):
    """Each test starts from the first run's output exactly as that run left it, at the
    same path (records and manifests name it): put back from the copy, not recomputed."""
    raw, out, manifest, kept = first_run
    shutil.rmtree(out)
    shutil.copytree(kept, out, symlinks=True)
    return copy.deepcopy(raw), out, manifest.model_copy(deep=True)


def test_a_rerun_recomputes_nothing_and_publishes_the_same_files(first):
    raw, out, manifest = first
    counts, again = computed(raw, out)
    assert stages_run(counts) == {}
    assert again.files == manifest.files and problems(out) == []


def test_a_filter_threshold_runs_only_the_filter(first):
    raw, out, manifest = first
    changed = copy.deepcopy(raw)
    changed.setdefault("stages", {})["filter"] = {"max_occlusion": 0.45}
    counts, again = computed(changed, out)
    assert stages_run(counts) == {"filter": 4}
    # Same samples (ids and images): only the verdicts could differ.
    ids = lambda m: sorted(p for p in m.files if "/images/" in p)  # noqa: E731
    assert ids(again) == ids(manifest)


def test_a_caption_option_runs_caption_and_filter(first):
    raw, out, _ = first
    changed = copy.deepcopy(raw)
    changed.setdefault("stages", {})["caption"] = {"backend": "template", "options": {"openings": ["a picture of"]}}
    counts, _ = computed(changed, out)
    assert stages_run(counts) == {"caption": 4, "filter": 4}


def test_a_repaint_option_runs_repaint_and_after(first):
    raw, out, manifest = first
    changed = copy.deepcopy(raw)
    changed.setdefault("stages", {})["repaint"] = {"backend": "offline", "options": {"blur": 3.0}}
    counts, again = computed(changed, out)
    assert stages_run(counts) == {"repaint": 4, "caption": 4, "filter": 4}
    # New images publish under new names: no published name is ever rewritten.
    old = {p for p in manifest.files if "/images/" in p}
    new = {p for p in again.files if "/images/" in p}
    assert old and new and not old & new
    assert problems(out) == []


def test_a_renamed_token_recaptions_without_replanning(first):
    raw, out, _ = first
    changed = copy.deepcopy(raw)
    changed["concepts"][2]["token"] = "<toy-rocket>"  # used by cat-mug-rocket only
    counts, again = computed(changed, out)
    assert stages_run(counts) == {"caption": 2, "filter": 2}
    rows = [json.loads(x) for x in Path(out, "metadata.jsonl").read_text().splitlines()]
    assert all("<toy-rocket>" in r["text"] for r in rows if r["composition"] == "cat-mug-rocket")


def test_one_more_sample_computes_one_sample_per_stage(first):
    raw, out, _ = first
    changed = copy.deepcopy(raw)
    changed["compositions"][0]["samples"] = 3
    counts, manifest = computed(changed, out)
    assert stages_run(counts) == {"plan": 1, "composite": 1, "repaint": 1, "caption": 1, "filter": 1}
    assert counts[("cat-mug", "filter")] == 1 and manifest.planned == 5


def test_one_more_composition_computes_only_it(first):
    raw, out, _ = first
    changed = copy.deepcopy(raw)
    changed["compositions"].append({"id": "mug-rocket", "concepts": ["coffee", "rocket"], "samples": 2})
    counts, manifest = computed(changed, out)
    assert stages_run(counts) == {"plan": 2, "composite": 2, "repaint": 2, "caption": 2, "filter": 2}
    assert {k[0] for k in counts if isinstance(k, tuple)} == {"mug-rocket"}
    assert [c.composition for c in manifest.compositions] == ["cat-mug", "cat-mug-rocket", "mug-rocket"]


def test_a_damaged_record_costs_one_recomputation_not_a_wrong_result(first):
    raw, out, manifest = first
    folder = Path(out, ".stages", "cat-mug", "repaint")
    record = sorted(p for p in folder.glob("*.json") if not p.name.startswith("from-"))[0]
    record.write_text('{"not": "a sample"')
    # The composition is unchanged: its stage hands on the set it made (its note), so the
    # record is not even read.
    counts, again = computed(raw, out)
    assert stages_run(counts) == {} and again.files == manifest.files
    for note in folder.glob("from-*.json"):
        note.write_text("{")
    counts, again = computed(raw, out)
    # Now the records are read: the sample is repainted again (same bytes, same key), so
    # nothing after it changes.
    assert stages_run(counts) == {"repaint": 1}
    assert again.files == manifest.files


@pytest.mark.slow
def test_recipe_a_then_b_then_a_in_one_out_through_the_flow(tmp_path, prefect_harness):
    """The issue's case, through the generate flow: the third run succeeds and recomputes
    nothing that still exists (the old cache pointed at a shard the second publish removed)."""
    from conftest import run_recipe

    a = small_recipe(tmp_path, samples=2, canvas=128)
    b = copy.deepcopy(a)
    b.setdefault("stages", {})["filter"] = {"max_occlusion": 0.45}
    out = str(tmp_path / "out")
    first = run_recipe(a, out)
    run_recipe(b, out)
    counts: Counter = Counter()
    stop = progress.listen_computed(lambda comp, stage, n: counts.update({stage: n}))
    try:
        third = run_recipe(a, out)
    finally:
        stop()
    assert stages_run(counts) == {}  # every output of A, verdicts included, still exists
    assert third.files == first.files and problems(out) == []
    repaints = sorted(p.name for p in Path(out, ".stages", "cat-mug", "repaint").glob("*.png"))
    assert len(repaints) == 2  # one image per sample through A, B and A again


CODE_EDIT = """
import json, sys
from collections import Counter
from gen4gen.infra import progress
from gen4gen.infra.records import DatasetConfig
from gen4gen.tasks.pipeline import run_local
import gen4gen.tasks.stage as stage
assert stage.__file__.startswith(sys.argv[3]), stage.__file__  # the copy, not the checkout
counts = Counter()
progress.listen_computed(lambda comp, name, n: counts.update({name: n}))
run_local(DatasetConfig.model_validate(json.loads(sys.argv[1])), sys.argv[2])
print(json.dumps(dict(counts)))
"""


@pytest.mark.slow
def test_a_comment_in_training_code_recomputes_nothing_and_one_in_repaint_code_does(tmp_path):
    """The package is copied so that its source can be edited for real, then run as is."""
    pkg = tmp_path / "pkg" / "gen4gen"
    for folder in ("flows", "tasks", "models", "infra", "configs"):
        shutil.copytree(ROOT / folder, pkg / folder, ignore=shutil.ignore_patterns("__pycache__"))
    raw = small_recipe(tmp_path, samples=1, canvas=128)
    out = str(tmp_path / "out")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "pkg")}

    def run() -> dict:
        done = subprocess.run([sys.executable, "-c", CODE_EDIT, json.dumps(raw), out, str(pkg)], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return {k: v for k, v in json.loads(done.stdout.splitlines()[-1]).items() if v}

    assert set(run()) == set(STAGES)
    for module in ("tasks/training/train.py", "flows/evaluate.py", "tasks/views/report.py", "flows/cli.py", "models/train/custom_diffusion.py"):
        with open(pkg / module, "a") as f:
            f.write("\n# a comment that changes no image\n")
    assert run() == {}
    with open(pkg / "tasks/repaint.py", "a") as f:
        f.write("\n# a change in the repaint stage's own code\n")
    assert run() == {"repaint": 2, "caption": 2, "filter": 2}
