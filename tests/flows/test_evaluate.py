"""The evaluate flow end to end on tiny models (tiny SD 64 px, 2 steps, tiny CLIP and
OWL-ViT): images, scores, results.json, artifacts, the comparison with the run's earlier
checkpoints, the CLI, clear errors, and the checkpoint.landed trigger on a served deployment."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from gen4gen.infra.storage import read_bytes, sha256

REPO = Path(__file__).resolve().parents[2]
# 2 + 4 + 5 concepts: one composition in each group of the paper's table
PROMPTS = [
    {"composition": "cat-mug", "concepts": ["chelsea", "coffee"], "prompt": "A night view of Times Square, a <chelsea> cat and a <coffee> mug."},
    {"composition": "rider-cat-mug", "concepts": ["grace", "motorcycle", "chelsea", "coffee"],
     "prompt": "A rainy street, a <grace> person by a <motorcycle> motorcycle, a <chelsea> cat and a <coffee> mug."},
    {"composition": "launch-day", "concepts": ["astronaut", "rocket", "motorcycle", "chelsea", "coffee"],
     "prompt": "A snowy road, a <astronaut> person, a <motorcycle> motorcycle, a <rocket> rocket, a <chelsea> cat, a <coffee> mug."},
]


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory, tiny_vision) -> str:
    path = tmp_path_factory.mktemp("prompts") / "tiny.yaml"
    path.write_text(yaml.safe_dump({
        "name": "tiny-heldout", "recipe": str(REPO / "configs" / "demo.yaml"), "samples": 2, "seed": 7,
        "generation": {"steps": 2, "size": 64, "batch": 2},
        "vision": {**tiny_vision, "feature_cache": str(path.parent / "features")}, "prompts": PROMPTS,
    }))
    return str(path)


def _api_env() -> dict:
    from prefect.settings import PREFECT_API_URL

    return {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(REPO)}


def test_evaluate_writes_results_and_compares(prefect_harness, tiny_run, prompt_file):
    from gen4gen.flows.evaluate import evaluate

    first = evaluate(str(tiny_run["checkpoints"][100]), prompt_file, step=100, device="cpu")
    state = evaluate(str(tiny_run["checkpoints"][200]) + "/", prompt_file, device="cpu", return_state=True)
    second = state.result()
    ck = tiny_run["checkpoints"][200]
    assert second == f"file://{ck}/results.json" and first.endswith("step-000100/results.json")
    res = json.loads((ck / "results.json").read_text())

    assert res["format"] == "gen4gen-eval-results/1" and res["step"] == 200 and res["run"] == "tiny-run"
    assert res["prompt_set"]["name"] == "tiny-heldout" and res["base_model"] == str(tiny_run["base"])
    images = res["images"]
    assert len(images) == 6 and {i["composition"] for i in images} == {p["composition"] for p in PROMPTS}
    for im in images:  # every image is in storage, as recorded, and was scored on all its concepts
        assert sha256(read_bytes(f"{ck}/{im['path']}")) == im["sha256"]
        assert im["seed"] == 7 + 1000 * im["prompt_index"] + im["sample"]
        assert set(im["detail"]["concepts"]) == set(im["concepts"])
        assert -1 <= im["cp_clip"] <= 1 and -1 <= im["ti_clip"] <= 1
        assert "<" not in im["detail"]["text"]  # TI-CLIP's text has no concept tokens
    # each group's mean is the mean of its images' scores; each interval holds its mean
    groups = {"<=3": ["cat-mug"], "4": ["rider-cat-mug"], "5": ["launch-day"]}
    assert list(res["by_concepts"]) == ["<=3", "4", "5"]
    for m in ("cp_clip", "ti_clip"):
        assert res["overall"][m]["mean"] == pytest.approx(np.mean([i[m] for i in images]))
        for comp, g in res["by_composition"].items():
            assert g[m]["mean"] == pytest.approx(np.mean([i[m] for i in images if i["composition"] == comp]))
            assert g[m]["low"] <= g[m]["mean"] <= g[m]["high"] and g[m]["n"] == g["images"] == 2
        for name, comps in groups.items():
            assert res["by_concepts"][name][m]["mean"] == pytest.approx(
                np.mean([i[m] for i in images if i["composition"] in comps]))
    # the earlier checkpoint of the run is compared; the same seeds made other images
    assert [(e["step"], e["same_prompts"]) for e in res["earlier"]] == [(100, True)]
    old = json.loads(read_bytes(first))
    assert res["earlier"][0]["overall"] == old["overall"] and old["earlier"] == []
    assert {i["sha256"] for i in old["images"]}.isdisjoint({i["sha256"] for i in images})

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
        # the run's task list names each task by composition, as generate's
        assert sorted(t.name for t in tasks) == sorted(f"{s}[{p['composition']}]" for p in PROMPTS for s in ("sample", "score"))
        keys = ["eval-tiny-run-step-200", "eval-tiny-run-tiny-heldout-history", "eval-tiny-run-step-200-samples"]
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
        arts = {a.key: a for a in sorted(found, key=lambda a: a.created)}  # a key's latest version last
    assert set(arts) == set(keys)
    table = json.loads(arts["eval-tiny-run-step-200"].data)
    assert [r["group"] for r in table][:4] == ["all", "<=3 concepts", "4 concepts", "5 concepts"]
    history = json.loads(arts["eval-tiny-run-tiny-heldout-history"].data)
    assert [r["step"] for r in history] == [100, 200]
    md = arts["eval-tiny-run-step-200-samples"].data
    assert md.count("data:image/jpeg;base64,") == 6 and "&lt;chelsea&gt;" in md


def test_bad_inputs_are_named(prefect_harness, tiny_run, prompt_file, tmp_path):
    from gen4gen.flows.evaluate import EvaluationError, check_inputs, evaluate
    from gen4gen.infra.checkpoint import CheckpointError
    from gen4gen.tasks.evaluation.prompts import PromptSetError

    with pytest.raises(CheckpointError, match="step-000999: no such folder"):
        evaluate(str(tmp_path / "step-000999"), prompt_file)
    with pytest.raises(PromptSetError, match="nothing.yaml: not found"):
        evaluate(str(tiny_run["checkpoints"][100]), str(tmp_path / "nothing.yaml"))
    with pytest.raises(EvaluationError, match="the event says step 5, checkpoint.json says 100"):
        evaluate(str(tiny_run["checkpoints"][100]), prompt_file, step=5)
    unknown = tmp_path / "unknown.yaml"
    raw = yaml.safe_load(Path(prompt_file).read_text())
    raw["concepts"] = [{"id": "dog", "category": "dog", "token": "<dog>", "photos": ["pkgdata://skimage/data/chelsea.png"]},
                       {"id": "chelsea", "category": "cat", "token": "<chelsea>", "photos": ["pkgdata://skimage/data/chelsea.png"]}]
    del raw["recipe"]
    raw["prompts"] = [{"composition": "dog-cat", "concepts": ["dog", "chelsea"], "prompt": "a <dog> dog and a <chelsea> cat"}]
    unknown.write_text(yaml.safe_dump(raw))
    with pytest.raises(EvaluationError, match=r"concept\(s\) \['dog'\] are not in the checkpoint"):
        check_inputs(str(tiny_run["checkpoints"][100]), str(unknown))


def test_an_uncached_open_clip_fails_the_evaluation_in_seconds_before_sampling(
        prefect_harness, tiny_run, prompt_file, tiny_vision, tmp_path, monkeypatch):
    import open_clip  # noqa: F401  (imported before the clock: the import is not the wait fixed)
    from huggingface_hub import constants

    from gen4gen.flows.evaluate import evaluate
    from gen4gen.models import hf

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # empty; the constant is read at import
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    from tests.tiny.checkpoint import WEIGHTS

    checkpoint = tmp_path / "train" / "checkpoints" / "step-000100"  # as trained: no samples yet
    keep = {WEIGHTS, "embeddings", "checkpoint.json"}
    shutil.copytree(tiny_run["checkpoints"][100], checkpoint, ignore=lambda d, names: [n for n in names
                    if d == str(tiny_run["checkpoints"][100]) and n not in keep])
    before = sorted(p.name for p in checkpoint.iterdir())
    assert set(before) == keep
    vision = {"clip": {"model": "ViT-B-32", "pretrained": "openai", "device": "cpu"}, "owlvit": tiny_vision["owlvit"]}
    start = time.monotonic()
    state = evaluate(str(checkpoint), prompt_file, vision=vision, device="cpu", return_state=True)
    assert state.is_failed() and time.monotonic() - start < 5
    err = state.result(raise_on_failure=False)
    assert isinstance(err, hf.WeightsMissing)
    for part in ("'ViT-B-32'", "'openai'", "timm/vit_base_patch32_clip_224.openai", str(tmp_path / "hf" / "hub"),
                 "hf download", "local checkpoint file"):
        assert part in str(err), part
    assert sorted(p.name for p in checkpoint.iterdir()) == before  # nothing sampled


@pytest.mark.slow
def test_cli_prints_the_results_table(prefect_harness, tiny_run, prompt_file, tmp_path):
    cli = [sys.executable, "-m", "gen4gen.flows.cli", "evaluate"]
    done = subprocess.run([*cli, "--checkpoint", str(tiny_run["checkpoints"][100]), "--prompts", prompt_file,
                           "--samples", "1", "--device", "cpu"], cwd=REPO, env=_api_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("tiny-run step 100 on tiny-heldout: 3 images")
    assert lines[1].split()[:4] == ["group", "composition", "images", "CP-CLIP"]
    assert any(line.startswith("5 concepts") for line in lines) and lines[-1].endswith("step-000100/results.json")
    bad = subprocess.run([*cli, "--checkpoint", str(tmp_path / "nope"), "--prompts", prompt_file], cwd=REPO,
                         env=_api_env(), capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "nope: no such folder" in bad.stderr


@pytest.mark.slow
def test_checkpoint_landed_event_runs_the_deployment(prefect_harness, tiny_run, prompt_file, tmp_path):
    """A served deployment with the trigger in flows/evaluate.py; an emitted event starts it."""
    import shutil

    from prefect.client.orchestration import get_client
    from prefect.events import emit_event
    from prefect.events.clients import get_events_client  # noqa: F401  (the emitter flushes through it)

    from gen4gen.flows.evaluate import CHECKPOINT_EVENT, DEPLOYMENT

    ck = tmp_path / "train" / "checkpoints" / "step-000300"
    shutil.copytree(tiny_run["checkpoints"][200], ck, ignore=shutil.ignore_patterns("results.json", "eval"))
    info = json.loads((ck / "checkpoint.json").read_text())
    info["step"] = 300
    (ck / "checkpoint.json").write_text(json.dumps(info))
    serve = subprocess.Popen(
        [sys.executable, "-c", f"from flows.evaluate import serve; serve({prompt_file!r}, limit=1)"],
        cwd=REPO, env={**_api_env(), "PREFECT_RUNNER_POLL_FREQUENCY": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    t0 = time.monotonic()
    try:
        with get_client(sync_client=True) as client:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:  # the deployment and its automation exist once served
                automations = [a for a in client.read_automations() if a.name == "evaluate-landed-checkpoint"]
                if automations:
                    break
                assert serve.poll() is None, serve.stdout.read()
                time.sleep(0.5)
            assert automations, "the served deployment's trigger never appeared"
            time.sleep(1)  # let the trigger service load the new automation
            emit_event(event=CHECKPOINT_EVENT, resource={"prefect.resource.id": "gen4gen.checkpoint.tiny-run.300"},
                       payload={"checkpoint": str(ck), "step": 300, "run": "tiny-run", "dataset": "data/demo",
                                "dataset_version": "0" * 64})
            deadline, runs = time.monotonic() + 120, []
            while time.monotonic() < deadline:
                runs = [r for r in client.read_flow_runs() if r.deployment_id is not None
                        and r.parameters.get("checkpoint") == str(ck)]
                if runs and runs[0].state and runs[0].state.is_final():
                    break
                time.sleep(1)
        assert runs, f"no flow run was started by the event within {time.monotonic() - t0:.0f} s"
        run = runs[0]
        assert run.state.is_completed(), run.state
        assert int(run.parameters["step"]) == 300 and run.parameters["prompts"] == prompt_file
        res = json.loads((ck / "results.json").read_text())
        assert res["step"] == 300 and len(res["images"]) == 6
        assert DEPLOYMENT
    finally:
        serve.terminate()
        try:
            serve.wait(timeout=20)
        except subprocess.TimeoutExpired:
            serve.kill()


TRIGGER_YAML = """
type: event
name: evaluate-landed-checkpoint
description: Evaluate every checkpoint the train flow lands
enabled: true
match:
  prefect.resource.id: gen4gen.checkpoint.*
expect:
  - checkpoint.landed
parameters:
  checkpoint: "{{ event.payload.checkpoint }}"
  step: "{{ event.payload.step }}"
  upstream: "{{ event.payload.flow_run | default('') }}"
"""


def test_trigger_yaml_form_is_the_code_trigger():
    """The YAML given to prefect.yaml (README/report) is the trigger in flows/evaluate.py;
    when the project's prefect.yaml has the deployment, its trigger is the same too."""
    from prefect.events import DeploymentEventTrigger

    from gen4gen.flows.evaluate import CHECKPOINT_TRIGGER, DEPLOYMENT

    assert DeploymentEventTrigger.model_validate(yaml.safe_load(TRIGGER_YAML)) == CHECKPOINT_TRIGGER
    project = REPO / "prefect.yaml"
    deployments = (yaml.safe_load(project.read_text()) or {}).get("deployments", []) if project.exists() else []
    mirrored = [d for d in deployments if d.get("name") == DEPLOYMENT]
    if not mirrored:
        pytest.skip(f"prefect.yaml has no {DEPLOYMENT} deployment yet")
    assert mirrored[0]["entrypoint"] == "flows/evaluate.py:evaluate"
    # name and description only label the automation in the UI; the rest must be the same
    what = lambda t: t.model_dump(exclude={"name", "description"})  # noqa: E731
    assert [what(DeploymentEventTrigger.model_validate(t)) for t in mirrored[0]["triggers"]] == [what(CHECKPOINT_TRIGGER)]


def test_evaluates_a_checkpoint_the_train_flow_wrote(prefect_harness, tiny_vision, tmp_path):
    """The contract between the helpers, end to end: train's own code writes the checkpoint
    (2 steps on a small published dataset), the evaluation reads and scores it."""
    from gen4gen.flows.evaluate import evaluate
    from gen4gen.tasks.training import train as T
    from tests.tiny.dataset import published_small, tiny_base

    result = T.train_model(T.TrainConfig(dataset=published_small(), out=str(tmp_path / "run"), base_model=tiny_base(),
                                         steps=2, batch_size=2, micro_batch=1, resolution=64, checkpoint_every=2))
    pset = tmp_path / "small.yaml"
    pset.write_text(yaml.safe_dump({
        "name": "small-heldout", "samples": 1, "generation": {"steps": 1, "size": 64},
        "concepts": [
            {"id": "chelsea", "category": "cat", "token": "<chelsea>", "photos": ["pkgdata://skimage/data/chelsea.png"]},
            {"id": "coffee", "category": "mug", "token": "<coffee>", "photos": ["pkgdata://skimage/data/coffee.png"]},
            {"id": "rocket", "category": "rocket", "token": "<rocket>", "photos": ["pkgdata://skimage/data/rocket.jpg"]},
        ],
        "vision": tiny_vision,
        "prompts": [{"composition": "cat-mug-rocket", "concepts": ["chelsea", "coffee", "rocket"],
                     "prompt": "On the moon, a <chelsea> cat, a <coffee> mug and a <rocket> rocket."}],
    }))
    res = json.loads(read_bytes(evaluate(result.latest, str(pset), step=2, device="cpu")))
    assert res["run"] == result.run and res["step"] == 2 and len(res["images"]) == 1
    assert list(res["by_concepts"]) == ["<=3"]


def test_checkpoint_on_s3(prefect_harness, tiny_run, prompt_file, s3_server):
    """The same flow on object storage: the checkpoint is read from S3 (copied locally for
    diffusers), images, results.json and thumbnails are written there, siblings listed there."""
    import fsspec

    from gen4gen.flows.evaluate import evaluate
    from gen4gen.tasks.evaluation.summarise import Results, thumbnails_markdown

    fs = fsspec.filesystem("s3")
    for step, folder in tiny_run["checkpoints"].items():  # the checkpoint's files only (no earlier results)
        for f in ["pytorch_custom_diffusion_weights.safetensors", *(f"embeddings/{p.name}" for p in (folder / "embeddings").iterdir()),
                  "checkpoint.json"]:
            fs.put_file(str(folder / f), f"factory/train/checkpoints/step-{step:06d}/{f}")
    first = evaluate(f"{s3_server}/train/checkpoints/step-000100", prompt_file, samples=1, device="cpu")
    uri = evaluate(f"{s3_server}/train/checkpoints/step-000200", prompt_file, samples=1, device="cpu")
    assert first == f"{s3_server}/train/checkpoints/step-000100/results.json"
    res = Results.model_validate_json(read_bytes(uri))
    assert len(res.images) == 3 and [e.step for e in res.earlier] == [100]
    for im in res.images:
        assert sha256(read_bytes(f"{res.checkpoint}/{im.path}")) == im.sha256
    md = thumbnails_markdown(res)
    assert md.count("Signature=") == 3 and "data:image" not in md  # presigned links, not inlined
