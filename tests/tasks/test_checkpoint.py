"""Reading checkpoints: the record, a clear error for each missing piece, the run's siblings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gen4gen.infra.checkpoint import CheckpointError, read_checkpoint, siblings


def _checkpoint(folder: Path, step: int = 100, **changes) -> Path:
    (folder / "embeddings").mkdir(parents=True)
    (folder / "pytorch_custom_diffusion_weights.safetensors").write_bytes(b"w")
    (folder / "embeddings" / "cat.safetensors").write_bytes(b"e")
    info = {"format": "gen4gen-custom-diffusion/1", "base_model": "runwayml/stable-diffusion-v1-5", "base_revision": None,
            "step": step, "run": "r1", "dataset": "data/demo", "dataset_version": "ab" * 32,
            "concepts": [{"id": "cat", "token": "<cat1>", "category": "cat", "embedding": "embeddings/cat.safetensors"}],
            "strategies": {}, "params": {}}
    info.update(changes)
    (folder / "checkpoint.json").write_text(json.dumps(info))
    return folder


def test_reads_the_record(tmp_path):
    ck = _checkpoint(tmp_path / "checkpoints" / "step-000100")
    info = read_checkpoint(str(ck) + "/")
    assert (info.step, info.run, info.concepts[0].token) == (100, "r1", "<cat1>")


def test_each_missing_piece_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="step-000007: no such folder"):
        read_checkpoint(str(tmp_path / "step-000007"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint.json"):
        read_checkpoint(str(tmp_path / "empty"))
    ck = _checkpoint(tmp_path / "a")
    (ck / "embeddings" / "cat.safetensors").unlink()
    with pytest.raises(CheckpointError, match="embeddings/cat.safetensors is missing"):
        read_checkpoint(str(ck))
    with pytest.raises(CheckpointError, match="format 'other/2'"):
        read_checkpoint(str(_checkpoint(tmp_path / "b", format="other/2")))
    with pytest.raises(CheckpointError, match="step = -1"):
        read_checkpoint(str(_checkpoint(tmp_path / "c", step=-1)))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "checkpoint.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_checkpoint(str(tmp_path / "d"))


def test_siblings_are_the_runs_other_checkpoints(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (300, 100, 200):
        _checkpoint(root / f"step-{step:06d}", step)
    (root / "step-000400").mkdir()  # still being written: no checkpoint.json yet
    found = siblings(str(root / "step-000200"))
    assert [s.rsplit("/", 1)[1] for s in found] == ["step-000100", "step-000300"]
    assert all(s.startswith("file://") for s in found)
