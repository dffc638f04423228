"""Train: fine-tune a Stable Diffusion 1.5-style model with Custom Diffusion on a published
dataset version, writing resumable checkpoints (infra/checkpoint.py) as it goes.

Reading. Only what the dataset's manifest lists: `manifest.json`, then the content-named
copies of `metadata.jsonl` and `concepts_list.json` it names in `index` (hash-checked), then
every row's image (listed, hash-checked). The dataset version is the sha256 of the
manifest's bytes. Concept categories come from `concepts_list.json`'s instance prompts
("a photo of <chelsea> cat and <coffee> mug").

Prompts. The paper's three prompting strategies, each switchable (`Strategies`), applied to
a row's caption `text`, its composition, its concepts (token, category, in the row's
order) and its `scene` (e.g. "in a living room"):

    (a) composition_token  prefix the composition's own learnt token `<{composition id}>`
                           and a space;
    (b) repeat_tokens      after the caption, ", " then every concept as "{token} {category}",
                           joined by ", ";
    (c) explicit_scene     the scene is cut from the caption's end when the caption ends
                           with it (case-insensitive, with the space before it), and stated
                           last, separately, as ". background: {scene}" (a caption that
                           does not end with it keeps its text; the scene is still added).

With all three, the caption "a photo of a <chelsea> cat next to a <coffee> mug in a living
room" of composition cat-mug becomes

    <cat-mug> a photo of a <chelsea> cat next to a <coffee> mug, <chelsea> cat, <coffee> mug. background: in a living room

and with none it is the caption unchanged. Regularisation images (optional, a folder per
concept) are prompted "a photo of a {category}" whatever the strategies.

Schedule. Optimizer steps of `batch_size` examples each, made of `batch_size / micro_batch`
accumulated micro-batches (a smaller micro-batch trades speed for memory; the step's
gradient is the same in expectation, so a run may resume with another micro-batch).
Images are decoded once and held in memory at the training resolution (uint8: 0.75 MB
each at 512 px; the paper's compositions have tens of images).
Examples are drawn uniformly with replacement from a seeded generator. Defaults are the
paper's: lr 1e-5, batch 8, 2,000 steps when no composition has more than 3 concepts,
3,000 otherwise. No image flips: captions say which object is left of which.

Resuming. A run's id is a hash of everything that changes what is learnt (dataset version,
base model, compositions, strategies, schedule except the step count, seed). Starting a run
whose `out` holds complete checkpoints of the same id continues from the newest: weights,
AdamW state, gradient scaler, step and every generator's state, so a killed and restarted
run equals an uninterrupted one. An `out` holding another run's checkpoints is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from collections.abc import Callable
from typing import Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import Field, model_validator

from gen4gen.infra.errors import BadInput
from gen4gen.infra.storage import join, read_bytes, resolve, sha256, write_bytes
from gen4gen.infra import checkpoint as ckpt
from gen4gen.infra.records import Manifest, Record, SafeId

BACKGROUND = ". background: "
PRIOR_PROMPT = "a photo of a {category}"
DEFAULT_BASE = "stable-diffusion-v1-5/stable-diffusion-v1-5"


# --------------------------------------------------------------------------- records


class Strategies(Record):
    """The paper's training-prompt strategies (see the module docstring for the shapes)."""

    composition_token: bool = True
    repeat_tokens: bool = True
    explicit_scene: bool = True


class TrainConfig(Record):
    """One training run: which dataset, which base model, how, and where checkpoints go."""

    dataset: str = Field(description="URI of a published dataset version (its folder)")
    out: str = Field(description="URI of the run's folder; checkpoints go to {out}/checkpoints/")
    base_model: str = Field(default=DEFAULT_BASE, description="local folder or hub id of an SD 1.5-style pipeline")
    base_revision: str | None = None
    compositions: list[SafeId] = Field(default_factory=list, description="train on these only; empty: all")
    steps: int | None = Field(default=None, ge=1, description="optimizer steps; None: 2,000 (<=3 concepts) or 3,000")
    learning_rate: float = Field(default=1e-5, gt=0)
    scale_lr: bool = Field(default=False, description="multiply the learning rate by batch_size")
    batch_size: int = Field(default=8, ge=1)
    micro_batch: int | None = Field(default=None, ge=1, description="examples per forward pass; None: batch_size")
    resolution: int = Field(default=512, ge=8)
    strategies: Strategies = Strategies()
    regularisation: dict[SafeId, str] = Field(
        default_factory=dict, description="concept id -> URI of a folder of class images (prior preservation)"
    )
    prior_loss_weight: float = Field(default=1.0, ge=0)
    checkpoint_every: int = Field(default=500, ge=1)
    seed: int = Field(default=0, ge=0)
    device: str = "auto"
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = Field(
        default="auto", description="dtype of the frozen models; auto: bf16 on CUDA, none on CPU"
    )
    gradient_checkpointing: bool = False

    @model_validator(mode="after")
    def _micro_divides(self) -> "TrainConfig":
        if self.micro_batch and self.batch_size % self.micro_batch:
            raise ValueError(f"micro_batch {self.micro_batch} must divide batch_size {self.batch_size}")
        return self

    @property
    def micro(self) -> int:
        return self.micro_batch or self.batch_size

    @property
    def lr(self) -> float:
        return self.learning_rate * (self.batch_size if self.scale_lr else 1)


class ConceptSpec(Record):
    id: SafeId
    token: str
    category: str


class Row(Record):
    """One training example as the dataset lists it."""

    file_name: str
    sha256: str
    text: str
    composition: SafeId
    concepts: list[SafeId]
    tokens: list[str]
    scene: str


class TrainingSet(Record):
    dataset: str
    version: str = Field(description="sha256 of the dataset's manifest.json")
    concepts: list[ConceptSpec]
    rows: list[Row]

    def concept(self, concept_id: str) -> ConceptSpec:
        return next(c for c in self.concepts if c.id == concept_id)


class TrainResult(Record):
    run: str
    step: int
    checkpoints: list[str] = Field(description="checkpoints written by this call, oldest first")
    latest: str
    losses: list[float] = Field(default_factory=list, description="mean loss of each step this call ran")
    resumed_from: int = 0
    seconds: float = 0.0


# --------------------------------------------------------------------------- reading

_ENTRY = re.compile(r"(<[A-Za-z0-9][A-Za-z0-9_-]*>) (.+?)(?= and <|$)")


def read_training_set(dataset: str, compositions: list[str] | None = None) -> TrainingSet:
    """The rows and concepts of a published version, reading only files its manifest lists."""
    from gen4gen.tasks.reader import MAX_MANIFEST_BYTES, check_manifest_paths, load_json

    dataset = resolve(dataset)
    uri = join(dataset, "manifest.json")
    raw = read_bytes(uri, limit=MAX_MANIFEST_BYTES)
    try:
        manifest = Manifest.model_validate(load_json(raw, uri))
    except ValueError as err:
        raise BadInput(uri, f"not a dataset manifest: {err}") from err
    check_manifest_paths(dataset, manifest)  # every path it lists stays inside the dataset

    def listed(name: str) -> bytes:
        rel = manifest.index.get(name)
        if rel is None or rel not in manifest.files:
            raise BadInput(join(dataset, "manifest.json"), f"lists no copy of {name}")
        data = read_bytes(join(dataset, rel))
        if sha256(data) != manifest.files[rel]:
            raise BadInput(join(dataset, rel), "does not match the sha256 the manifest lists")
        return data

    rows = [json.loads(line) for line in listed("metadata.jsonl").decode().splitlines() if line]
    entries = load_json(listed("concepts_list.json"), join(dataset, "concepts_list.json"))
    categories: dict[str, str] = {}
    for entry in entries:
        prompt = entry["instance_prompt"].removeprefix("a photo of ")
        for token, category in _ENTRY.findall(prompt):
            categories[token] = category
    wanted = set(compositions or [])
    known = {r["composition"] for r in rows}
    if wanted - known:
        raise ValueError(f"compositions {sorted(wanted - known)}: not in dataset {dataset} (it has {sorted(known)})")
    out_rows, concepts = [], {}
    for r in rows:
        if wanted and r["composition"] not in wanted:
            continue
        if r["file_name"] not in manifest.files:
            raise BadInput(join(dataset, r["file_name"]), "metadata row names a file the manifest does not list")
        out_rows.append(Row(sha256=manifest.files[r["file_name"]], **{k: r[k] for k in Row.model_fields if k != "sha256"}))
        for cid, token in zip(r["concepts"], r["tokens"]):
            if token not in categories:
                raise BadInput(join(dataset, "concepts_list.json"), f"no category for token {token}")
            concepts[cid] = ConceptSpec(id=cid, token=token, category=categories[token])
    if not out_rows:
        raise ValueError(f"dataset {dataset}: no kept images to train on")
    return TrainingSet(dataset=dataset, version=hashlib.sha256(raw).hexdigest(),
                       concepts=sorted(concepts.values(), key=lambda c: c.id), rows=out_rows)


# --------------------------------------------------------------------------- prompts


def composition_token(composition: str) -> str:
    return f"<{composition}>"


def training_prompt(row: Row, categories: dict[str, str], strategies: Strategies) -> str:
    """The prompt a row is trained with (shapes in the module docstring)."""
    text = row.text.strip()
    scene = row.scene.strip()
    if strategies.explicit_scene and scene and text.lower().endswith(" " + scene.lower()):
        text = text[: -len(scene) - 1].rstrip()
    if strategies.composition_token:
        text = f"{composition_token(row.composition)} {text}"
    if strategies.repeat_tokens:
        text += ", " + ", ".join(f"{t} {categories[t]}" for t in row.tokens)
    if strategies.explicit_scene and scene:
        text += BACKGROUND + scene
    return text


def prior_prompt(category: str) -> str:
    return PRIOR_PROMPT.format(category=category)


def default_steps(training: TrainingSet) -> int:
    return 2000 if max(len(r.concepts) for r in training.rows) <= 3 else 3000


def learnt_tokens(training: TrainingSet, strategies: Strategies) -> list[tuple[str, str, list[str], str | None]]:
    """(id, token, init words, category) of every new token: one per concept, and one per
    composition with the composition-token strategy (initialised from its concepts'
    category words)."""
    out = [(c.id, c.token, [c.category], c.category) for c in training.concepts]
    if strategies.composition_token:
        concept_tokens = {c.token for c in training.concepts}
        for comp in sorted({r.composition for r in training.rows}):
            token = composition_token(comp)
            if token in concept_tokens:
                raise ValueError(f"composition {comp!r}: its token {token} is also a concept's token")
            members = next(r for r in training.rows if r.composition == comp).concepts
            out.append((comp, token, [training.concept(c).category for c in members], None))
    return out


def run_id(config: TrainConfig, training: TrainingSet) -> str:
    """What makes two runs the same run (steps, checkpoint interval and placement excluded)."""
    keys = config.model_dump(mode="json", exclude={"out", "steps", "checkpoint_every", "device", "mixed_precision",
                                                   "micro_batch", "gradient_checkpointing", "dataset"})
    keys["dataset_version"] = training.version
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- training

Progress = Callable[[int, int, float], None]
OnCheckpoint = Callable[[str, ckpt.CheckpointInfo], None]


def _images(uris_and_hashes: list[tuple[str, str | None]], resolution: int):
    """uint8 tensor (N, 3, R, R) of the images, resized; a listed image must match its hash."""
    import numpy as np
    import torch
    from PIL import Image

    from gen4gen.infra.storage import decode_image

    out = []
    for uri, digest in uris_and_hashes:
        data = read_bytes(uri)
        if digest is not None and sha256(data) != digest:
            raise BadInput(uri, "does not match the sha256 the manifest lists")
        img = decode_image(data, uri).convert("RGB").resize((resolution, resolution), Image.Resampling.BICUBIC)
        out.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1))
    return torch.stack(out)


def _regularisation(config: TrainConfig, training: TrainingSet):
    """(uint8 images, prompts) of the class images of every concept that has a folder."""
    from gen4gen.infra.storage import list_files

    pairs, prompts = [], []
    for cid, folder in sorted(config.regularisation.items()):
        try:
            concept = training.concept(cid)
        except StopIteration:
            raise ValueError(f"regularisation: concept {cid!r} is not in the training set") from None
        files = [u for u in list_files(folder) if u.lower().endswith((".png", ".jpg", ".jpeg", ".webp"))]
        if not files:
            raise BadInput(folder, f"regularisation folder of {cid!r} holds no images")
        pairs += [(u, None) for u in files]
        prompts += [prior_prompt(concept.category)] * len(files)
    return (_images(pairs, config.resolution), prompts) if pairs else (None, [])


def build_model(config: TrainConfig, training: TrainingSet, components: dict[str, Any] | None = None):
    """The base model prepared for Custom Diffusion with this run's tokens added."""
    import torch

    from gen4gen.models import hf
    from gen4gen.models.train.custom_diffusion import CustomDiffusion, load_components

    device = hf.device(config.device)
    if config.mixed_precision == "auto":
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    else:
        dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[config.mixed_precision]
    if components is None:
        components = load_components({"model": config.base_model, "revision": config.base_revision, "device": device})
    parts = {k: components[k] for k in ("tokenizer", "text_encoder", "vae", "unet", "scheduler")}
    model = CustomDiffusion(**parts, device=device, dtype=dtype, gradient_checkpointing=config.gradient_checkpointing)
    tokens = learnt_tokens(training, config.strategies)
    model.add_tokens([t for _, t, _, _ in tokens], [w for _, _, w, _ in tokens])
    return model


def train_model(
    config: TrainConfig,
    on_checkpoint: OnCheckpoint | None = None,
    progress: Progress | None = None,
    components: dict[str, Any] | None = None,
) -> TrainResult:
    """Train (or resume) the run `config` describes; write a checkpoint every
    `checkpoint_every` steps and at the end; call `on_checkpoint` after each is complete."""
    import torch

    start = time.perf_counter()
    training = read_training_set(config.dataset, config.compositions)
    steps = config.steps or default_steps(training)
    run = run_id(config, training)
    categories = {c.token: c.category for c in training.concepts}
    prompts = [training_prompt(r, categories, config.strategies) for r in training.rows]
    images = _images([(join(training.dataset, r.file_name), r.sha256) for r in training.rows], config.resolution)
    reg_images, reg_prompts = _regularisation(config, training)

    model = build_model(config, training, components)
    params, optimizer, scaler = make_optimizer(model, config.lr)
    data_gen = torch.Generator().manual_seed(config.seed)
    noise_gen = torch.Generator().manual_seed(config.seed + 1)

    step, resumed = 0, 0
    last = ckpt.latest(config.out)
    if last is not None:
        info = ckpt.read_info(last)
        if info.run != run:
            raise ValueError(
                f"out {config.out}: holds checkpoints of run {info.run} (another dataset, base model or "
                f"settings; this is run {run}); choose a new out"
            )
        step = resumed = _restore(model, optimizer, scaler, data_gen, noise_gen, last)

    meta = _info_fields(config, training, run, steps, categories)
    written: list[str] = []
    losses: list[float] = []
    accumulate = config.batch_size // config.micro

    def micro_batches():
        for _ in range(accumulate):
            idx = torch.randint(0, len(prompts), (config.micro,), generator=data_gen)
            pixels, texts = images[idx], [prompts[i] for i in idx.tolist()]
            weights = None
            if reg_images is not None:
                ridx = torch.randint(0, len(reg_prompts), (config.micro,), generator=data_gen)
                pixels = torch.cat([pixels, reg_images[ridx]])
                texts += [reg_prompts[i] for i in ridx.tolist()]
                weights = torch.tensor([1.0] * config.micro + [config.prior_loss_weight] * config.micro)
            yield pixels, texts, weights

    while step < steps:
        total = optimizer_step(model, optimizer, scaler, params, micro_batches(), accumulate, noise_gen)
        step += 1
        losses.append(total)
        if progress is not None:
            progress(step, steps, total)
        if step % config.checkpoint_every == 0 or step == steps:
            uri = _save(model, optimizer, scaler, data_gen, noise_gen, config.out, step, meta)
            written.append(uri)
            if on_checkpoint is not None:
                on_checkpoint(uri, ckpt.read_info(uri))
    return TrainResult(run=run, step=step, checkpoints=written, latest=ckpt.latest(config.out) or "",
                       losses=losses, resumed_from=resumed, seconds=round(time.perf_counter() - start, 3))


def make_optimizer(model, lr: float):
    """(trainable parameters, AdamW over them, gradient scaler: active for fp16 only)."""
    import torch

    params = model.trainable()
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    scaler = torch.amp.GradScaler("cuda", enabled=model.dtype == torch.float16)
    return params, optimizer, scaler


def optimizer_step(model, optimizer, scaler, params, micro_batches, accumulate: int, noise_gen) -> float:
    """One optimizer step over `accumulate` micro-batches of (uint8 pixels, prompts,
    per-example weights or None); returns the step's mean loss."""
    import torch

    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for pixels, texts, weights in micro_batches:
        loss = model.loss(pixels, texts, noise_gen, weights) / accumulate
        scaler.scale(loss).backward()
        total += float(loss.detach())
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    scaler.step(optimizer)
    scaler.update()
    return total


def _info_fields(config: TrainConfig, training: TrainingSet, run: str, steps: int, categories: dict[str, str]) -> dict:
    concepts, compositions = [], {}
    for cid, token, _, category in learnt_tokens(training, config.strategies):
        if category is not None:
            concepts.append(ckpt.TrainedConcept(id=cid, token=token, category=category,
                                                embedding=f"{ckpt.EMBEDDINGS}/{cid}.safetensors"))
        else:  # concept and composition ids may coincide: a composition's file has a prefix
            compositions[cid] = {"token": token, "embedding": f"{ckpt.EMBEDDINGS}/composition-{cid}.safetensors"}
    strategies = config.strategies.model_dump() | ({"composition_tokens": compositions} if compositions else {})
    params = config.model_dump(mode="json", exclude={"dataset", "out", "base_model", "base_revision", "strategies"})
    params |= {"steps": steps, "learning_rate_effective": config.lr,
               "compositions": sorted({r.composition for r in training.rows}), "images": len(training.rows)}
    return dict(base_model=config.base_model, base_revision=config.base_revision, run=run,
                dataset=training.dataset, dataset_version=training.version, concepts=concepts,
                strategies=strategies, params=params)


def _rng_state() -> dict:
    import random

    import numpy as np
    import torch

    name, keys, pos, has_gauss, cached = np.random.get_state()
    # Plain lists, not an ndarray: state.pt is read back with torch.load(weights_only=True),
    # which runs no code from the file (a checkpoint may come from anyone's bucket).
    numpy_state = [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _save(model, optimizer, scaler, data_gen, noise_gen, out: str, step: int, meta: dict) -> str:
    """Write one checkpoint; checkpoint.json last, so a folder without it is unfinished."""
    import safetensors.torch
    import torch

    uri = ckpt.checkpoint_uri(out, step)
    write_bytes(join(uri, ckpt.WEIGHTS), safetensors.torch.save(model.attention_state(), metadata={"format": "pt"}))
    info = ckpt.CheckpointInfo(step=step, **meta)
    embeddings = model.token_embeddings()
    for token, file in info.embeddings().items():
        write_bytes(join(uri, file), safetensors.torch.save({token: embeddings[token]}))
    buf = io.BytesIO()
    torch.save({"step": step, "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                "data_gen": data_gen.get_state(), "noise_gen": noise_gen.get_state(), "rng": _rng_state()}, buf)
    write_bytes(join(uri, ckpt.STATE), buf.getvalue())
    write_bytes(join(uri, ckpt.INFO), ckpt.info_json(info))
    return uri


def read_state(uri: str) -> dict:
    """A checkpoint's training state (state.pt), loaded with torch.load(weights_only=True):
    tensors, numbers and strings only, so a state.pt someone planted runs no code."""
    import torch

    path = join(uri, ckpt.STATE)
    try:
        return torch.load(io.BytesIO(read_bytes(path)), weights_only=True)
    except BadInput as err:
        raise BadInput(path, "missing: this checkpoint cannot resume a run") from err
    except Exception as err:  # pickle.UnpicklingError: something other than tensors and numbers
        raise BadInput(path, f"holds more than plain tensors and numbers ({type(err).__name__}); "
                       "it is not loaded, so this checkpoint cannot resume a run") from err


def _restore(model, optimizer, scaler, data_gen, noise_gen, uri: str) -> int:
    """Load a checkpoint's weights and training state into this run; returns its step."""
    import random

    import numpy as np
    import safetensors.torch
    import torch

    info = ckpt.read_info(uri)
    model.load_attention_state(safetensors.torch.load(read_bytes(join(uri, ckpt.WEIGHTS))))
    embeddings = {}
    for file in info.embeddings().values():
        embeddings |= safetensors.torch.load(read_bytes(join(uri, file)))
    model.load_token_embeddings(embeddings)
    state = read_state(uri)
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    data_gen.set_state(state["data_gen"])
    noise_gen.set_state(state["noise_gen"])
    random.setstate(state["rng"]["python"])
    name, keys, pos, has_gauss, cached = state["rng"]["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["rng"]["torch"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return int(state["step"])


def steps_needed(config: TrainConfig) -> int:
    """The run's total steps (reads the dataset when `steps` is left to the default)."""
    return config.steps or default_steps(read_training_set(config.dataset, config.compositions))


# --------------------------------------------------------------------------- Prefect


@task(name="train", cache_policy=NO_CACHE, persist_result=False)
def train_task(config: TrainConfig, on_checkpoint: OnCheckpoint | None = None) -> TrainResult:
    from gen4gen.infra import progress as bar

    seen = [0]

    def report(step: int, total: int, loss: float) -> None:
        bar.advance("train", "step", step - seen[0])  # a resumed run starts the bar where it stopped
        seen[0] = step

    return train_model(config, on_checkpoint=on_checkpoint, progress=report)
