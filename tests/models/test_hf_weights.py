"""Missing weights fail within seconds, before anything loads, naming the model, its
revision, where it was looked for and the two fixes; in a flow, without retries, and the
message is in the run's log in the Prefect API (what the UI shows)."""

from __future__ import annotations

import time

import pytest

from gen4gen.models import hf


def test_an_uncached_hub_id_offline_fails_at_once_with_what_to_do(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(hf.WeightsMissing) as err:
        hf.source({"model": "nobody/not-cached", "revision": "abc123"}, what="stages.caption (llava)")
    assert time.monotonic() - start < 5
    text = str(err.value)
    for part in ("stages.caption (llava)", "'nobody/not-cached'", "'abc123'", constants.HF_HUB_CACHE,
                 "hf download nobody/not-cached --revision abc123", "local folder", "HF_HUB_OFFLINE=1"):
        assert part in text, part


def test_a_missing_folder_names_the_path_and_the_fixes(tmp_path):
    with pytest.raises(hf.WeightsMissing, match="does not exist") as err:
        hf.source({"model": str(tmp_path / "nowhere")}, what="train.base_model")
    assert str(tmp_path / "nowhere") in str(err.value) and "hf download" in str(err.value)
    assert isinstance(err.value, FileNotFoundError)  # callers that caught that still do


def test_a_cached_revision_and_a_local_folder_pass(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = tmp_path.parent / "cache-check"
    snap = f"{constants.HF_HUB_CACHE}/models--someone--cached"
    import os

    os.makedirs(f"{snap}/refs", exist_ok=True)
    os.makedirs(f"{snap}/snapshots/0123456789abcdef0123456789abcdef01234567", exist_ok=True)
    open(f"{snap}/refs/main", "w").write("0123456789abcdef0123456789abcdef01234567")
    open(f"{snap}/snapshots/0123456789abcdef0123456789abcdef01234567/config.json", "w").write("{}")
    assert hf.source({"model": "someone/cached"}, what="x").path == "someone/cached"
    with pytest.raises(hf.WeightsMissing, match="'v2'"):  # another revision is not cached
        hf.source({"model": "someone/cached", "revision": "v2"}, what="x")
    repo.mkdir(exist_ok=True)
    assert hf.source({"model": str(repo)}, what="x").local


def flow_logs(flow_run_id, want: str, timeout: float = 20) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline, text = time.monotonic() + timeout, ""
    while time.monotonic() < deadline and want not in text:
        with get_client(sync_client=True) as client:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        text = "\n".join(log.message for log in logs)
        time.sleep(0.5)
    return text


@pytest.mark.usefixtures("prefect_harness")
def test_a_stage_on_a_missing_model_fails_the_run_in_seconds_without_retries(tmp_path, monkeypatch):
    from conftest import small_recipe
    from gen4gen.flows.generate import generate
    from gen4gen.infra.records import DatasetConfig

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    raw = small_recipe(tmp_path, samples=1, canvas=128) | {"name": "noweights"}
    raw["run"] |= {"retries": 3, "retry_delay_seconds": 5}  # retried, this would take 35 s
    raw["stages"] = {"caption": {"backend": "llava", "options": {"model": "nobody/llava-missing"}}}
    start = time.monotonic()
    state = generate(DatasetConfig.model_validate(raw), str(tmp_path / "out"), return_state=True)
    assert state.is_failed() and time.monotonic() - start < 30
    text = flow_logs(state.state_details.flow_run_id, "nobody/llava-missing")
    assert "nobody/llava-missing" in text and "hf download" in text and "Retrying" not in text


@pytest.mark.usefixtures("prefect_harness")
def test_train_on_a_missing_base_model_fails_in_seconds_in_the_ui_log(tmp_path, monkeypatch):
    from gen4gen.flows.train import train
    from tests.tiny.dataset import published_small

    dataset = published_small()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    state = train({"dataset": dataset, "out": str(tmp_path / "run"), "base_model": "nobody/sd-missing",
                   "steps": 1, "resolution": 64, "batch_size": 1}, return_state=True)
    assert state.is_failed() and time.monotonic() - start < 30
    text = flow_logs(state.state_details.flow_run_id, "nobody/sd-missing")
    assert "train.base_model" in text and "'nobody/sd-missing'" in text and "local folder" in text
