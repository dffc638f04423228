"""The smoke run (`make benchmark-smoke`, benchmarks/smoke.py) names every benchmark script and
each declares its smallest mode: a new script cannot be forgotten by CI. Fast: nothing runs."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def smoke_module():
    spec = importlib.util.spec_from_file_location("benchmark_smoke", BENCHMARKS / "smoke.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def smoke():
    return smoke_module()


def test_discovery_names_every_benchmark_script(smoke):
    # A name starting with '_' is a helper a script imports (benchmarks/_share_judge.py), not a script.
    scripts = {p.stem for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_")} - {"smoke"}
    assert scripts, "no benchmark scripts found"
    assert {plan.name for plan in smoke.discover()} == scripts


def test_every_script_declares_its_small_mode_and_headline(smoke):
    for plan in smoke.discover():
        assert not plan.error, f"benchmarks/{plan.path.name}: {plan.error}"
        assert isinstance(plan.args, list) and all(isinstance(a, str) for a in plan.args), plan.name
        re.compile(plan.headline)


def test_a_script_without_a_small_mode_fails_the_smoke_run_loudly(smoke, tmp_path):
    (tmp_path / "good.py").write_text('SMOKE = ["--tiny"]\nHEADLINE = r"^rate: "\nprint("rate: 3")\n')
    (tmp_path / "forgotten.py").write_text('print("rate: 3")\n')
    (tmp_path / "broken.py").write_text('SMOKE = "--tiny"\nHEADLINE = r"x"\n')
    plans = {p.name: p for p in smoke.discover(tmp_path)}
    assert set(plans) == {"good", "forgotten", "broken"}
    assert plans["good"].args == ["--tiny"] and not plans["good"].error
    assert "declares no SMOKE" in plans["forgotten"].error
    assert "not a list of strings" in plans["broken"].error
    failed = smoke.run(plans["forgotten"], tmp_path)
    assert not failed.ok and "declares no SMOKE" in failed.headline


def test_a_run_shows_the_headline_and_what_could_not_run_here(smoke, tmp_path):
    (tmp_path / "bench.py").write_text(
        'import sys\nSMOKE = ["--small"]\nHEADLINE = r"^rate: "\n'
        'print("warming up")\nprint("not run here: the GPU figure (no CUDA)")\nprint("rate:", sys.argv[1:])\n')
    (tmp_path / "silent.py").write_text('SMOKE = []\nHEADLINE = r"^rate: "\nprint("nothing to say")\n')
    (tmp_path / "crashing.py").write_text('SMOKE = []\nHEADLINE = r"^rate: "\nraise SystemExit(3)\n')
    plans = {p.name: p for p in smoke.discover(tmp_path)}
    ok = smoke.run(plans["bench"], tmp_path)
    assert ok.ok and ok.headline == "rate: ['--small']"
    assert ok.notes == ["not run here: the GPU figure (no CUDA)"]
    silent = smoke.run(plans["silent"], tmp_path)
    assert not silent.ok and "no line matching HEADLINE" in silent.headline
    crashing = smoke.run(plans["crashing"], tmp_path)
    assert not crashing.ok and "exit 3" in crashing.headline
