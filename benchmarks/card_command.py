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

`--stand-in` (the smoke run's mode, and what runs without an examples folder) runs the card's
command as printed, through bash and accelerate, from the published folder, on a stand-in
`train_custom_diffusion.py` that parses the card's arguments under the real script's names
and checks what they name (the concepts list, every entry's images, one initializer word per
modifier token, tokens in each prompt). It trains nothing and reports no training figure.
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
SMOKE = ["--stand-in"]  # benchmarks/smoke.py: the smallest mode
HEADLINE = r"-> (trained|checked|FAILED)"

# Written into a stand-in examples folder: the card's arguments under the names diffusers'
# script gives them, and the checks of what they name that the script makes before training.
STAND_IN = r'''
import argparse, json, pathlib, re, sys
p = argparse.ArgumentParser()
for name in ("pretrained_model_name_or_path", "concepts_list", "modifier_token", "initializer_token",
             "output_dir", "learning_rate", "prior_loss_weight"):
    p.add_argument("--" + name, required=name in ("pretrained_model_name_or_path", "concepts_list"))
for name in ("resolution", "train_batch_size", "max_train_steps", "num_class_images", "sample_batch_size"):
    p.add_argument("--" + name, type=int)
p.add_argument("--with_prior_preservation", action="store_true")
a = p.parse_args()
entries = json.loads(pathlib.Path(a.concepts_list).read_text())
mods, inits = a.modifier_token.split("+"), a.initializer_token.split("+")
bad = [] if len(mods) == len(inits) else [f"{len(mods)} modifier tokens, {len(inits)} initializers"]
bad += [f"initializer {w!r} is not one word" for w in inits if not re.fullmatch(r"[a-z]+", w)]
for e in entries:
    imgs = [f for f in pathlib.Path(e["instance_data_dir"]).glob("*") if f.suffix in (".png", ".jpg")]
    bad += [] if imgs else [f"no images in {e['instance_data_dir']}"]
    bad += [f"{t!r} is no --modifier_token" for t in re.findall(r"<[^<>\s]+>", e["instance_prompt"])
            if t not in mods]
print(f"stand-in: {len(entries)} concepts_list entries, tokens {mods}, base {a.pretrained_model_name_or_path}")
print("stand-in: " + ("; ".join(bad) if bad else "every argument the card passes names what it should"))
sys.exit(1 if bad else 0)
'''


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


def publish_tiny(root: Path, build_base: bool = True):
    """A small published version (two compositions, one category of two words) and a tiny
    SD 1.5 folder (None unless `build_base`): (config, manifest, dataset folder, base folder)."""
    from conftest import small_recipe
    from gen4gen.infra.records import DatasetConfig
    from gen4gen.tasks.pipeline import run_local
    from tests.tiny.sd import tiny_sd

    raw = small_recipe(root, samples=2, canvas=128)
    raw["concepts"][1]["category"] = "coffee mug"  # the initializer is its one-token word
    config = DatasetConfig.model_validate(raw)
    manifest, _, _ = run_local(config)
    return config, manifest, root / "out", tiny_sd(root / "sd") if build_base else None


def trained(folder: Path, tokens: list[str]) -> list[str]:
    """What a finished run of the script left missing in its --output_dir (empty: trained)."""
    out = folder / "custom-diffusion"
    want = ["pytorch_custom_diffusion_weights.safetensors"] + [f"{t}.safetensors" for t in tokens]
    return [name for name in want if not (out / name).is_file()]


def stand_in(root: Path) -> Path:
    """An examples folder whose train_custom_diffusion.py is STAND_IN (see the module text)."""
    script = root / "stand-in" / "examples" / "custom_diffusion" / "train_custom_diffusion.py"
    script.parent.mkdir(parents=True)
    script.write_text(STAND_IN)
    return script.parents[1]


def check(examples: Path | None, root: Path, prior: bool = False) -> list[tuple[str, subprocess.CompletedProcess, list]]:
    """Publish, run the card's command (and its prior variant), return each run's
    (command, process, missing outputs). `examples` None: on the stand-in, nothing trained."""
    from gen4gen.tasks.publishing.verify import problems

    config, manifest, folder, base = publish_tiny(root, build_base=examples is not None)
    command = train_command((folder / "README.md").read_text())
    if examples is None:  # the card's own base id stays: the stand-in loads no model
        runs = []
        for extra in [TINY] + ([TINY + PRIOR + TINY_PRIOR] if prior else []):
            full, done = run_command(command, folder, stand_in(root / f"run-{len(runs)}"), extra)
            runs.append((full, done, [f"verify: {p}" for p in problems(str(folder))]))
        return runs
    command = with_base(command, str(base))
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
    parser.add_argument("--stand-in", action="store_true",
                        help="run the command on a stand-in script that checks its arguments (trains nothing)")
    args = parser.parse_args()
    examples = None if args.stand_in or not args.examples else Path(args.examples)
    if examples is None:
        print(f"not run here: diffusers' train_custom_diffusion.py (no examples folder: ${ENV}); "
              "the card's command runs on a stand-in that checks its arguments")
    elif missing := missing_requirements():
        parser.error(f"the script's requirements are not installed: {', '.join(missing)}")
    status = 0
    with tempfile.TemporaryDirectory(prefix="gen4gen-card-") as tmp:
        start = time.perf_counter()
        for full, done, missing in check(examples, Path(tmp), prior=args.prior):
            print("$ cd DATASET &&", full.replace(tmp, "$TMP"))
            print("\n".join((done.stdout + done.stderr).splitlines()[-15:]))
            ok = done.returncode == 0 and not missing
            verdict = ("trained" if examples else "checked by the stand-in, not trained") if ok else "FAILED"
            print(f"rc={done.returncode} missing={missing} -> {verdict}\n")
            status |= not ok
        print(f"{time.perf_counter() - start:.1f} s")
    return status


if __name__ == "__main__":
    sys.exit(main())
