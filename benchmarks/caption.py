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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true", help="build and use the tiny random LLaVA (CPU)")
    ap.add_argument("--model", default="llava-hf/llava-1.5-7b-hf")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--batch-sizes", default="1,4,8")
    ap.add_argument("--max-new-tokens", type=int, default=60)
    ap.add_argument("--threads", type=int, help="torch CPU threads (on a shared machine, 1 avoids spin-waiting)")
    args = ap.parse_args()

    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from gen4gen.models.llava import LlavaCaptioner

    model = args.model
    if args.tiny:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from tests.tiny.llava import tiny_llava

        model = str(tiny_llava(Path(tempfile.mkdtemp(prefix="tiny-llava-"))))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (512, 512, 3), dtype=np.uint8) for _ in range(args.images)]
    start = time.perf_counter()
    captioner = LlavaCaptioner(model=model, max_new_tokens=args.max_new_tokens)
    load = time.perf_counter() - start
    print(f"model {'tiny random LLaVA' if args.tiny else model} on {captioner.device} ({captioner.dtype}, {torch.get_num_threads()} CPU threads); load {load:.1f} s")
    print(f"{'batch':>5} {'s/image':>9} {'images/s':>9}")
    for size in [int(b) for b in args.batch_sizes.split(",")]:
        captioner.batch_size = size
        captioner.describe(images[:size])  # warm-up
        if captioner.device.startswith("cuda"):
            torch.cuda.synchronize()
        began = time.perf_counter()
        captioner.describe(images)
        if captioner.device.startswith("cuda"):
            torch.cuda.synchronize()
        took = time.perf_counter() - began
        print(f"{size:>5} {took / len(images):>9.4f} {len(images) / took:>9.1f}")
    if captioner.device.startswith("cuda"):
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
