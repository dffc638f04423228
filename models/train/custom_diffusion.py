"""Custom Diffusion on a Stable Diffusion 1.5-style model: what trains and how a loss is made.

Trained: the key and value projections of every cross-attention layer (`attn2`), as
diffusers' `CustomDiffusionAttnProcessor2_0` copies initialised from the base weights, and
one new token embedding per learnt token. Everything else (VAE, text encoder, the rest of
the UNet, every existing token row) is frozen: `requires_grad` is off and the optimizer
never sees it. The new tokens are added to the tokenizer and their rows are supplied by a
forward hook on the token-embedding layer from one small trainable tensor, so the optimizer
state is (new tokens x hidden) rather than the whole 49,408-row table, and weight decay
cannot touch the rows of existing words.

Precision: the trainable tensors stay float32; the frozen models run in the placement
dtype (fp16 or bf16 on CUDA, fp32 on CPU). The processor casts between the two.

Loaded without the registry on purpose: training changes the model it loads (processors,
tokens), so each run owns its copy instead of sharing a cached one.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from gen4gen.models import hf


def load_components(options: dict[str, Any]) -> dict[str, Any]:
    """tokenizer, text_encoder, vae, unet, scheduler of the base model (options: model,
    revision, device, dtype), frozen and placed; plus `device` and `dtype`."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    src = hf.source(options, "model", what="train.base_model")
    device, dtype = hf.placement(options)
    kw = src.kwargs()
    parts = dict(
        tokenizer=CLIPTokenizer.from_pretrained(src.path, subfolder="tokenizer", **kw),
        text_encoder=CLIPTextModel.from_pretrained(src.path, subfolder="text_encoder", **kw),
        vae=AutoencoderKL.from_pretrained(src.path, subfolder="vae", **kw),
        unet=UNet2DConditionModel.from_pretrained(src.path, subfolder="unet", **kw),
        # Training noises with the DDPM schedule the model was trained with, whatever
        # sampler the pipeline ships for inference.
        scheduler=DDPMScheduler.from_pretrained(src.path, subfolder="scheduler", **kw),
    )
    return parts | {"device": device, "dtype": dtype}


class CustomDiffusion:
    """A base model prepared for Custom Diffusion: frozen parts, new tokens, trainable k/v."""

    def __init__(self, tokenizer, text_encoder, vae, unet, scheduler, device: str = "cpu", dtype=torch.float32,
                 gradient_checkpointing: bool = False):
        self.tokenizer, self.text_encoder, self.vae, self.unet, self.scheduler = tokenizer, text_encoder, vae, unet, scheduler
        self.device, self.dtype = device, dtype
        for model in (text_encoder, vae, unet):
            model.requires_grad_(False)
            model.eval()
            model.to(device=device, dtype=dtype)
        if gradient_checkpointing:
            unet.enable_gradient_checkpointing()
            unet.train()  # diffusers checkpoints activations only in training mode; no dropout in SD's UNet
        self.tokens: list[str] = []
        self.token_ids: list[int] = []
        self.embeddings = torch.nn.Parameter(torch.zeros(0, text_encoder.config.hidden_size, device=device))
        self._hook = None
        self.processors: dict[str, torch.nn.Module] = {}
        self._install_processors()

    # ------------------------------------------------------------------ parameters

    def _install_processors(self) -> None:
        from diffusers.models.attention_processor import CustomDiffusionAttnProcessor2_0

        procs = dict(self.unet.attn_processors)
        for name in procs:
            if not name.endswith("attn2.processor"):
                continue  # self-attention keeps its default processor (and stays frozen)
            attn = self.unet.get_submodule(name[: -len(".processor")])
            proc = CustomDiffusionAttnProcessor2_0(
                train_kv=True, train_q_out=False,
                hidden_size=attn.to_k.out_features, cross_attention_dim=attn.to_k.in_features,
            )
            with torch.no_grad():
                proc.to_k_custom_diffusion.weight.copy_(attn.to_k.weight.float())
                proc.to_v_custom_diffusion.weight.copy_(attn.to_v.weight.float())
            proc.to(self.device)
            procs[name] = proc
            self.processors[name] = proc
        self.unet.set_attn_processor(procs)

    def add_tokens(self, tokens: list[str], init_words: list[list[str]]) -> None:
        """Add each token to the tokenizer with a new embedding initialised to the mean of
        its init words' embeddings (e.g. the category word 'cat')."""
        table = self.text_encoder.get_input_embeddings().weight
        inits = []
        for token, words in zip(tokens, init_words):
            if self.tokenizer.add_tokens([token]) != 1:
                raise ValueError(f"token {token!r}: already in the base model's vocabulary; choose another token")
            ids = self.tokenizer(" ".join(words), add_special_tokens=False).input_ids
            if not ids:
                raise ValueError(f"token {token!r}: init words {words!r} give no token ids")
            inits.append(table[torch.tensor(ids, device=table.device)].float().mean(0))
        for token in tokens:  # a token the tokenizer splits would never reach its embedding
            ids = self.tokenizer(token, add_special_tokens=False).input_ids
            if len(ids) != 1:
                raise ValueError(f"token {token!r}: the tokenizer splits it into {len(ids)} pieces")
        self.text_encoder.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)
        self.tokens += tokens
        self.token_ids = self.tokenizer.convert_tokens_to_ids(self.tokens)
        rows = torch.stack(inits).to(self.device) if inits else torch.zeros(0, table.shape[1], device=self.device)
        self.embeddings = torch.nn.Parameter(torch.cat([self.embeddings.data, rows]))
        if self._hook is None:
            self._hook = self.text_encoder.get_input_embeddings().register_forward_hook(self._new_rows)

    def _new_rows(self, module, inputs, output):
        ids = inputs[0]
        lookup = torch.full((len(self.tokenizer),), -1, dtype=torch.long, device=ids.device)
        lookup[torch.tensor(self.token_ids, device=ids.device)] = torch.arange(len(self.token_ids), device=ids.device)
        slot = lookup[ids]
        mask = slot >= 0
        if not mask.any():
            return output
        out = output.clone()
        out[mask] = self.embeddings[slot[mask]].to(out.dtype)
        return out

    def trainable(self) -> list[torch.nn.Parameter]:
        """Exactly what the optimizer updates: cross-attention k/v copies and new embeddings."""
        params = [p for proc in self.processors.values() for p in proc.parameters()]
        return params + [self.embeddings]

    # ------------------------------------------------------------------ the loss

    def encode(self, prompts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(prompts, padding="max_length", truncation=True,
                             max_length=self.tokenizer.model_max_length, return_tensors="pt").input_ids
        return self.text_encoder(ids.to(self.device))[0]

    @torch.no_grad()
    def latents(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """uint8 images (B, 3, H, W) -> scaled VAE latents, sampled with `generator`."""
        x = pixels.to(self.device, self.dtype) / 127.5 - 1.0
        dist = self.vae.encode(x).latent_dist
        noise = torch.randn(dist.mean.shape, generator=generator, dtype=torch.float32).to(self.device, dist.mean.dtype)
        return (dist.mean + dist.std * noise) * self.vae.config.scaling_factor

    def loss(self, pixels: torch.Tensor, prompts: list[str], generator: torch.Generator,
             weights: torch.Tensor | None = None) -> torch.Tensor:
        """The denoising loss (mean squared error on the scheduler's target) of one batch;
        `weights` scales each example's loss (prior preservation)."""
        latents = self.latents(pixels, generator)
        b = latents.shape[0]
        noise = torch.randn(latents.shape, generator=generator).to(self.device, latents.dtype)
        steps = torch.randint(0, self.scheduler.config.num_train_timesteps, (b,), generator=generator).to(self.device)
        noisy = self.scheduler.add_noise(latents, noise, steps)
        context = self.encode(prompts)
        pred = self.unet(noisy, steps, context.to(self.dtype)).sample
        kind = self.scheduler.config.prediction_type
        target = noise if kind == "epsilon" else self.scheduler.get_velocity(latents, noise, steps)
        per_example = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        if weights is not None:
            per_example = per_example * weights.to(per_example.device)
        return per_example.mean()

    # ------------------------------------------------------------------ saving

    def attention_state(self) -> dict[str, torch.Tensor]:
        """Every attention processor of the UNet by name: k/v weights for the trained
        ones, an empty tensor for the others (see infra/checkpoint.py)."""
        state: dict[str, torch.Tensor] = {}
        for name in self.unet.attn_processors:
            proc = self.processors.get(name)
            if proc is None:
                state[name] = torch.empty(0)
            else:
                for key, value in proc.state_dict().items():
                    state[f"{name}.{key}"] = value.detach().float().cpu().contiguous()
        return state

    def load_attention_state(self, state: dict[str, torch.Tensor]) -> None:
        for name, proc in self.processors.items():
            own = {k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(name + ".")}
            proc.load_state_dict(own)

    def token_embeddings(self) -> dict[str, torch.Tensor]:
        return {t: self.embeddings[i].detach().float().cpu().clone() for i, t in enumerate(self.tokens)}

    def load_token_embeddings(self, embeddings: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for i, token in enumerate(self.tokens):
                self.embeddings[i].copy_(embeddings[token].to(self.embeddings.device))
