"""Reading a training checkpoint (CONTRACTS.md) for evaluation: its record, its files, its siblings.

A checkpoint is a folder URI `{train_out}/checkpoints/step-{step:06d}/` holding
checkpoint.json, the Custom Diffusion weights and one token embedding per concept. Train
writes checkpoint.json last, so a folder without it is not a checkpoint (yet). Its
siblings under `checkpoints/` are the earlier checkpoints of the same run.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from infra.config import format_errors
from infra.errors import BadInput
from infra.storage import exists, join, list_files, local_path, read_bytes, resolve
from tasks.records import SafeId

FORMAT = "gen4gen-custom-diffusion/1"
INFO = "checkpoint.json"
WEIGHTS = "pytorch_custom_diffusion_weights.safetensors"
RESULTS = "results.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be evaluated; the message names the URI and the reason."""


class _Read(BaseModel):
    # checkpoint.json is written by another flow: fields added later must not stop an
    # older evaluator, so unknown fields are ignored rather than refused.
    model_config = ConfigDict(extra="ignore")


class CheckpointConcept(_Read):
    id: SafeId
    token: str
    category: str
    embedding: str = Field(description="path of the token embedding, relative to the checkpoint")


class CheckpointInfo(_Read):
    """checkpoint.json (CONTRACTS.md)."""

    format: str
    base_model: str
    base_revision: str | None = None
    step: int = Field(ge=0)
    run: str
    dataset: str
    dataset_version: str | None = None
    concepts: list[CheckpointConcept] = Field(min_length=1)
    strategies: dict = Field(default_factory=dict)
    params: dict = Field(default_factory=dict)

    def concept(self, concept_id: str) -> CheckpointConcept:
        for c in self.concepts:
            if c.id == concept_id:
                return c
        raise KeyError(concept_id)


def normalise(uri: str) -> str:
    """A checkpoint URI without a trailing slash (plain paths become file:// URIs)."""
    return resolve(uri).rstrip("/")


def read_checkpoint(uri: str) -> CheckpointInfo:
    """The checkpoint's record, after checking that every file it names is there."""
    uri = normalise(uri)
    info_uri = join(uri, INFO)
    if not exists(uri):
        raise CheckpointError(f"checkpoint {uri}: no such folder")
    if not exists(info_uri):
        raise CheckpointError(f"checkpoint {uri}: no {INFO} (not a checkpoint, or still being written)")
    try:
        raw = json.loads(read_bytes(info_uri))
    except (ValueError, BadInput) as err:
        raise CheckpointError(f"{info_uri}: not valid JSON: {err}") from err
    try:
        info = CheckpointInfo.model_validate(raw)
    except ValidationError as err:
        raise CheckpointError(f"{info_uri}: invalid checkpoint record:\n{format_errors(err)}") from err
    if info.format != FORMAT:
        raise CheckpointError(f"{info_uri}: format {info.format!r}, this evaluator reads {FORMAT!r}")
    for rel in [WEIGHTS, *(c.embedding for c in info.concepts)]:
        if not exists(join(uri, rel)):
            raise CheckpointError(f"checkpoint {uri}: {rel} is missing")
    return info


def local_folder(uri: str) -> Path:
    """A local folder holding the checkpoint's weights and embeddings (diffusers' loaders
    read local files): the folder itself on a local disk, else a copy in a temporary
    cache keyed by the URI and the bytes of checkpoint.json."""
    uri = normalise(uri)
    path = local_path(uri)
    if path is not None:
        return Path(path)
    info = read_bytes(join(uri, INFO))
    key = hashlib.sha256(uri.encode() + info).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / "gen4gen-checkpoints" / key
    record = CheckpointInfo.model_validate(json.loads(info))
    for rel in [WEIGHTS, *(c.embedding for c in record.concepts), INFO]:
        target = folder / rel
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            tmp.write_bytes(read_bytes(join(uri, rel)))
            os.replace(tmp, target)
    return folder


def siblings(uri: str) -> list[str]:
    """URIs of the other checkpoints of the same run (folders beside this one holding a
    checkpoint.json), in name order (step-000100 before step-000200)."""
    uri = normalise(uri)
    parent = uri.rsplit("/", 1)[0]
    found = set()
    for f in list_files(parent):
        rest = f[len(parent) + 1:] if f.startswith(parent + "/") else None
        if rest and rest.count("/") == 1 and rest.endswith("/" + INFO):
            found.add(join(parent, rest.split("/", 1)[0]))
    return sorted(found - {uri})
