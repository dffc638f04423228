"""A tiny Custom Diffusion checkpoint in the CONTRACTS.md format, made with diffusers' own classes.

What the train flow writes, at test size, without training: the UNet's cross-attention
layers get diffusers' `CustomDiffusionAttnProcessor`s (train_kv) whose k/v weights start
from the base layer's and are perturbed; the weights file names every processor (an empty
tensor for the weightless ones, as infra/checkpoint.py specifies, so diffusers'
`load_attn_procs` accepts it); each concept's token embedding is a textual-inversion
safetensors file {"<token>": tensor[hidden]}; checkpoint.json last.
"""

from __future__ import annotations

import json
from pathlib import Path

WEIGHTS = "pytorch_custom_diffusion_weights.safetensors"


def custom_diffusion_processors(unet, scale: float = 1.5, seed: int = 0) -> dict:
    """Processors for every attention layer: Custom Diffusion k/v on cross-attention
    (weights = base weights * scale + noise), weightless ones on self-attention."""
    import torch
    from diffusers.models.attention_processor import CustomDiffusionAttnProcessor

    g = torch.Generator().manual_seed(seed)
    state = unet.state_dict()
    procs = {}
    for name in unet.attn_processors:
        layer = name.removesuffix(".processor")
        if name.endswith("attn1.processor"):
            procs[name] = CustomDiffusionAttnProcessor(train_kv=False, train_q_out=False)
            continue
        k, v = state[f"{layer}.to_k.weight"], state[f"{layer}.to_v.weight"]
        proc = CustomDiffusionAttnProcessor(
            train_kv=True, train_q_out=False, hidden_size=k.shape[0], cross_attention_dim=k.shape[1]
        )
        proc.load_state_dict({
            "to_k_custom_diffusion.weight": k * scale + 0.02 * torch.randn(k.shape, generator=g),
            "to_v_custom_diffusion.weight": v * scale + 0.02 * torch.randn(v.shape, generator=g),
        })
        procs[name] = proc
    return procs


def tiny_checkpoint(
    folder: str | Path,
    base_model: str | Path,
    concepts: list[dict],
    step: int = 100,
    run: str = "tiny-run",
    dataset: str = "data/demo",
    seed: int = 0,
) -> Path:
    """Write a checkpoint folder for `base_model` (a tiny SD folder) and `concepts`
    ({"id", "token", "category"}); returns the folder."""
    import torch
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file

    folder = Path(folder)
    (folder / "embeddings").mkdir(parents=True, exist_ok=True)
    pipe = StableDiffusionPipeline.from_pretrained(str(base_model), safety_checker=None, requires_safety_checker=False)
    procs = custom_diffusion_processors(pipe.unet, seed=seed)
    # As train writes it (infra/checkpoint.py): every processor by name, k/v weights for
    # the cross-attention ones, an empty tensor standing for a default processor.
    state = {}
    for name, proc in procs.items():
        weights = proc.state_dict()
        state.update({f"{name}.{k}": v.contiguous() for k, v in weights.items()} if weights else {name: torch.empty(0)})
    save_file(state, str(folder / WEIGHTS), metadata={"format": "pt"})
    hidden = pipe.text_encoder.get_input_embeddings().weight.shape[1]
    g = torch.Generator().manual_seed(seed + 1)
    listed = []
    for c in concepts:
        rel = f"embeddings/{c['id']}.safetensors"
        save_file({c["token"]: torch.randn(hidden, generator=g) * 0.02}, str(folder / rel))
        listed.append({"id": c["id"], "token": c["token"], "category": c["category"], "embedding": rel})
    info = {
        "format": "gen4gen-custom-diffusion/1",
        "base_model": str(base_model),
        "base_revision": None,
        "step": step,
        "run": run,
        "dataset": dataset,
        "dataset_version": "0" * 64,
        "concepts": listed,
        "strategies": {},
        "params": {"lr": 1e-5},
    }
    (folder / "checkpoint.json").write_text(json.dumps(info, indent=2))  # last: the checkpoint is complete
    return folder


DEMO_CONCEPTS = [
    {"id": "chelsea", "token": "<chelsea>", "category": "cat"},
    {"id": "coffee", "token": "<coffee>", "category": "mug"},
    {"id": "astronaut", "token": "<astronaut>", "category": "person"},
    {"id": "rocket", "token": "<rocket>", "category": "rocket"},
    {"id": "motorcycle", "token": "<motorcycle>", "category": "motorcycle"},
    {"id": "grace", "token": "<grace>", "category": "person"},
]


def tiny_run(root: str | Path, steps: tuple[int, ...] = (100, 200), run: str = "tiny-run") -> dict:
    """A tiny base model and a training run's checkpoints of the demo's concepts:
    {"base": folder, "checkpoints": {step: folder}} under `root`/{base,train/checkpoints}."""
    from tests.tiny.sd import tiny_sd

    root = Path(root)
    base = tiny_sd(root / "base")
    folders = {
        step: tiny_checkpoint(root / "train" / "checkpoints" / f"step-{step:06d}", base, DEMO_CONCEPTS,
                              step=step, run=run, seed=step)
        for step in steps
    }
    return {"base": base, "checkpoints": folders}
