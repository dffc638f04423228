"""Custom Diffusion training speed: optimizer steps per second and peak memory.

Runs the training step of tasks/training/train.py (`optimizer_step`, the same code `gen4gen train`
runs) on models built from configs with random weights, so nothing is downloaded:

    real     SD 1.5's architecture (UNet 320/640/1280/1280 with 768-wide cross-attention,
             the 4-block VAE, the 12-layer CLIP ViT-L/14 text encoder), 512x512, batch 8
             through gradient accumulation (--micro-batch), frozen models in bf16/fp16.
             Meant for a GPU machine.
    --tiny   the test suite's tiny SD 1.5 (tests/tiny/sd.py) at 64x64, fp32, on CPU.

    python benchmarks/train_speed.py --tiny
    python benchmarks/train_speed.py --precision bf16 --micro-batch 4
    python benchmarks/train_speed.py --precision fp16 --micro-batch 8 --gradient-checkpointing

Prints one line per configuration: seconds per step, steps/s, images/s, peak memory (GPU
memory allocated on CUDA, process peak RSS on CPU) and the projected time of the paper's
2,000- and 3,000-step runs.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# benchmarks/smoke.py (make benchmark-smoke): the smallest mode, and the line with the figure
SMOKE = ["--tiny", "--batch", "2", "--steps", "1", "--warmup", "1"]
HEADLINE = r" s/step \("

PROMPT = "<cat-mug> a photo of a <chelsea> cat next to a <coffee> mug, <chelsea> cat, <coffee> mug. background: in a living room"


def real_components(tokenizer_folder: str) -> dict:
    """SD 1.5-sized components, random weights (same FLOPs and memory as the real ones)."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from tests.tiny.tokenizer import clip_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768, attention_head_dim=8,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    ))
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, scheduler=scheduler, tokenizer=clip_tokenizer(tokenizer_folder))


def tiny_components(folder: str) -> dict:
    from diffusers import DDPMScheduler

    from tests.tiny.sd import sd_components

    parts = sd_components(folder)
    parts["scheduler"] = DDPMScheduler.from_config(parts["scheduler"].config)
    return parts


def peak_memory_gb(device: str) -> tuple[float, str]:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30, "GPU"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "RSS"


def run(args: argparse.Namespace) -> dict:
    import torch

    from gen4gen.models import hf
    from gen4gen.models.train.custom_diffusion import CustomDiffusion
    from gen4gen.tasks.training.train import make_optimizer, optimizer_step

    device = hf.device(args.device)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.precision]
    tmp = tempfile.mkdtemp(prefix="gen4gen-bench-")
    parts = tiny_components(tmp) if args.tiny else real_components(os.path.join(tmp, "tokenizer"))
    model = CustomDiffusion(**parts, device=device, dtype=dtype, gradient_checkpointing=args.gradient_checkpointing)
    model.add_tokens(["<chelsea>", "<coffee>", "<cat-mug>"], [["cat"], ["mug"], ["cat", "mug"]])
    params, optimizer, scaler = make_optimizer(model, 1e-5)
    accumulate = args.batch // args.micro_batch
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (args.micro_batch, 3, args.resolution, args.resolution), dtype=torch.uint8, generator=gen)
    prompts = [PROMPT] * args.micro_batch

    def batches():
        for _ in range(accumulate):
            yield pixels, prompts, None

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        optimizer_step(model, optimizer, scaler, params, batches(), accumulate, gen)
    sync()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        optimizer_step(model, optimizer, scaler, params, batches(), accumulate, gen)
    sync()
    seconds = (time.perf_counter() - start) / args.steps
    memory, kind = peak_memory_gb(device)
    trainable = sum(p.numel() for p in params)
    return dict(size="tiny" if args.tiny else "SD 1.5", device=device, precision=args.precision, res=args.resolution,
                batch=f"{args.micro_batch}x{accumulate}", ckpt=args.gradient_checkpointing, s_step=seconds,
                steps_s=1 / seconds, img_s=args.batch / seconds, memory=memory, kind=kind, trainable=trainable)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, defaults filled in (benchmarks/gpu_suite.py passes it to run())."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models, 64 px, fp32 (CPU)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", choices=["fp32", "fp16", "bf16"], help="frozen models' dtype (default bf16; tiny: fp32)")
    parser.add_argument("--resolution", type=int, help="default 512 (tiny: 64)")
    parser.add_argument("--batch", type=int, default=8, help="examples per optimizer step (paper: 8)")
    parser.add_argument("--micro-batch", type=int, help="examples per forward pass (default: --batch)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--steps", type=int, default=5, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args(argv)
    args.precision = args.precision or ("fp32" if args.tiny else "bf16")
    args.resolution = args.resolution or (64 if args.tiny else 512)
    args.micro_batch = args.micro_batch or args.batch
    if args.batch % args.micro_batch:
        parser.error("--micro-batch must divide --batch")
    return args


def main(argv: list[str] | None = None) -> int:
    r = run(parse(argv))
    print(f"{'size':7} {'device':6} {'prec':5} {'px':>4} {'batch':>6} {'ckpt':>5} {'s/step':>8} {'steps/s':>8} "
          f"{'img/s':>7} {'peak GB':>8} {'2000 steps':>11} {'3000 steps':>11} {'trainable':>10}")
    print(f"{r['size']:7} {r['device']:6} {r['precision']:5} {r['res']:>4} {r['batch']:>6} {str(r['ckpt']):>5} "
          f"{r['s_step']:>8.3f} {r['steps_s']:>8.2f} {r['img_s']:>7.1f} {r['memory']:>5.2f} {r['kind']:3}"
          f"{2000 * r['s_step'] / 60:>8.1f} min{3000 * r['s_step'] / 60:>8.1f} min {r['trainable'] / 1e6:>8.2f} M")
    print(f"{r['size']} on {r['device']}: {r['s_step']:.3f} s/step ({r['img_s']:.1f} images/s), "
          f"{2000 * r['s_step'] / 60:.1f} min for 2000 steps")
    if not r["device"].startswith("cuda"):
        print("not run here: GPU figures (no CUDA on this machine; run without --tiny on a CUDA machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
