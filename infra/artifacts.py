"""What a run shows in the Prefect UI: progress, a per-composition table, a review request.

Called from the generate flow with one line each; the numbers come from the records the
stages already produce (CompositionStats), so nothing here touches pixels or storage.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import PrefectFuture, as_completed

from gen4gen.infra.records import CompositionStats, DatasetConfig, Manifest


def artifact_key(*parts: str) -> str:
    """A valid artifact key (lowercase letters, digits, dashes) from ids that may hold '.' or '_'."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", "-".join(parts).lower())).strip("-")


def progress_key(config: DatasetConfig) -> str:
    return artifact_key(config.name, config.version, "progress")


def table_key(config: DatasetConfig) -> str:
    return artifact_key(config.name, config.version, "compositions")


def track_compositions(config: DatasetConfig, futures: list[PrefectFuture]) -> list[CompositionStats]:
    """Wait for every composition, advancing a progress artifact as each one finishes.

    Returns the results in the recipe's order; a composition that failed raises, as a plain
    `[f.result() for f in futures]` would.
    """
    artifact = create_progress_artifact(
        0.0, key=progress_key(config), description=f"{config.name} {config.version}: compositions collected"
    )
    for done, _ in enumerate(as_completed(futures), start=1):
        update_progress_artifact(artifact, 100.0 * done / len(futures))
    return [f.result() for f in futures]


def composition_rows(stats: Iterable[CompositionStats]) -> list[dict]:
    """One row per composition; every row has the same columns (a table needs them)."""
    stats = list(stats)
    reasons = sorted({code for st in stats for code in st.reasons})
    stages = sorted({stage for st in stats for stage in st.seconds})
    return [
        {
            "composition": st.composition,
            "planned": st.planned,
            "kept": st.kept,
            "dropped": st.dropped,
            "failed": st.failed,
            **{f"reason {code}": st.reasons.get(code, 0) for code in reasons},
            **{f"{stage} s": round(st.seconds.get(stage, 0.0), 2) for stage in stages},
        }
        for st in stats
    ]


def publish_table(config: DatasetConfig, manifest: Manifest) -> None:
    create_table_artifact(
        composition_rows(manifest.compositions),
        key=table_key(config),
        description=(
            f"{manifest.dataset} {manifest.version}: {manifest.kept} kept of {manifest.planned} at {manifest.uri}. "
            f"See every sample: `gen4gen report {manifest.uri} --out report.html`"
        ),
    )


def review_key(config: DatasetConfig) -> str:
    return artifact_key(config.name, config.version, "review")


def review_request(config: DatasetConfig, page_uri: str, counts: Mapping[str, int]) -> str:
    """A markdown artifact telling the operator where the review page is and how to answer.

    Returns the text, which the flow also shows above the resume form.
    """
    n, r = sum(counts.values()), config.review
    text = (
        f"## Review {config.name} {config.version} before publishing\n\n"
        f"{counts.get('kept', 0)} kept, {counts.get('dropped', 0)} dropped, {counts.get('failed', 0)} failed "
        f"of {n} samples. Nothing is published until this run is resumed.\n\n"
        f"1. Open the review page: [{page_uri}]({page_uri})\n"
        f"2. Rate samples 1 to 5: a kept sample rated below {r.min_rating} is dropped (reason `human`); "
        "a rating does not bring back a dropped sample; unrated samples keep the filter's verdict.\n"
        "3. Press *export decisions*, then resume this run and paste the file's `ratings` object "
        'into `decisions` (`{"<sample id>": rating, ...}`; `{}` publishes the filter\'s verdicts).\n\n'
        f"Without an answer within {r.timeout_seconds} s the run fails and publishes nothing."
    )
    create_markdown_artifact(text, key=review_key(config), description=f"{config.name} {config.version}: review request")
    return text
