"""Targets: ask for kept images, not attempts. A composition's `keep: N` is met in rounds.

Round 1 plans enough samples for N at the recipe's `expected_yield` (a target's composition
does not use `samples`); each later round plans only the shortfall, at the yield
measured so far, with a margin (so a round rarely falls a sample or two short and costs a
round of its own); rounds stop when N are kept or the budget (`max_samples`, default 4 x N)
is planned. A round plans the next sample indices, so sample ids (index-based, tasks/plan.py)
are the same whichever round plans them: the same recipe reproduces the same rounds and
samples, a rerun recomputes nothing, raising N only plans more indices, and lowering N
publishes the first N kept in sample order (the samples after the N-th kept are `unused`).

`tally` is where a composition's rounds meet: it reads every round's samples in index order,
drops near-duplicates (tasks/duplicates.py, the one place they are decided) and counts what
is kept, which is what the next round is sized by. Without a target a composition is one
round of `samples`, tallied the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prefect import task
from prefect.cache_policies import NO_CACHE

from gen4gen.infra.records import Composition, DatasetConfig, Record, Sample, SampleSet
from gen4gen.tasks.duplicates import drop_near_duplicates
from gen4gen.tasks.stage import Job, hand_on, take

STAGE = "tally"
BUDGET_FACTOR = 4  # default budget: 4 x the target, the paper's ~27% yield and a little over
MARGIN = 1.2  # a top-up round plans 20% over the shortfall at the measured yield
MIN_YIELD = 0.05  # a yield measured at 0 is taken as this (one kept in 20), not as infinity


@dataclass(frozen=True)
class Target:
    """What a composition asks for: `keep` kept images (None: `samples` attempts, one round)
    within `budget` planned samples, the first round `first` samples."""

    keep: int | None
    budget: int
    first: int


def target(config: DatasetConfig, comp: Composition) -> Target:
    keep = comp.keep if comp.keep is not None else config.keep
    if keep is None:
        return Target(None, comp.samples, comp.samples)
    budget = comp.max_samples or config.max_samples or BUDGET_FACTOR * keep
    # Not `samples`: a recipe passes through model_dump/validate (the CLI's overrides), after
    # which every field looks given; the recipe's expected_yield is the one knob.
    first = math.ceil(keep / config.expected_yield)
    return Target(keep, budget, max(1, min(first, budget)))


def next_round(goal: Target, attempts: int, kept: int) -> int:
    """How many samples the next round plans (0: done, or out of budget)."""
    if goal.keep is None or kept >= goal.keep or attempts >= goal.budget:
        return 0
    measured = max(kept / attempts if attempts else 0.0, MIN_YIELD)
    wanted = math.ceil((goal.keep - kept) / measured * MARGIN)
    return max(1, min(wanted, goal.budget - attempts))


class Tally(Record):
    """A composition after a round: all its rounds' samples (near-duplicates dropped) and counts."""

    samples: SampleSet
    attempts: int
    kept: int
    rounds: int


def tally_composition(out: str, sets: list[SampleSet], job: Job) -> Tally:
    """Every round's samples of one composition in index order, near-duplicates dropped."""
    samples: list[Sample] = sorted((s for given in sets for s in take(out, given)),
                                   key=lambda s: s.plan.index)
    seconds: dict[str, float] = {}
    for given in sets:
        for k, v in given.seconds.items():
            seconds[k] = seconds.get(k, 0.0) + v
    drop_near_duplicates(samples, out, job.config.near_duplicates)
    handed = hand_on(out, STAGE, samples, seconds)
    return Tally(samples=handed, attempts=len(samples), kept=sum(s.status == "kept" for s in samples),
                 rounds=len(sets))


def published_prefix(samples: list[Sample], keep: int | None) -> tuple[list[Sample], int]:
    """The samples a target publishes: those in index order up to its `keep`-th kept one,
    and how many kept samples come after it (made, not published)."""
    ordered = sorted(samples, key=lambda s: s.plan.index)
    if keep is None:
        return ordered, 0
    kept = 0
    for i, s in enumerate(ordered):
        kept += s.status == "kept"
        if kept == keep:
            return ordered[: i + 1], sum(t.status == "kept" for t in ordered[i + 1 :])
    return ordered, 0


@task(name="tally", task_run_name="tally[{job.composition.id}]", cache_policy=NO_CACHE, persist_result=False)
def tally_task(sets: list[SampleSet], job: Job) -> Tally:
    return tally_composition(job.out, sets, job)
