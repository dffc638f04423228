"""Tier 3: nothing lost. Determinism, faults, concurrent runs, crashes (issue 8)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

import faults
from conftest import REPO, small_recipe
from conftest import run_recipe as run_flow
from gen4gen.infra.storage import read_bytes
from gen4gen.tasks.publishing.publish import read_manifest, read_shard
from gen4gen.tasks.publishing.verify import fingerprint, problems

pytestmark = pytest.mark.usefixtures("prefect_harness")

def check_consistent(out: str) -> None:
    """The reader's contract: what the manifest lists exists with its hash, no sample twice,
    kept + dropped + failed = planned, images/ folders hold exactly the listed images."""
    assert problems(out) == []


def test_verify_finds_a_damaged_dataset(tmp_path):
    raw = small_recipe(tmp_path, samples=1)
    manifest = run_flow(raw)
    out = manifest.uri
    assert problems(out) == []
    image = next(p for p in manifest.files if "/images/" in p)
    path = Path(out.removeprefix("file://"), image)
    path.write_bytes(path.read_bytes() + b"x")
    Path(path.parent, "extra.png").write_bytes(b"not listed")
    found = problems(out)
    assert any(image in p and "does not match" in p for p in found)
    assert any("extra.png" in p for p in found)


def test_same_recipe_gives_a_byte_identical_dataset(tmp_path):
    raw = small_recipe(tmp_path, samples=2)
    run_flow(raw, str(tmp_path / "a"))
    raw["run"]["cache"] = False  # recompute everything, into another folder
    run_flow(raw, str(tmp_path / "b"))
    a, b = fingerprint(str(tmp_path / "a")), fingerprint(str(tmp_path / "b"))
    assert a == b
    for name in ("metadata.jsonl", "concepts_list.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_transient_faults_on_a_share_of_storage_requests(tmp_path, monkeypatch):
    monkeypatch.setenv("GEN4GEN_IO_BACKOFF", "0.01")
    faults.register()
    raw = small_recipe(tmp_path, samples=2)
    run_flow(raw, str(tmp_path / "clean"))
    faults.Faults.configure(rate=0.15, seed=1)
    try:
        run_flow(raw, f"faulty://{tmp_path}/flaky")
    finally:
        injected = faults.Faults.injected
        faults.Faults.configure(rate=0.0)
    assert injected >= 10, "the test must actually inject faults"
    assert fingerprint(str(tmp_path / "flaky")) == fingerprint(str(tmp_path / "clean"))
    check_consistent(str(tmp_path / "flaky"))


def test_an_unreachable_photo_fails_only_its_samples(tmp_path, monkeypatch):
    monkeypatch.setenv("GEN4GEN_IO_RETRIES", "2")
    monkeypatch.setenv("GEN4GEN_IO_BACKOFF", "0.01")
    faults.register()
    photo_dir = tmp_path / "photos"
    photo_dir.mkdir()
    (photo_dir / "rocket.jpg").write_bytes(read_bytes("pkgdata://skimage/data/rocket.jpg"))
    raw = small_recipe(tmp_path, samples=2)
    raw["concepts"][2]["photos"] = [f"faulty://{photo_dir}/rocket.jpg"]
    faults.Faults.configure(rate=1.0)  # every request to that store fails: it is down
    try:
        manifest = run_flow(raw)
    finally:
        faults.Faults.configure(rate=0.0)
    stats = {st.composition: st for st in manifest.compositions}
    assert stats["cat-mug-rocket"].failed == 2 and stats["cat-mug-rocket"].reasons == {"unreachable": 2}
    assert stats["cat-mug"].failed == 0
    assert "unreachable after retries" in manifest.unusable_photos[f"faulty://{photo_dir}/rocket.jpg"]


def test_two_runs_of_different_recipes_on_one_output_at_once(tmp_path):
    out = str(tmp_path / "shared")
    first, second = small_recipe(tmp_path, samples=2), small_recipe(tmp_path, samples=3)
    errors: list[BaseException] = []

    def go(raw):
        try:
            run_flow(raw, out)
        except BaseException as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=go, args=(raw,)) for raw in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    check_consistent(out)  # whichever published last, its manifest is whole
    assert read_manifest(out).planned in (4, 6)
    assert not Path(out, ".lease").exists()


# --------------------------------------------------------------------------- crashes


def write_recipe(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def gen4gen(recipe: Path, out: Path, env: dict) -> subprocess.Popen:
    # A session of its own, so the kill takes the temporary Prefect server down too.
    return subprocess.Popen(
        [sys.executable, "-m", "gen4gen.flows.cli", "generate", str(recipe), "--out", str(out)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )


def kill_at(proc: subprocess.Popen, seconds: float) -> bool:
    """SIGKILL the run's whole process group after `seconds`; False if it finished first."""
    try:
        proc.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


@pytest.mark.slow
def test_killed_runs_resume_to_the_uninterrupted_result(tmp_path):
    raw = small_recipe(tmp_path, samples=3)
    recipe = write_recipe(tmp_path, raw)
    reference = tmp_path / "reference"
    run_flow(raw, str(reference))

    out = tmp_path / "crashy"
    # Start from an older version already published there: a reader must always find a
    # whole dataset, the old one or the new one, whenever the kill lands.
    run_flow(small_recipe(tmp_path, samples=1), str(out))
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    env.pop("PREFECT_API_URL", None)
    rng = random.Random(8)
    kills = 0
    for _ in range(5):
        if kill_at(gen4gen(recipe, out, env), rng.uniform(3.0, 12.0)):
            kills += 1
        check_consistent(str(out))
    final = gen4gen(recipe, out, env)
    assert final.wait(timeout=300) == 0, final.stderr.read().decode()[-2000:]
    assert kills >= 3, "most runs must be killed for the test to mean something"
    check_consistent(str(out))
    assert fingerprint(str(out)) == fingerprint(str(reference))


def test_llm_planner_faults_are_survived_with_the_same_result(tmp_path, monkeypatch):
    from fake_llm import FakeLLM

    monkeypatch.setenv("FAKE_LLM_KEY", "sk-fake")
    with FakeLLM() as llm:
        raw = small_recipe(tmp_path, samples=2)
        raw["stages"] = {"plan": {"backend": "openai", "options": {
            "base_url": llm.url, "model": "fake", "api_key_env": "FAKE_LLM_KEY", "timeout": 1.5}}}
        raw["run"]["cache"] = False  # the second run must ask the endpoint again
        run_flow(raw, str(tmp_path / "healthy"))
        healthy_requests = len(llm.requests)
        llm.every = (3, ("status", 500))  # now every third request fails
        llm.script = [("status", 429), ("text", '{"boxes": [{"name"'), ("sleep", 2.5)]
        flaky = run_flow(raw, str(tmp_path / "flaky"))
        assert len(llm.requests) - healthy_requests > healthy_requests >= 4
    assert fingerprint(str(tmp_path / "flaky")) == fingerprint(str(tmp_path / "healthy"))
    shard = read_shard(flaky.uri, flaky.compositions[0])
    assert {s.plan.planner for s in shard} == {"openai"}  # every layout came from the endpoint
