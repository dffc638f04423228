"""Sample: a personalised model + held-out prompts -> images in storage, seeded and batched.

Images go beside the checkpoint, `{checkpoint}/eval/{prompt set}/{composition}/`, named by
prompt, sample and seed. Image k of prompt i (its index in the set) uses the seed
`set.seed + 1000 * i + k` with its own generator, so an image does not depend on the batch
size or which other prompts were run (up to the rounding of batched kernels).
"""

from __future__ import annotations

from pydantic import Field
from prefect import task

from gen4gen.infra import limits
from gen4gen.models import hf
from gen4gen.infra.storage import encode_png, join, sha256, write_bytes
from gen4gen.models import registry
from gen4gen.infra.records import Record, SafeId
from gen4gen.tasks.evaluation.prompts import PromptSet

BACKEND = ("personalise", "custom-diffusion")


class EvalImage(Record):
    """One generated evaluation image (pixels stay in storage)."""

    composition: SafeId
    prompt_index: int = Field(ge=0)
    prompt: str
    concepts: list[SafeId]
    sample: int = Field(ge=0)
    seed: int = Field(ge=0)
    path: str = Field(description="the PNG, relative to the checkpoint URI")
    sha256: str


def image_seed(prompts: PromptSet, prompt_index: int, sample: int) -> int:
    return prompts.seed + 1000 * prompt_index + sample


def image_path(prompts: PromptSet, composition: str, prompt_index: int, sample: int, seed: int) -> str:
    return f"eval/{prompts.name}/{composition}/p{prompt_index:02d}-s{sample:02d}-seed{seed}.png"


def sample_composition(checkpoint: str, prompts: PromptSet, composition: str, model: dict) -> list[EvalImage]:
    """Generate every image of one composition's prompts; `model`: the options of the
    personalised pipeline (models/train/personalised.py)."""
    import numpy as np

    pipe = registry.load(*BACKEND, model)
    gen = prompts.generation
    size = gen.size or pipe.resolution
    images: list[EvalImage] = []
    for i, p in enumerate(prompts.prompts):
        if p.composition != composition:
            continue
        seeds = [image_seed(prompts, i, k) for k in range(prompts.samples_of(p))]
        for start in range(0, len(seeds), gen.batch):
            batch = seeds[start : start + gen.batch]
            for k, (seed, im) in enumerate(
                zip(batch, pipe.generate(p.prompt, batch, gen.steps, gen.guidance, size, gen.negative_prompt)),
                start=start,
            ):
                data = encode_png(np.asarray(im))
                rel = image_path(prompts, composition, i, k, seed)
                write_bytes(join(checkpoint, rel), data)
                images.append(EvalImage(composition=composition, prompt_index=i, prompt=p.prompt, concepts=p.concepts,
                                        sample=k, seed=seed, path=rel, sha256=sha256(data)))
    return images


@task(name="sample")
def sample_task(checkpoint: str, prompts: PromptSet, composition: str, model: dict) -> list[EvalImage]:
    with limits.device_slot(hf.device(model.get("device"))):
        return sample_composition(checkpoint, prompts, composition, model)
