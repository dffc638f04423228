"""The package as a user installs it: one top-level name, layers checked, configs shipped."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_layers_import_only_downward():
    """flows > tasks > models > infra (pyproject.toml [tool.importlinter]), by import-linter."""
    lint = BIN / "lint-imports"
    result = subprocess.run([str(lint), str(ROOT / "pyproject.toml")], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 kept, 0 broken" in result.stdout


def test_a_lower_room_importing_a_higher_one_breaks_its_contract(tmp_path):
    """The contracts are not vacuous: the package copied, two bad imports added, linted there
    with the same configuration. The copy comes first on the path (lint-imports puts its
    working directory there), so the installed package is not what it reads."""
    import shutil

    pkg = tmp_path / "gen4gen"
    for name in ("flows", "tasks", "models", "infra"):
        shutil.copytree(ROOT / name, pkg / name, ignore=shutil.ignore_patterns("__pycache__"))
    bad = {
        "tasks/stage.py": "from gen4gen.tasks.views import report",  # the stage layer reaching up into the views
        "models/repaint/repainter.py": "from gen4gen.models.plan import planner",  # one family using another's
    }
    for rel, line in bad.items():
        (pkg / rel).write_text((pkg / rel).read_text() + f"\n{line}  # noqa: E402,F401\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([str(BIN / "lint-imports"), str(ROOT / "pyproject.toml")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0, result.stdout
    out = result.stdout
    assert "tasks: rooms in the order data flows, none importing a later one BROKEN" in out
    assert "gen4gen.tasks.stage -> gen4gen.tasks.views.report" in out
    assert "models: the backends of one family import no other family's BROKEN" in out
    assert "gen4gen.models.repaint.repainter -> gen4gen.models.plan.planner" in out
    assert "Layers: flows > tasks > models > infra KEPT" in out


@pytest.mark.slow
def test_wheel_installs_only_gen4gen_at_the_top_level(tmp_path):
    import shutil

    # Built from a copy: an in-tree build would leave build/ and *.egg-info in the checkout.
    src = tmp_path / "src"
    for name in ("flows", "tasks", "models", "infra", "configs", "tests", "benchmarks"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(tmp_path), str(src)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("gen4gen-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.startswith("gen4gen-")}
    assert tops == {"gen4gen"}
    assert {"gen4gen/configs/demo.yaml", "gen4gen/configs/eval/demo.yaml", "gen4gen/tasks/views/report.js",
            "gen4gen/tasks/views/report.css", "gen4gen/tasks/views/templates/contact_sheet.html.j2",
            "gen4gen/models/plan/sizes.csv"} <= set(names)
    # Every folder of the tree ships as a package (a room left out of pyproject would be lost).
    rooms = {str(p.parent.relative_to(ROOT)) for p in ROOT.glob("[ftmi]*/**/__init__.py") if "tests" not in p.parts}
    assert {f"gen4gen/{room}/__init__.py" for room in rooms} <= set(names), rooms
    assert not any(n.startswith(("gen4gen/tests", "gen4gen/benchmarks")) for n in names)


def test_cli_and_default_prompts_resolve_from_an_empty_folder(tmp_path):
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    helped = subprocess.run([str(BIN / "gen4gen"), "evaluate", "--help"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0, helped.stderr
    assert "eval/demo.yaml" in helped.stdout
    code = ("from gen4gen.flows.evaluate import DEFAULT_PROMPTS; from gen4gen.tasks.evaluation.prompts import load_prompt_set;"
            " p = load_prompt_set(DEFAULT_PROMPTS); print(p.name, len(p.prompts), len(p.concepts))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    name, prompts, concepts = loaded.stdout.split()
    assert name == "demo-heldout" and int(prompts) == 5 and int(concepts) == 6


def test_a_users_own_models_package_does_not_mix_with_ours(tmp_path):
    """A folder holding its own `models/` (a user's project): ours is gen4gen.models."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("MINE = True\n")
    code = "import models, gen4gen.models.registry as r; print(models.MINE, r.__name__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "gen4gen.models.registry"]
