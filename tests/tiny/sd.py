"""A tiny Stable Diffusion 1.5-style pipeline: the real classes, random weights, CPU-fast.

The VAE has four blocks (x8 downsampling, as the real one) so a 64-pixel image is an 8x8
latent; a two-block VAE would make every image four times larger in latent space.
"""

from __future__ import annotations

from pathlib import Path

from tests.tiny.tokenizer import VOCAB_SIZE, clip_tokenizer

CROSS_DIM = 32


def text_config(hidden: int, **extra):
    """A tiny CLIP text encoder's config on CLIP's real vocabulary (SD's and SDXL's)."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=VOCAB_SIZE, hidden_size=hidden, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=2, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
        pad_token_id=49407, **extra,
    )


def tiny_vae(**extra):
    """A tiny AutoencoderKL with the real x8 downsampling (four blocks)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(16, 16, 16, 16), in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4, layers_per_block=1, norm_num_groups=8, sample_size=64, **extra,
    )


def sd_components(folder: str | Path, in_channels: int = 4, seed: int = 0) -> dict:
    """The components of a tiny SD 1.5 pipeline (text-to-image by default, 9 input
    channels for inpainting)."""
    import torch
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=CROSS_DIM,
        attention_head_dim=8,
        norm_num_groups=16,
    )
    vae = tiny_vae()
    text_encoder = CLIPTextModel(text_config(CROSS_DIM))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    tokenizer = clip_tokenizer(Path(folder) / "_tokenizer")
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)


def tiny_sd(folder: str | Path, seed: int = 0) -> Path:
    """A tiny StableDiffusionPipeline saved in `folder` (loads with from_pretrained)."""
    from diffusers import StableDiffusionPipeline

    folder = Path(folder)
    pipe = StableDiffusionPipeline(**sd_components(folder, seed=seed), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(folder))
    return folder


def tiny_sd_inpaint(folder: str | Path, seed: int = 0) -> Path:
    """A tiny StableDiffusionInpaintPipeline (UNet with 9 input channels) in `folder`."""
    from diffusers import StableDiffusionInpaintPipeline

    folder = Path(folder)
    pipe = StableDiffusionInpaintPipeline(**sd_components(folder, in_channels=9, seed=seed), safety_checker=None,
                                          feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(folder))
    return folder
