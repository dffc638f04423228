"""The checkpoint contract (CONTRACTS.md): written by training, read by evaluation.

A checkpoint is a folder `{train_out}/checkpoints/step-{step:06d}/` holding

    pytorch_custom_diffusion_weights.safetensors   the cross-attention processors
    embeddings/<concept id>.safetensors            {"<token>": tensor[hidden]} per concept
    embeddings/composition-<id>.safetensors        the same for a composition's global token
    state.pt                                       optimizer, step, RNG (for resuming only)
    checkpoint.json                                what was trained on what; written LAST

`checkpoint.json` is the commit mark: a folder without it is an unfinished write (a killed
run) and no reader uses it.

The attention file stores every attention processor of the UNet: the cross-attention ones
with their key/value weights, the others as an empty tensor under the processor's name.
diffusers' loader builds a processor per key and refuses a set smaller than the UNet's, and
safetensors cannot hold the empty dicts `save_attn_procs` writes, so an empty tensor stands
for "default processor" (the loader treats a zero-length value exactly like an empty dict).

diffusers 0.42 `UNet2DConditionModel.load_attn_procs(folder, weight_name=...)` reads the
file but installs the processors only when called with `_pipeline=` (diffusers issue
#9320): `load_into(pipe, uri)` passes it and checks the processors really changed.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from typing import Any

from pydantic import Field

from gen4gen.infra.storage import exists, join, list_files, read_bytes, resolve
from gen4gen.infra.records import Record, SafeId

FORMAT = "gen4gen-custom-diffusion/1"
WEIGHTS = "pytorch_custom_diffusion_weights.safetensors"
EMBEDDINGS = "embeddings"
STATE = "state.pt"
INFO = "checkpoint.json"
CHECKPOINTS = "checkpoints"
_STEP_DIR = re.compile(r"step-(\d{6,})$")


class TrainedConcept(Record):
    """One concept's learnt token."""

    id: SafeId
    token: str
    category: str
    embedding: str = Field(description="path of the embedding file, relative to the checkpoint")


class CompositionToken(Record):
    """A composition's global token (prompting strategy (a)); listed under
    `strategies.composition_tokens`, since a composition is not a concept."""

    token: str
    embedding: str


class CheckpointInfo(Record):
    """checkpoint.json: what was trained, on what, how far."""

    format: str = FORMAT
    base_model: str
    base_revision: str | None = None
    step: int = Field(ge=0)
    run: str
    dataset: str
    dataset_version: str
    concepts: list[TrainedConcept]
    strategies: dict[str, Any] = Field(
        default_factory=dict,
        description="the prompting strategies' switches, and `composition_tokens`: composition id -> "
        "{token, embedding} when the composition-token strategy is on",
    )
    params: dict[str, Any] = Field(default_factory=dict)

    def composition_tokens(self) -> dict[str, CompositionToken]:
        return {k: CompositionToken.model_validate(v) for k, v in self.strategies.get("composition_tokens", {}).items()}

    def embeddings(self) -> dict[str, str]:
        """token -> embedding file (relative) of every learnt token: concepts', compositions'."""
        out = {c.token: c.embedding for c in self.concepts}
        return out | {t.token: t.embedding for t in self.composition_tokens().values()}


def checkpoint_uri(out: str, step: int) -> str:
    return join(resolve(out), CHECKPOINTS, f"step-{step:06d}")


def read_info(uri: str) -> CheckpointInfo:
    info = CheckpointInfo.model_validate_json(read_bytes(join(uri, INFO)))
    if info.format != FORMAT:
        raise ValueError(f"{uri}: checkpoint format {info.format!r}, expected {FORMAT!r}")
    return info


def finished(out: str) -> list[tuple[int, str]]:
    """(step, folder URI) of every complete checkpoint under `{out}/checkpoints`, by step."""
    root = join(resolve(out), CHECKPOINTS)
    if not exists(root):
        return []
    found = {}
    for uri in list_files(root):
        parts = uri.rstrip("/").split("/")
        if parts[-1] != INFO or len(parts) < 2:
            continue
        m = _STEP_DIR.fullmatch(parts[-2])
        if m:
            found[int(m.group(1))] = "/".join(parts[:-1])
    return sorted(found.items())


def latest(out: str) -> str | None:
    """The newest complete checkpoint's folder URI, or None."""
    done = finished(out)
    return done[-1][1] if done else None


def local_copy(uri: str) -> tuple[str, Any]:
    """A local folder holding the checkpoint (itself when on disk, else a temporary copy).

    diffusers' loaders read local paths or hub ids only. Returns (path, handle): keep the
    handle alive while the path is used (it deletes the copy when collected).
    """
    uri = resolve(uri)
    if uri.startswith("file://"):
        return uri[len("file://") :], None
    tmp = tempfile.TemporaryDirectory(prefix="gen4gen-ckpt-")
    info = read_info(uri)
    names = [INFO, WEIGHTS] + list(info.embeddings().values())
    for name in names:
        target = os.path.join(tmp.name, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            f.write(read_bytes(join(uri, name)))
    return tmp.name, tmp


def load_into(pipe, uri: str) -> CheckpointInfo:
    """Load a checkpoint into a plain diffusers StableDiffusionPipeline with diffusers'
    own loaders: `unet.load_attn_procs` for the attention weights and
    `load_textual_inversion` for every token. Returns the checkpoint's info."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    folder, handle = local_copy(uri)
    info = read_info(uri)
    pipe.unet.load_attn_procs(folder, weight_name=WEIGHTS, _pipeline=pipe)
    if all(isinstance(p, (AttnProcessor, AttnProcessor2_0)) for p in pipe.unet.attn_processors.values()):
        raise RuntimeError(f"{uri}: diffusers did not install the Custom Diffusion processors")
    for token, embedding in info.embeddings().items():
        pipe.load_textual_inversion(os.path.join(folder, embedding), token=token)
    del handle
    return info


def info_json(info: CheckpointInfo) -> bytes:
    return json.dumps(info.model_dump(mode="json"), indent=2, sort_keys=True).encode()


# --------------------------------------------------------------------------- reading for evaluation

RESULTS = "results.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be evaluated; the message names the URI and the reason."""


def normalise(uri: str) -> str:
    """A checkpoint URI without a trailing slash (plain paths become file:// URIs)."""
    return resolve(uri).rstrip("/")


def read_checkpoint(uri: str) -> CheckpointInfo:
    """The checkpoint's record, after checking that every file it names is there; every
    problem is a CheckpointError naming the checkpoint and what is wrong."""
    from pydantic import ValidationError

    from gen4gen.infra.config import format_errors
    from gen4gen.infra.errors import BadInput

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


def siblings(uri: str) -> list[str]:
    """URIs of the other complete checkpoints of the same run (folders beside this one
    holding a checkpoint.json), in name order (step-000100 before step-000200)."""
    uri = normalise(uri)
    parent = uri.rsplit("/", 1)[0]
    found = set()
    for f in list_files(parent):
        rest = f[len(parent) + 1 :] if f.startswith(parent + "/") else None
        if rest and rest.count("/") == 1 and rest.endswith("/" + INFO):
            found.add(join(parent, rest.split("/", 1)[0]))
    return sorted(found - {uri})
