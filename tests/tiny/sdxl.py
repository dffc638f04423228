"""A tiny SDXL inpainting pipeline and a tiny SDXL refiner: the real classes, random weights.

As the released pair: the base has two text encoders (a CLIP text model and a CLIP text
model with projection, whose hidden sizes add up to the UNet's cross-attention width), a
9-channel UNet with "text_time" added conditioning (6 time ids), Euler scheduling; the
refiner has only the second text encoder, a 4-channel UNet conditioned on 5 time ids (the
aesthetic score replaces the target size) and `requires_aesthetics_score`. Both share the
second text encoder and the VAE (four blocks: x8 downsampling, as the real one). Saved with
save_pretrained; they load with StableDiffusionXLInpaintPipeline.from_pretrained.
"""

from __future__ import annotations

from pathlib import Path

from tests.tiny.sd import text_config, tiny_vae
from tests.tiny.tokenizer import clip_tokenizer

HIDDEN_1 = 32  # text encoder 1 (CLIP ViT-L in the real model: 768)
HIDDEN_2 = 32  # text encoder 2 (OpenCLIP bigG: 1280), also its projection size
TIME_DIM = 8  # addition_time_embed_dim (256 in the real models)


def _unet(in_channels: int, cross_dim: int, time_ids: int, text_embed: int, seed: int):
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_DIM,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=time_ids * TIME_DIM + text_embed,
        cross_attention_dim=cross_dim,
        norm_num_groups=16,
    )


def sdxl_components(folder: str | Path, seed: int = 0) -> dict:
    import torch
    from diffusers import EulerDiscreteScheduler
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    folder = Path(folder)
    unet = _unet(9, HIDDEN_1 + HIDDEN_2, 6, HIDDEN_2, seed)
    torch.manual_seed(seed + 1)
    vae = tiny_vae(scaling_factor=0.13025)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(text_config(HIDDEN_1))
    text_encoder_2 = CLIPTextModelWithProjection(text_config(HIDDEN_2, projection_dim=HIDDEN_2))
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    tokenizer = clip_tokenizer(folder / "_tokenizer")
    return dict(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
                tokenizer_2=tokenizer, unet=unet, scheduler=scheduler)


def tiny_sdxl_inpaint(folder: str | Path, refiners: dict[str | Path, int] | None = None, seed: int = 0) -> Path:
    """Save a tiny SDXL inpainting pipeline in `folder` and, for each `refiners` entry
    (folder -> seed of its UNet), a tiny refiner sharing its VAE and second text encoder."""
    from diffusers import StableDiffusionXLInpaintPipeline

    folder = Path(folder)
    parts = sdxl_components(folder, seed=seed)
    StableDiffusionXLInpaintPipeline(**parts, add_watermarker=False).save_pretrained(str(folder))
    for refiner_folder, refiner_seed in (refiners or {}).items():
        tiny_refiner(refiner_folder, parts, seed=refiner_seed)
    return folder


def tiny_refiner(folder: str | Path, parts: dict, seed: int = 10) -> Path:
    """A tiny SDXL refiner (4-channel UNet, second text encoder only) in `folder`."""
    from diffusers import StableDiffusionXLInpaintPipeline

    folder = Path(folder)
    refiner = StableDiffusionXLInpaintPipeline(
        vae=parts["vae"], text_encoder=None, text_encoder_2=parts["text_encoder_2"], tokenizer=None,
        tokenizer_2=parts["tokenizer_2"], unet=_unet(4, HIDDEN_2, 5, HIDDEN_2, seed),
        scheduler=parts["scheduler"], requires_aesthetics_score=True, force_zeros_for_empty_prompt=False,
        add_watermarker=False,
    )
    refiner.save_pretrained(str(folder))
    return folder
