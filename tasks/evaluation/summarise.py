"""Summarise: per-image scores -> results.json beside the checkpoint, and what the UI shows.

results.json holds every image's scores and, for CP-CLIP and TI-CLIP, the mean with a
95% bootstrap interval (models/score/metrics.py: `bootstrap`, 2,000 resamples, seed 0, so a
rerun gives the same interval) over all images, per composition, and by number of
concepts (DESIGN §6: "<=3", "4", "5"; a group with no images is left out). It also records
the comparison with the earlier checkpoints of the same run (sibling folders that already
have a results.json), as read when this evaluation ran.

Pure functions first (no Prefect), then the artifacts, then the scoring task that hands
the images to models/score/score.py (vision's) and keeps its per-image record as `detail`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from prefect import task
from pydantic import Field

from gen4gen.infra import limits
from gen4gen.models import hf
from gen4gen.infra.artifacts import artifact_key
from gen4gen.infra.checkpoint import siblings
from gen4gen.infra.errors import BadInput
from gen4gen.infra.storage import exists, join, read_bytes, signed_url, write_bytes
from gen4gen.models.score.metrics import bootstrap
from gen4gen.tasks.evaluation.prompts import PromptSet
from gen4gen.infra.records import Record, SafeId
from gen4gen.tasks.evaluation.sample import EvalImage

FORMAT = "gen4gen-eval-results/1"
METRICS = ("cp_clip", "ti_clip")
GROUPS = ("<=3", "4", "5")
RESAMPLES, BOOTSTRAP_SEED = 2000, 0


class ScoredImage(EvalImage):
    """An evaluation image with its scores; `detail` is models/score/score.py's record of it
    (per-concept detection score and similarity)."""

    cp_clip: float
    ti_clip: float
    detail: dict[str, Any] = Field(default_factory=dict)


class Interval(Record):
    mean: float
    low: float
    high: float
    n: int


class GroupScores(Record):
    images: int
    cp_clip: Interval
    ti_clip: Interval


class EarlierRow(Record):
    """One checkpoint of the run in the comparison table."""

    checkpoint: str
    step: int
    prompt_set: str
    same_prompts: bool = Field(description="scored on the same prompt set (same sha256) as this evaluation")
    overall: GroupScores
    by_concepts: dict[str, GroupScores] = Field(default_factory=dict)


class Results(Record):
    """results.json."""

    format: str = FORMAT
    checkpoint: str
    step: int
    run: str
    base_model: str
    dataset: str
    dataset_version: str | None = None
    prompt_set: dict[str, str] = Field(description="name, uri, sha256 of the prompt set")
    vision: dict[str, Any]
    created: datetime
    seconds: dict[str, float] = Field(default_factory=dict)
    overall: GroupScores
    by_composition: dict[SafeId, GroupScores]
    by_concepts: dict[str, GroupScores]
    images: list[ScoredImage]
    earlier: list[EarlierRow] = Field(default_factory=list, description="the run's other checkpoints, by step")


def concept_group(n: int) -> str:
    """The paper's grouping by number of concepts."""
    return "<=3" if n <= 3 else str(n)


def group_scores(images: list[ScoredImage]) -> GroupScores:
    return GroupScores(
        images=len(images),
        **{m: Interval(**bootstrap([getattr(i, m) for i in images], n=RESAMPLES, seed=BOOTSTRAP_SEED)) for m in METRICS},
    )


def summarise(images: list[ScoredImage], **record: Any) -> Results:
    """The results of one evaluation; `record`: the other fields of Results."""
    if not images:
        raise ValueError("no scored images to summarise")
    by_comp: dict[str, list[ScoredImage]] = {}
    by_n: dict[str, list[ScoredImage]] = {}
    for im in images:
        by_comp.setdefault(im.composition, []).append(im)
        by_n.setdefault(concept_group(len(im.concepts)), []).append(im)
    return Results(
        overall=group_scores(images),
        by_composition={c: group_scores(ims) for c, ims in by_comp.items()},
        by_concepts={g: group_scores(by_n[g]) for g in GROUPS if g in by_n},
        images=images,
        **record,
    )


def read_results(checkpoint: str) -> Results | None:
    """A checkpoint's results.json, or None when it has none or one this code cannot read
    (an older format is skipped from comparisons, not an error)."""
    uri = join(checkpoint, "results.json")
    if not exists(uri):
        return None
    try:
        return Results.model_validate_json(read_bytes(uri))
    except (ValueError, BadInput):
        return None


def earlier_rows(results: list[Results], prompt_sha256: str) -> list[EarlierRow]:
    return sorted(
        (
            EarlierRow(checkpoint=r.checkpoint, step=r.step, prompt_set=r.prompt_set.get("name", "?"),
                       same_prompts=r.prompt_set.get("sha256") == prompt_sha256, overall=r.overall,
                       by_concepts=r.by_concepts)
            for r in results
        ),
        key=lambda row: row.step,
    )


def write_results(results: Results) -> str:
    uri = join(results.checkpoint, "results.json")
    write_bytes(uri, results.model_dump_json(indent=2).encode())
    return uri


# --------------------------------------------------------------------------- tables


def _fmt(iv: Interval) -> str:
    return f"{iv.mean:.3f} [{iv.low:.3f}, {iv.high:.3f}]"


def result_rows(results: Results) -> list[dict]:
    """The results table: all images, each concept-count group, each composition."""
    rows = [("all", "", results.overall)]
    rows += [(f"{g} concepts", "", s) for g, s in results.by_concepts.items()]
    rows += [("composition", c, s) for c, s in results.by_composition.items()]
    return [
        {"group": g, "composition": c, "images": s.images, "CP-CLIP": round(s.cp_clip.mean, 4),
         "CP-CLIP 95% CI": f"[{s.cp_clip.low:.3f}, {s.cp_clip.high:.3f}]", "TI-CLIP": round(s.ti_clip.mean, 4),
         "TI-CLIP 95% CI": f"[{s.ti_clip.low:.3f}, {s.ti_clip.high:.3f}]"}
        for g, c, s in rows
    ]


def comparison_rows(results: Results) -> list[dict]:
    """This checkpoint beside the run's earlier ones, by step (every row the same columns;
    the means are numbers, so the history table sorts and plots by them)."""
    this = EarlierRow(checkpoint=results.checkpoint, step=results.step, prompt_set=results.prompt_set["name"],
                      same_prompts=True, overall=results.overall, by_concepts=results.by_concepts)
    rows = sorted([*results.earlier, this], key=lambda r: r.step)
    return [
        {"step": r.step, "checkpoint": r.checkpoint.rsplit("/", 1)[-1] + (" (this)" if r is this else ""),
         "same prompts": "yes" if r.same_prompts else f"no ({r.prompt_set})",
         "CP-CLIP": round(r.overall.cp_clip.mean, 4), "CP-CLIP 95% CI": _ci(r.overall.cp_clip),
         "TI-CLIP": round(r.overall.ti_clip.mean, 4), "TI-CLIP 95% CI": _ci(r.overall.ti_clip),
         **{f"CP-CLIP {g}": (round(r.by_concepts[g].cp_clip.mean, 4) if g in r.by_concepts else None) for g in GROUPS}}
        for r in rows
    ]


def _ci(iv: Interval) -> str:
    return f"[{iv.low:.3f}, {iv.high:.3f}]"


def text_table(rows: list[dict]) -> str:
    """A plain fixed-width table (for the CLI and logs)."""
    if not rows:
        return ""
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    line = lambda vals: "  ".join(str(v).ljust(widths[c]) for c, v in zip(cols, vals))  # noqa: E731
    return "\n".join([line(cols), line("-" * widths[c] for c in cols), *(line([r[c] for c in cols]) for r in rows)])


# --------------------------------------------------------------------------- artifacts

THUMB, PER_COMPOSITION = 128, 2
LINK_SECONDS = 7 * 24 * 3600


def results_key(results: Results) -> str:
    return artifact_key("eval", results.run, f"step-{results.step}")


def history_key(results: Results) -> str:
    return artifact_key("eval", results.run, results.prompt_set["name"], "history")


def thumbnails_key(results: Results) -> str:
    return artifact_key("eval", results.run, f"step-{results.step}", "samples")


def _thumb_link(results: Results, im: ScoredImage) -> str:
    from gen4gen.tasks.views.report import data_uri, thumbnail_jpeg

    jpeg = thumbnail_jpeg(read_bytes(join(results.checkpoint, im.path)), im.path, THUMB)
    thumb = join(results.checkpoint, im.path.rsplit("/", 2)[0], ".thumbs", im.path.rsplit("/", 2)[1],
                 im.path.rsplit("/", 1)[1].replace(".png", ".jpg"))
    write_bytes(thumb, jpeg)
    # On S3 a presigned link; on a local disk inline (a browser will not open file:// from the UI).
    return signed_url(thumb, LINK_SECONDS) or data_uri(jpeg)


def thumbnails_markdown(results: Results) -> str:
    """A few scored images per composition: the first samples of each, with their scores."""
    lines = [
        f"## {results.run} step {results.step}: samples of {results.prompt_set['name']}\n",
        f"CP-CLIP {_fmt(results.overall.cp_clip)}, TI-CLIP {_fmt(results.overall.ti_clip)} over "
        f"{results.overall.images} images. Every image: `{results.checkpoint}/results.json`.\n",
        "| composition | prompt | image | CP-CLIP | TI-CLIP | detected |", "|---|---|---|---|---|---|",
    ]
    for comp in results.by_composition:
        for im in [i for i in results.images if i.composition == comp][:PER_COMPOSITION]:
            try:
                cell = f"![{im.path}]({_thumb_link(results, im)})"
            except BadInput as err:
                cell = f"unreadable: {err.reason}"
            found = im.detail.get("concepts", {})
            detected = f"{sum(bool(c.get('detected')) for c in found.values())}/{len(found)}" if found else None
            prompt = im.prompt.replace("<", "&lt;").replace(">", "&gt;").replace("|", "/")
            lines.append(f"| {comp} | {prompt} | {cell} | {im.cp_clip:.3f} | {im.ti_clip:.3f} | "
                         f"{detected if detected is not None else '-'} |")
    return "\n".join(lines)


def publish_artifacts(results: Results) -> list[str]:
    """The results table, the comparison with earlier checkpoints, scored thumbnails."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    head = f"{results.run} step {results.step} on {results.prompt_set['name']}"
    create_table_artifact(result_rows(results), key=results_key(results),
                          description=f"{head}: CP-CLIP / TI-CLIP, mean and 95% bootstrap interval")
    publish_history(results)
    create_markdown_artifact(thumbnails_markdown(results), key=thumbnails_key(results),
                             description=f"{head}: scored samples")
    return [results_key(results), history_key(results), thumbnails_key(results)]


def history_rows(results: Results) -> tuple[list[dict], list[tuple[str, datetime]]]:
    """The run's history as its checkpoints' results.json files say now: this evaluation
    and every sibling checkpoint evaluated so far, by step; and what it was read from."""
    earlier = [r for r in (read_results(s) for s in siblings(results.checkpoint)) if r is not None]
    rows = comparison_rows(results.model_copy(update={"earlier": earlier_rows(earlier, results.prompt_set["sha256"])}))
    return rows, sorted((r.checkpoint, r.created) for r in earlier)


def publish_history(results: Results, rounds: int = 10) -> list[dict]:
    """The run's evaluation history (`history_key`: CP-CLIP / TI-CLIP of every evaluated
    checkpoint, by step), rebuilt from the siblings' results.json, not from `earlier`.

    Evaluations of one run are separate flow runs that finish close together, each
    writing its results.json before this. A table built before another one's results.json
    landed would lack it, and may still be the newest version of the artifact; so the
    siblings are read again after publishing, and the table published again while that
    finds one it lacked. Whichever evaluation publishes last has then read every
    results.json written before it, so the newest table holds them all."""
    from prefect.artifacts import create_table_artifact

    rows, read = history_rows(results)
    for _ in range(rounds):
        create_table_artifact(rows, key=history_key(results),
                              description=f"{results.run}: every evaluated checkpoint, by step")
        rows, again = history_rows(results)
        if again == read:
            break
        read = again
    return rows


def now() -> datetime:
    return datetime.now(timezone.utc)



# --------------------------------------------------------------------------- scoring


def score_composition(checkpoint: str, prompts: PromptSet, images: list[EvalImage]) -> list[ScoredImage]:
    """Score one composition's images with models/score/score.py: OWL-ViT crops against the
    concepts' source photos (from the prompt set) for CP-CLIP, the prompt without its
    tokens for TI-CLIP. Images and photos go by URI; score.py reads and caches them."""
    from gen4gen.models.score.score import score_images

    if not images:
        return []
    used = sorted({c for im in images for c in im.concepts})
    records = score_images(
        [join(checkpoint, im.path) for im in images],
        [[prompts.concept(c) for c in im.concepts] for im in images],
        [im.prompt for im in images],
        {c: prompts.concept(c).photos for c in used},
        prompts.vision,
    )
    return [
        ScoredImage(**im.model_dump(), cp_clip=r.cp_clip, ti_clip=r.ti_clip, detail=r.model_dump(mode="json"))
        for im, r in zip(images, records)
    ]


@task(name="score")
def score_task(checkpoint: str, prompts: PromptSet, images: list[EvalImage]) -> list[ScoredImage]:
    with limits.device_slot(hf.device((prompts.vision.get("clip") or {}).get("device", "auto"))):
        return score_composition(checkpoint, prompts, images)
