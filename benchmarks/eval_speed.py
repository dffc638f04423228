"""Scoring throughput: CP-CLIP + TI-CLIP per image, batched against one image at a time.

    python benchmarks/eval_speed.py [--images 246] [--concepts 3] [--size 512] [--tiny]
                                    [--device auto] [--dtype auto]

Builds CLIP ViT-B/32 (open_clip's own architecture config) and OWL-ViT B/32
(transformers' OwlViTConfig defaults, which are google/owlvit-base-patch32's sizes) with
random weights: the same FLOPs as the real models, no download. OWL-ViT is saved with
save_pretrained and both are loaded back through models/score/vision.py, so the measured path
is the one an evaluation takes. `--tiny` uses the test suite's tiny models instead.

Each image holds `--concepts` concepts with two source photos each. Both modes are timed
after a warm-up (source features are then cached, as in a real evaluation where each
concept's photos are encoded once): "batched" scores all images in one call (OWL-ViT 16
images per pass, CLIP 64), "one at a time" calls score_images once per image with batch
size 1. Prints images/s and the time the paper's 246-image evaluation would take (goal:
under 60 s on one H100).
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
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# benchmarks/smoke.py (make benchmark-smoke): the smallest mode, and the line with the figure
SMOKE = ["--tiny", "--images", "4"]
HEADLINE = r"^speed-up batched / one at a time"

PAPER_IMAGES = 246
GOAL_SECONDS = 60.0


def real_models(folder: Path, device: str, dtype: str) -> dict:
    """Random-weight ViT-B/32 CLIP and OWL-ViT B/32; returns the vision options."""
    import torch
    from transformers import CLIPTokenizer, OwlViTConfig, OwlViTForObjectDetection, OwlViTImageProcessor, OwlViTProcessor

    from tests.tiny.tokenizer import write_clip_tokenizer

    owl = folder / "owlvit-b32-random"
    write_clip_tokenizer(owl)
    tokenizer = CLIPTokenizer.from_pretrained(str(owl), model_max_length=16, pad_token="!")
    OwlViTProcessor(image_processor=OwlViTImageProcessor(), tokenizer=tokenizer).save_pretrained(str(owl))
    torch.manual_seed(0)
    OwlViTForObjectDetection(OwlViTConfig()).eval().save_pretrained(str(owl))
    return {
        "clip": {"model": "ViT-B-32", "pretrained": None, "device": device, "dtype": dtype},
        "owlvit": {"model": str(owl), "device": device, "dtype": dtype},
    }


def tiny_models(folder: Path, device: str, dtype: str) -> dict:
    from tests.tiny.vision import tiny_clip, tiny_owlvit

    return {
        "clip": {**tiny_clip(folder / "clip"), "device": device, "dtype": dtype},
        "owlvit": {"model": str(tiny_owlvit(folder / "owlvit")), "device": device, "dtype": dtype},
    }


def workload(n: int, k: int, size: int):
    import numpy as np

    rng = np.random.default_rng(0)
    categories = ["cat", "dog", "mug", "rocket", "teddy bear"]
    concepts = [{"id": f"c{j}", "category": categories[j % 5], "token": f"<c{j}>"} for j in range(5)]
    sources = {c["id"]: [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(2)] for c in concepts}
    images, per_image, prompts = [], [], []
    for i in range(n):
        chosen = [concepts[(i + j) % 5] for j in range(k)]
        images.append(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        per_image.append(chosen)
        prompts.append(" and ".join(f"{c['token']} {c['category']}" for c in chosen) + " on a beach")
    return images, per_image, prompts, sources


def measure(images: int = PAPER_IMAGES, concepts: int = 3, size: int = 512, tiny: bool = False,
            device: str = "auto", dtype: str = "auto", owl_batch: int = 16, clip_batch: int = 64) -> dict:
    """Seconds for `images` images batched and one at a time, and peak GPU memory of the
    scoring runs (benchmarks/gpu_suite.py calls this; main prints it)."""
    from types import SimpleNamespace

    import torch

    args = SimpleNamespace(images=images, concepts=concepts, size=size, tiny=tiny, device=device, dtype=dtype,
                           owl_batch=owl_batch, clip_batch=clip_batch)

    from gen4gen.models import hf, registry
    from gen4gen.models.score.score import score_images

    device, dtype = hf.placement({"device": args.device, "dtype": args.dtype})
    tmp = Path(tempfile.mkdtemp(prefix="eval-speed-"))
    start = time.perf_counter()
    base = (tiny_models if args.tiny else real_models)(tmp, args.device, args.dtype)
    built = time.perf_counter() - start

    def options(owl_batch: int, clip_batch: int) -> dict:
        return {"clip": {**base["clip"], "batch_size": clip_batch},
                "owlvit": {**base["owlvit"], "batch_size": owl_batch, "threshold": 0.0}}

    batched, single = options(args.owl_batch, args.clip_batch), options(1, 1)
    start = time.perf_counter()
    for o in (batched, single):
        registry.load("vision", "clip", o["clip"])
        registry.load("vision", "owlvit", o["owlvit"])
    loaded = time.perf_counter() - start

    images, per_image, prompts, sources = workload(args.images, args.concepts, args.size)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    # Warm-up: kernels chosen, source features computed and cached in memory.
    score_images(images[:2], per_image[:2], prompts[:2], sources, batched)
    score_images(images[:1], per_image[:1], prompts[:1], sources, single)

    sync()
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    score_images(images, per_image, prompts, sources, batched)
    sync()
    t_batched = time.perf_counter() - start

    start = time.perf_counter()
    for i in range(len(images)):
        score_images([images[i]], [per_image[i]], [prompts[i]], sources, single)
    sync()
    t_single = time.perf_counter() - start

    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    return dict(batched_s=t_batched, single_s=t_single, device=device, dtype=dtype, build_s=built, load_s=loaded,
                images=args.images, peak_gib=peak)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=PAPER_IMAGES)
    parser.add_argument("--concepts", type=int, default=3, help="concepts per image (2-5)")
    parser.add_argument("--size", type=int, default=512, help="generated image side (SD 1.5: 512)")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny models (CPU smoke run)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--owl-batch", type=int, default=16)
    parser.add_argument("--clip-batch", type=int, default=64)
    args = parser.parse_args()

    r = measure(args.images, args.concepts, args.size, args.tiny, args.device, args.dtype, args.owl_batch,
                args.clip_batch)
    t_batched, t_single, device, dtype, built, loaded = (r[k] for k in ("batched_s", "single_s", "device", "dtype",
                                                                       "build_s", "load_s"))
    import torch

    size = "tiny" if args.tiny else "real size (ViT-B/32 CLIP, OWL-ViT B/32), random weights"
    print(f"models: {size}; device {device}, {str(dtype).removeprefix('torch.')}; torch threads {torch.get_num_threads()}")
    print(f"build + save {built:.1f} s, load {loaded:.1f} s (not counted below)")
    print(f"workload: {args.images} images {args.size}x{args.size}, {args.concepts} concepts each, 2 source photos per concept")
    print(f"{'mode':28s} {'seconds':>9s} {'images/s':>9s} {f'{PAPER_IMAGES} images (s)':>16s}")
    for name, t in (("batched", t_batched), ("one at a time", t_single)):
        rate = args.images / t
        print(f"{name:28s} {t:9.2f} {rate:9.2f} {PAPER_IMAGES / rate:16.1f}")
    print(f"speed-up batched / one at a time: {t_single / t_batched:.2f}x")
    goal = "met" if PAPER_IMAGES / (args.images / t_batched) < GOAL_SECONDS else "NOT met"
    where = "on this device" if device.startswith("cuda") else "on CPU (the goal is for one H100; GPU figure missing)"
    print(f"goal {PAPER_IMAGES} images < {GOAL_SECONDS:.0f} s: {goal} {where}")
    if not device.startswith("cuda"):
        print("not run here: the real-size models on a GPU (no CUDA)")


if __name__ == "__main__":
    main()
