"""The dataset card: README.md of a published version, in the Hugging Face dataset-card
format (https://huggingface.co/docs/hub/datasets-cards).

YAML header: the `configs` entry that `datasets.load_dataset(folder)` reads (imagefolder:
the kept images and metadata.jsonl) with its features, size and task categories, the
recipe's license. Body: what is in it (compositions, counts, drop reasons), how it was
made (every stage's backend and options, the recipe's hash, as the manifest records it)
and how to train on it: diffusers' `train_custom_diffusion.py`, whose `--modifier_token`
and `--initializer_token` must name our tokens and one-token category words, and
`gen4gen train`.

Pure: the same recipe and counts give the same bytes (no time, no host), so a rerun or a
run on another task runner publishes an identical card. One exception, on purpose: a card
on S3 names its own place in the command that loads it (`load_command`), since `datasets`
cannot load an S3 folder by its URI the way it loads a local one.
"""

from __future__ import annotations

import re
import shlex
from typing import Sequence

import yaml

from gen4gen.infra.records import CompositionStats, DatasetConfig, Manifest
from gen4gen.infra.storage import resolve, scheme, sha256
from gen4gen.models.segment.weights import as_run, describe_segmenter

BASE_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # the paper's base (SD 1.5)
FEATURES = [  # metadata.jsonl's columns (tasks/publishing/publish.py: metadata_rows), file_name -> image
    {"name": "image", "dtype": "image"},
    {"name": "text", "dtype": "string"},
    {"name": "composition", "dtype": "string"},
    {"name": "concepts", "list": "string"},
    {"name": "tokens", "list": "string"},
    {"name": "scene", "dtype": "string"},
    {"name": "sample_id", "dtype": "string"},
]
FALLBACK_WORD = "object"  # one CLIP token; the initializer of a category with no one-token word
SCRIPT = "$DIFFUSERS/examples/custom_diffusion/train_custom_diffusion.py"  # in the user's clone
MAX_LISTED = 100  # background photos named on the card; a card stays small at any recipe size
SECRET_WORDS = ("key", "secret", "password", "token", "credential")  # option names never shown


def size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "n>1M"


def initializer_word(category: str) -> str:
    """One word for diffusers' --initializer_token, which must be one token of the base's CLIP
    tokenizer (SD 1.5's BPE is open_clip's): the category's last word that is ('teddy bear' ->
    'bear', 't-shirt' -> 'shirt', 'hairdryer' (two tokens) -> 'object')."""
    from gen4gen.models.caption.captioner import clip_words

    words = re.findall(r"[a-z]+", category.lower())
    return next((w for w in reversed(words) if w in clip_words()), FALLBACK_WORD)


def _options(options: dict) -> dict:
    return {k: v for k, v in options.items() if not any(w in k.lower() for w in SECRET_WORDS) or k.endswith("_env")}


# Where s3fs finds a non-AWS endpoint (MinIO, moto, ...): the variable botocore reads too.
ENDPOINT_ENV = "AWS_ENDPOINT_URL"


def main_reasons(st: CompositionStats, n: int = 3) -> list[tuple[str, int]]:
    """A composition's most common drop reasons, most first."""
    return sorted(st.reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def load_command(uri: str) -> str:
    """Python that loads the version where it is. A local folder: by its path (the card's
    configs). Any fsspec URI (s3://, gs://, ...): its Parquet shards, with `storage_options`
    from the environment, since `datasets` takes a bare URI for a local folder name."""
    if scheme(uri) == "file":
        return f"datasets.load_dataset({resolve(uri).removeprefix('file://')!r})"
    options = (f'{{"endpoint_url": os.environ.get("{ENDPOINT_ENV}")}}' if scheme(uri) == "s3" else "{}")
    files = f"{resolve(uri).rstrip('/')}/data/*.parquet"
    return (f'import datasets, os; ds = datasets.load_dataset("parquet", data_files={files!r}, '
            f"storage_options={options})")


def cutouts_line(config: DatasetConfig) -> str:
    """Which segmenter cut the objects out (as the manifest's `segmenter` says)."""
    seg = describe_segmenter(config.stages.segment)
    if seg["backend"] == "isnet":
        digest = f", sha256 `{seg['model_sha256']}`" if "model_sha256" in seg else ""
        return f"- cut-outs: made by `isnet` (IS-Net, DIS; model `{seg['model']}`{digest})"
    if seg["backend"] == "offline":
        return ("- cut-outs: made by `offline` (classical GrabCut, no weights: cut-outs may carry background; "
                "`gen4gen weights fetch isnet` brings IS-Net's)")
    return f"- cut-outs: made by `{seg['backend']}`"


def background_lines(config: DatasetConfig, credits: dict[str, str | None]) -> list[str]:
    """The background photos the samples stand on, each with its source and licence where an
    attribution file beside it says (models/backgrounds.py: attribution)."""
    if not config.backgrounds:
        return ["- backgrounds: procedural scenes (the recipe brings no background photos)"]
    lines = ["", "## Background photos", "",
             "Each sample stands on one of these photos (the plan records which); their licences are their owners':", ""]
    listed = 0
    for bg in config.backgrounds:
        for photo in bg.photos:
            listed += 1
            if listed > MAX_LISTED:
                continue
            credit = credits.get(photo)
            lines.append(f"- {bg.scene}: `{photo.rsplit('/', 1)[-1]}`" + (f" ({credit})" if credit else
                                                                        " (no attribution file beside it)"))
    if listed > MAX_LISTED:
        lines.append(f"- ... and {listed - MAX_LISTED} more (the recipe lists every one)")
    return lines


def header(config: DatasetConfig, kept: int) -> dict:
    return {
        "license": config.license or "other",
        "pretty_name": f"{config.name} {config.version}",
        "task_categories": ["text-to-image"],
        "size_categories": [size_category(kept)],
        "tags": ["gen4gen", "multi-concept", "custom-diffusion", "personalization", "synthetic"],
        # The Parquet shards load at about 1 ms a row; the imagefolder copy (metadata.jsonl +
        # images/, what diffusers' script reads) stays as a second config.
        "configs": [
            {"config_name": "default", "data_files": [{"split": "train", "path": "data/shard-*.parquet"}]},
            {"config_name": "imagefolder",
             "data_files": [{"split": "train", "path": ["metadata.jsonl", "*/images/*.png"]}]},
        ],
        # No `splits`: datasets wants their Arrow size (num_bytes), which only it can measure;
        # a guess would be wrong and an entry without it is logged as malformed.
        "dataset_info": {"features": FEATURES},
    }


def dataset_card(config: DatasetConfig, manifest: Manifest | Sequence[CompositionStats],
                 base_model: str = BASE_MODEL, uri: str | None = None,
                 credits: dict[str, str | None] | None = None) -> bytes:
    """The card of a version: from its manifest, or (while publishing, before the manifest
    exists) from its compositions' counts; the recipe's hash is the manifest's. `config` is
    the recipe as the run resolved it; one still saying `segment: auto` is resolved here as a
    run would resolve it (models/segment/weights.py)."""
    config = as_run(config)
    stats = list(manifest.compositions if isinstance(manifest, Manifest) else manifest)
    config_sha = sha256(config.model_dump_json(exclude={"run"}).encode())  # as Manifest.config_sha256
    kept, planned = sum(s.kept for s in stats), sum(s.planned for s in stats)
    by_id = {s.composition: s for s in stats}
    reasons: dict[str, int] = {}
    for s in stats:
        for code, n in s.reasons.items():
            reasons[code] = reasons.get(code, 0) + n

    used = [config.concept(c) for comp in config.compositions if by_id.get(comp.id) and by_id[comp.id].kept
            for c in comp.concepts]
    concepts = list({c.id: c for c in used}.values())
    modifier = "+".join(c.token for c in concepts)
    initializer = "+".join(initializer_word(c.category) for c in concepts)
    steps = 2000 if max((len(c.concepts) for c in config.compositions), default=0) <= 3 else 3000

    lines = [
        f"# {config.name} {config.version}",
        "",
        f"Multi-concept training images made by the [Gen4Gen](https://arxiv.org/abs/2402.15504) data factory: "
        f"{len(config.concepts)} concepts in {len(config.compositions)} compositions, "
        f"{kept} images kept of {planned} generated ({100 * kept / planned if planned else 0:.0f}%).",
        "",
        "```python",
        *(["import datasets",
           'ds = datasets.load_dataset("path/to/this/folder")["train"]   # or the hub repo it was pushed to']
          if uri is None or scheme(uri) != "s3" else
          [load_command(uri) + '["train"]', f"# {ENDPOINT_ENV}: the endpoint of an S3-compatible store; "
           "credentials as for any S3 client (AWS_ACCESS_KEY_ID, ...)"]),
        "```",
        "",
        "## Compositions",
        "",
        "Target: kept images asked for (`keep`); attempts: samples planned over its rounds; yield: kept "
        "over attempts. Near-copies of an earlier kept image are dropped (`near_duplicate`).",
        "",
        "| composition | concepts | target | kept | attempts | rounds | yield | dropped | failed | main reasons |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for comp in config.compositions:
        st = by_id.get(comp.id)
        names = ", ".join(f"`{config.concept(c).token}` {config.concept(c).category}" for c in comp.concepts)
        if st is None:
            lines.append(f"| {comp.id} | {names} | - | 0 | 0 | 0 | - | 0 | 0 | - |")
            continue
        top = ", ".join(f"{code} {n}" for code, n in main_reasons(st))
        goal = "-" if st.target is None else f"{st.target}" + (" (budget spent)" if st.out_of_budget else "")
        lines.append(f"| {comp.id} | {names} | {goal} | {st.kept} | {st.tried} | {st.rounds} | "
                     f"{st.yield_rate:.0%} | {st.dropped} | {st.failed} | {top or '-'} |")
    lines += ["", "## Drop reasons", ""]
    lines += [f"- `{code}`: {n}" for code, n in sorted(reasons.items())] or ["- none"]
    lines += ["", "## How it was made", "",
              f"- recipe hash (the manifest's `config_sha256`): `{config_sha}`",
              f"- canvas {config.canvas} px, planner max IoU {config.max_iou}, seed {config.seed}"]
    for family in ("plan", "segment", "repaint", "caption", "filter"):
        stage = getattr(config.stages, family)
        dump = stage.model_dump(mode="json", exclude={"backend"})
        opts = _options(dump["options"] if set(dump) == {"options"} else dump | {"options": _options(dump.get("options", {}))})
        shown = yaml.safe_dump(opts, default_flow_style=True, width=1000).strip() if opts else "{}"
        lines.append(f"- {family}: backend `{stage.backend}`, options `{shown}`")
    lines.append(cutouts_line(config))
    lines += background_lines(config, credits or {})
    lines += [
        "",
        "Every sample, kept or not, with its reasons is in `{composition}/samples-*.jsonl`; `manifest.json` "
        "lists every file with its sha256 (`gen4gen verify` checks them).",
        "",
        "## Train on it",
        "",
        "With diffusers' [`train_custom_diffusion.py`](https://github.com/huggingface/diffusers/tree/main/examples/"
        "custom_diffusion): `DIFFUSERS` is a clone of diffusers at the tag of your installed version (the script "
        "checks it) with `examples/custom_diffusion/requirements.txt` installed. Run it from this folder: "
        "`concepts_list.json` paths are relative to it. The base may be a hub id or a local folder of one. "
        "Its default `--initializer_token` does not fit these tokens: each `--modifier_token` starts from "
        "its category word (one CLIP token).",
        "",
        "```bash",
        f'accelerate launch "{SCRIPT}" \\',
        f"  --pretrained_model_name_or_path={shlex.quote(base_model)} \\",
        "  --concepts_list=concepts_list.json \\",
        f'  --modifier_token="{modifier}" \\',
        f'  --initializer_token="{initializer}" \\',
        "  --output_dir=custom-diffusion \\",
        f"  --resolution=512 --train_batch_size=8 --learning_rate=1e-5 --max_train_steps={steps}",
        "```",
        "",
        "Add `--with_prior_preservation --prior_loss_weight=1.0` to generate class images into each entry's "
        "`class_data_dir`. With the paper's prompting strategies (composition token, repeated concept tokens, "
        "explicit background) and resumable checkpoints:",
        "",
        "```bash",
        f"gen4gen train --dataset . --out runs/{config.name}-{config.version}",
        "```",
        "",
    ]
    if not concepts:  # an empty --modifier_token or concepts_list fails the script
        lines = lines[: lines.index("## Train on it") + 2] + ["Nothing was kept: there is nothing to train on.", ""]
    front = yaml.safe_dump(header(config, kept), sort_keys=False, allow_unicode=True)
    return (f"---\n{front}---\n\n" + "\n".join(lines)).encode()
