"""Review: people's ratings (1 to 5) have the last word over the filter's "kept" samples.

The paper kept only the images people rated 4 or 5; `min_rating` (ReviewConfig) is that
threshold. The rule goes one way only: a rating can drop a sample, never bring one back.

- kept, rated below min_rating: dropped with Reason(code="human", stage="review",
  detail="rated 2 < 4");
- kept, rated min_rating or more: stays kept;
- dropped or failed before review: stays as it is, whatever the rating. The rule filter's
  reasons are measured facts (an object 60% hidden, a caption without a token) that a
  rating of the whole image does not undo, and a failed sample may have no image at all.
  So the people's keep and the filter's keep must both hold for a sample to be published;
- unrated: keeps its automatic verdict (a reviewer may rate only the samples they looked at).

Every rating is recorded on its sample (`measures["review.rating"]`), so the published
samples.jsonl shows where people and the filter disagreed (also counted by
`gen4gen report --decisions`). Ratings naming no sample of the run (a decisions file from
another version or recipe) are listed by `unknown_ids`, which the flow logs as a warning.

The functions are pure; the Prefect side (the @task wrapper and the interactive pause) is
at the bottom.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Iterable, Mapping

from prefect import task
from prefect.input import RunInput
from pydantic import Field

from gen4gen.infra import artifacts
from prefect.cache_policies import NO_CACHE
from gen4gen.infra.storage import join, resolve, write_bytes
from gen4gen.infra.records import DatasetConfig, Sample, SampleSet
from gen4gen.tasks.views.report import HUMAN_KEEP_RATING, build_review_page
from gen4gen.tasks.stage import hand_on, take

STAGE = "review"
REASON = "human"
RATING = "review.rating"  # the measure that records a sample's rating
PAGE = ".review/report.html"  # the interactive review page, under the dataset URI
POLL_SECONDS = 2  # how often a paused run asks the API whether it was resumed


def _check_rating(sample_id: str, rating: object) -> int:
    if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5:
        raise ValueError(f"decisions: rating {rating!r} for sample {sample_id!r} is not a whole number 1 to 5")
    return rating


def apply_decisions(
    samples: list[Sample], decisions: Mapping[str, int], min_rating: int = HUMAN_KEEP_RATING
) -> list[Sample]:
    """Copies of the samples with the people's ratings applied (rule: the module docstring)."""
    if not 1 <= min_rating <= 5:
        raise ValueError(f"min_rating: {min_rating!r} is not 1 to 5")
    # Copies: in a thread-pool run the inputs are the filter task's results.
    reviewed = [s.model_copy(deep=True) for s in samples]
    for sample in reviewed:
        if sample.id not in decisions:
            continue
        rating = _check_rating(sample.id, decisions[sample.id])
        sample.measures[RATING] = float(rating)
        if sample.status == "kept" and rating < min_rating:
            sample.drop(REASON, STAGE, f"rated {rating} < {min_rating}")
    return reviewed


def decisions_for(samples: Iterable[Sample], decisions: Mapping[str, int]) -> dict[str, int]:
    """The decisions about these samples only, in a stable order.

    Each composition's review task gets only its own ratings, so its cache key changes only
    when a rating of one of its samples changes.
    """
    ids = {s.id for s in samples}
    return {k: decisions[k] for k in sorted(decisions) if k in ids}


def unknown_ids(samples: Iterable[Sample], decisions: Mapping[str, int]) -> list[str]:
    """Rated ids that name no sample of the run: reported, never silently ignored."""
    ids = {s.id for s in samples}
    return sorted(k for k in decisions if k not in ids)


def summary(reviewed: list[Sample], unknown: list[str]) -> str:
    """One line for the log: how many samples were rated and how many people dropped."""
    rated = sum(RATING in s.measures for s in reviewed)
    dropped = sum(any(r.code == REASON for r in s.reasons) for s in reviewed)
    line = f"review: {rated} samples rated, {dropped} kept samples dropped by people"
    if unknown:
        line += f"; {len(unknown)} rated ids name no sample of this run (ignored): {', '.join(unknown[:5])}"
        line += " ..." if len(unknown) > 5 else ""
    return line


# --------------------------------------------------------------------------- Prefect side


class ReviewInput(RunInput):
    """What a reviewer sends to resume the run: sample id -> rating 1..5.

    The `ratings` object of the review page's "export decisions" file fits as is.
    """

    decisions: dict[str, Annotated[int, Field(ge=1, le=5)]] = Field(default_factory=dict)


def ask_for_decisions(config: DatasetConfig, out: str, samples: list[Sample]) -> dict[str, int]:
    """Write the review page, show where it is, and pause the flow run until people answer.

    Raises prefect's FlowPauseTimeout after `review.timeout_seconds` without an answer: the
    run fails and nothing is published (an unreviewed dataset was not asked for).
    """
    from prefect.flow_runs import pause_flow_run

    page_uri = join(resolve(out), PAGE)
    # Source photos only from the recipe: the page never reads a photo because a record names it.
    recipe_photos = frozenset(p for c in config.concepts for p in c.photos)
    page = build_review_page(config.name, config.version, out, samples, config.review.min_rating, photos=recipe_photos)
    write_bytes(page_uri, page.encode())
    counts = Counter(s.status for s in samples)
    text = artifacts.review_request(config, page_uri, counts)
    # The description is shown above the form in the UI: it names the page's location.
    form = ReviewInput.with_initial_data(description=text)
    answer = pause_flow_run(
        wait_for_input=form, timeout=config.review.timeout_seconds, poll_interval=POLL_SECONDS
    )
    return dict(answer.decisions)


@task(name="review", task_run_name="review[{samples.composition}]", cache_policy=NO_CACHE, persist_result=False)
def review_task(samples: SampleSet, out: str, decisions: dict[str, int], min_rating: int) -> SampleSet:
    given = take(out, samples)
    return hand_on(out, STAGE, apply_decisions(given, decisions_for(given, decisions), min_rating), samples.seconds)
