"""The dataset card's diffusers command, run as printed on a tiny base model.

Publishes a small dataset (the test recipe at a 128 px canvas, one two-word category),
builds the test suite's tiny SD 1.5 (random weights, tests/tiny/sd.py), reads the card's
`accelerate launch ... train_custom_diffusion.py` block and runs it from the dataset folder,
as the card says, through bash. Only what the card names is filled in: `DIFFUSERS` (a
diffusers clone) and the base (a local folder instead of the hub id). Appended, as a user
testing on a CPU would: a 64 px resolution, 2 steps, batch 2 (argparse keeps the last value).
`--prior` runs the card's prior-preservation variant too (2 class images per entry).

diffusers' examples are not in its wheel and there is no network in CI, so the script is
named by the caller: a clone, or `git show vX.Y.Z:examples/custom_diffusion/...` of one:

    GEN4GEN_DIFFUSERS_EXAMPLES=/path/to/diffusers/examples python benchmarks/card_command.py
    pytest tests/tasks/test_card.py -m slow     # the same check, skipped without the variable

The script's own requirements (examples/custom_diffusion/requirements.txt: tensorboard for
its default --report_to, ftfy, ...) must be importable. Prints the command run and the tail
of its output; exits 1 unless it trained and wrote the weights and every token's embedding.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

ENV = "GEN4GEN_DIFFUSERS_EXAMPLES"
TINY = ["--resolution=64", "--max_train_steps=2", "--train_batch_size=2"]  # a tiny CPU run
PRIOR = ["--with_prior_preservation", "--prior_loss_weight=1.0"]  # as the card says to add
TINY_PRIOR = ["--num_class_images=2", "--sample_batch_size=2"]
REQUIREMENTS = {"tensorboard": "tensorboard", "torchvision": "torchvision", "ftfy": "ftfy", "jinja2": "Jinja2"}


def train_command(card: str) -> str:
    """The card's diffusers command: the bash block under "Train on it" that runs
    train_custom_diffusion.py, line continuations kept."""
    section = card.split("## Train on it", 1)[1]
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        if "train_custom_diffusion.py" in block:
            return block.strip()
    raise ValueError("the card prints no train_custom_diffusion.py command")


def with_base(command: str, base: str) -> str:
    """The command with the base model the card lets a user choose."""
    new, n = re.subn(r"--pretrained_model_name_or_path=\S+", lambda _: "--pretrained_model_name_or_path="
                     + shlex.quote(base), command)
    if n != 1:
        raise ValueError("the command names no --pretrained_model_name_or_path")
    return new


def missing_requirements() -> list[str]:
    return [pkg for mod, pkg in REQUIREMENTS.items() if importlib.util.find_spec(mod) is None]


def accelerate_bin(root: Path) -> str:
    """A folder whose `accelerate` is this interpreter's: its venv's, or a shim where the venv
    borrows its packages from another (the script then runs on this interpreter too)."""
    here = Path(sys.executable).parent
    if (here / "accelerate").exists():
        return str(here)
    shim = root / "bin"
    shim.mkdir(exist_ok=True)
    (shim / "accelerate").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m accelerate.commands.accelerate_cli "$@"\n')
    (shim / "accelerate").chmod(0o755)
    return str(shim)


def run_command(command: str, folder: Path, examples: Path, extra: list[str], timeout: float = 600):
    """`command` plus `extra` run by bash from `folder`, DIFFUSERS the clone holding
    `examples`, this interpreter's accelerate first on PATH (a folder beside `folder`)."""
    env = os.environ | {
        "DIFFUSERS": str(examples.resolve().parent), "HF_HUB_OFFLINE": "1",
        "PATH": accelerate_bin(folder.parent) + os.pathsep + os.environ.get("PATH", ""),
    }
    full = command + " " + " ".join(extra)
    done = subprocess.run(["bash", "-c", full], cwd=folder, env=env, capture_output=True, text=True, timeout=timeout)
    return full, done


def publish_tiny(root: Path):
    """A small published version (two compositions, one category of two words) and a tiny
    SD 1.5 folder: (config, manifest, dataset folder, base folder)."""
    from conftest import small_recipe
    from gen4gen.infra.records import DatasetConfig
    from gen4gen.tasks.pipeline import run_local
    from tests.tiny.sd import tiny_sd

    raw = small_recipe(root, samples=2, canvas=128)
    raw["concepts"][1]["category"] = "coffee mug"  # the initializer is its one-token word
    config = DatasetConfig.model_validate(raw)
    manifest, _, _ = run_local(config)
    return config, manifest, root / "out", tiny_sd(root / "sd")


def trained(folder: Path, tokens: list[str]) -> list[str]:
    """What a finished run of the script left missing in its --output_dir (empty: trained)."""
    out = folder / "custom-diffusion"
    want = ["pytorch_custom_diffusion_weights.safetensors"] + [f"{t}.safetensors" for t in tokens]
    return [name for name in want if not (out / name).is_file()]


def check(examples: Path, root: Path, prior: bool = False) -> list[tuple[str, subprocess.CompletedProcess, list]]:
    """Publish, run the card's command (and its prior variant), return each run's
    (command, process, missing outputs)."""
    from gen4gen.tasks.publishing.verify import problems

    config, manifest, folder, base = publish_tiny(root)
    command = with_base(train_command((folder / "README.md").read_text()), str(base))
    tokens = [config.concept(c).token for comp in config.compositions for c in comp.concepts]
    tokens = list(dict.fromkeys(tokens))
    runs = []
    for extra in [TINY] + ([TINY + PRIOR + TINY_PRIOR] if prior else []):
        for old in (folder / "custom-diffusion").glob("*.safetensors"):
            old.unlink()
        full, done = run_command(command, folder, examples, extra)
        missing = trained(folder, tokens)
        runs.append((full, done, missing + [f"verify: {p}" for p in problems(str(folder))]))
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", default=os.environ.get(ENV), help=f"diffusers' examples folder (${ENV})")
    parser.add_argument("--prior", action="store_true", help="also the prior-preservation variant")
    args = parser.parse_args()
    if not args.examples:
        parser.error(f"name diffusers' examples folder: --examples or ${ENV}")
    if missing := missing_requirements():
        parser.error(f"the script's requirements are not installed: {', '.join(missing)}")
    status = 0
    with tempfile.TemporaryDirectory(prefix="gen4gen-card-") as tmp:
        start = time.perf_counter()
        for full, done, missing in check(Path(args.examples), Path(tmp), prior=args.prior):
            print("$ cd DATASET &&", full.replace(tmp, "$TMP"))
            print("\n".join((done.stdout + done.stderr).splitlines()[-15:]))
            ok = done.returncode == 0 and not missing
            print(f"rc={done.returncode} missing={missing} -> {'trained' if ok else 'FAILED'}\n")
            status |= not ok
        print(f"{time.perf_counter() - start:.1f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
