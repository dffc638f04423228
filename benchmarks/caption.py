"""Recaptioning throughput: LLaVA descriptions per second by batch size, side by side.

    python benchmarks/caption.py --tiny                     # CPU, the tiny random LLaVA
    python benchmarks/caption.py --model llava-hf/llava-1.5-7b-hf --images 64   # a GPU machine

Describes the same images (random 512x512 pictures, or `--images` of them) once per batch
size, after a warm-up batch, and prints seconds per image and images per second for each
batch size, plus the model's load time and peak GPU memory when on CUDA. The tiny model's
figures only show that batching works and what the Python around it costs; real figures
need the 7B model on a GPU (none were measured in this session).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# benchmarks/smoke.py (make benchmark-smoke): the smallest mode, and the line with the figure
SMOKE = ["--tiny", "--images", "2", "--batch-sizes", "1,2", "--max-new-tokens", "5", "--threads", "1"]
HEADLINE = r"^best: "


# LLaVA-1.5-7B's sizes (llava-hf/llava-1.5-7b-hf config.json): CLIP ViT-L/14 at 336 px and
# Llama-2-7B; `SMALL` keeps the same wiring at a size a CPU builds in a second (to check it).
REAL_7B = dict(vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                           image_size=336, patch_size=14, projection_dim=768),
               text=dict(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096))
SMALL = dict(vision=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                         image_size=56, patch_size=14, projection_dim=32),
             text=dict(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024))


def random_size_captioner(sizes: dict = REAL_7B, device: str = "auto", dtype: str = "auto", **options):
    """A LlavaCaptioner whose model is LLaVA-1.5 at `sizes` with random weights, built on the
    device (no download, no 14 GB through the disk). The captioner is loaded from the tiny
    saved model (the real loading code), then its model and processor are swapped for the
    big random one; the tiny tokenizer stays (its ids are a subset of the big vocabulary)."""
    import torch
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    from gen4gen.models.caption.llava import LlavaCaptioner
    from tests.tiny.llava import CHAT_TEMPLATE, tiny_llava

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = tiny_llava(Path(tempfile.mkdtemp(prefix="tiny-llava-")))
    cap = LlavaCaptioner(model=str(folder), device=device, dtype=dtype, **options)
    tok = cap.processor.tokenizer
    vision, text = sizes["vision"], sizes["text"]
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**vision),
        text_config=LlamaConfig(**text, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                pad_token_id=tok.pad_token_id),
        image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
        vision_feature_select_strategy="default", projector_hidden_act="gelu",
    )
    before = torch.get_default_dtype()
    torch.set_default_dtype(cap.dtype)  # built in the serving dtype: 7B in fp32 would not fit twice
    try:
        torch.manual_seed(0)
        with torch.device(cap.device):
            model = LlavaForConditionalGeneration(config).eval()
    finally:
        torch.set_default_dtype(before)
    model.generation_config.pad_token_id = tok.pad_token_id
    side = vision["image_size"]
    cap.processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": side},
                                           crop_size={"height": side, "width": side}),
        tokenizer=tok, patch_size=vision["patch_size"], vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE,
    )
    cap.model = model
    return cap


def measure(captioner, n_images: int = 16, batch_sizes=(1, 4, 8), size: int = 512) -> list[dict]:
    """Seconds per image by batch size (warm: one batch first). Random weights rarely say
    </s>, real ones do; every description is forced to max_new_tokens so runs compare."""
    import numpy as np
    import torch

    captioner.model.generation_config.min_new_tokens = captioner.max_new_tokens
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(n_images)]
    cuda = str(captioner.device).startswith("cuda")
    rows = []
    for b in batch_sizes:
        captioner.batch_size = b
        captioner.describe(images[:b])  # warm-up
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        began = time.perf_counter()
        captioner.describe(images)
        if cuda:
            torch.cuda.synchronize()
        took = time.perf_counter() - began
        rows.append(dict(batch=b, s_image=took / n_images, images_s=n_images / took,
                         tokens_s=n_images * captioner.max_new_tokens / took,
                         peak_gib=torch.cuda.max_memory_allocated() / 2**30 if cuda else None))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true", help="build and use the tiny random LLaVA (CPU)")
    ap.add_argument("--model", default="llava-hf/llava-1.5-7b-hf")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--batch-sizes", default="1,4,8")
    ap.add_argument("--max-new-tokens", type=int, default=60)
    ap.add_argument("--threads", type=int, help="torch CPU threads (on a shared machine, 1 avoids spin-waiting)")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from gen4gen.models.caption.llava import LlavaCaptioner

    model = args.model
    if args.tiny:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from tests.tiny.llava import tiny_llava

        model = str(tiny_llava(Path(tempfile.mkdtemp(prefix="tiny-llava-"))))
    start = time.perf_counter()
    captioner = LlavaCaptioner(model=model, max_new_tokens=args.max_new_tokens)
    load = time.perf_counter() - start
    print(f"model {'tiny random LLaVA' if args.tiny else model} on {captioner.device} ({captioner.dtype}, {torch.get_num_threads()} CPU threads); load {load:.1f} s")
    print(f"{'batch':>5} {'s/image':>9} {'images/s':>9}")
    rows = measure(captioner, args.images, [int(b) for b in args.batch_sizes.split(",")])
    for r in rows:
        print(f"{r['batch']:>5} {r['s_image']:>9.4f} {r['images_s']:>9.1f}")
    if rows and rows[-1]["peak_gib"] is not None:
        print(f"peak GPU memory {max(r['peak_gib'] for r in rows):.2f} GiB")
    if captioner.device == "cpu":
        print("not run here: LLaVA on a GPU (no CUDA): the rates above are the CPU's")
    best = max(rows, key=lambda r: r["images_s"])
    print(f"best: {best['images_s']:.2f} images/s at batch {best['batch']} ({best['s_image']:.3f} s/image)")


if __name__ == "__main__":
    main()
