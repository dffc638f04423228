"""What a run shows in the Prefect UI: progress, a per-composition table, a review request,
the dataset's history across runs.

Called from the generate flow with one line each; the numbers come from the records the
stages already produce (CompositionStats), so nothing here touches pixels or storage.
"""

from __future__ import annotations

import contextlib
import re
import time
from typing import Iterable, Iterator, Mapping

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import PrefectFuture, as_completed

from gen4gen.infra import progress
from gen4gen.infra.records import CompositionStats, DatasetConfig, Manifest, SampleSet


def artifact_key(*parts: str) -> str:
    """A valid artifact key (lowercase letters, digits, dashes) from ids that may hold '.' or '_'."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", "-".join(parts).lower())).strip("-")


def progress_key(config: DatasetConfig) -> str:
    return artifact_key(config.name, config.version, "progress")


def table_key(config: DatasetConfig) -> str:
    return artifact_key(config.name, config.version, "compositions")


class RunProgress:
    """The run's progress artifact: the share of stage tasks done, and per stage how many
    compositions (concepts, for segment) are done or failed, while the run works; at the
    end its final state (completed with the counts, or failed with the error).

    The flow hands over the futures of each stage as it submits them (`watch`) and waits
    for the collected compositions through `wait`, which advances the artifact as any
    watched task finishes. Updates are throttled: a large run does not flood the API.
    """

    EVERY_SECONDS = 1.0

    def __init__(self, config: DatasetConfig, stages: Iterable[str]):
        self.config = config
        self.futures: dict[str, list[PrefectFuture]] = {stage: [] for stage in stages}
        self.started = time.perf_counter()
        self.last = 0.0
        self.settled: set = set()  # task runs whose samples the CLI's bar was told of (once each)
        self.artifact = create_progress_artifact(
            0.0, key=progress_key(config), description=f"{config.name} {config.version}: starting"
        )

    def watch(self, stage: str, futures: Iterable[PrefectFuture] | Mapping[str, PrefectFuture]) -> None:
        values = futures.values() if isinstance(futures, Mapping) else futures
        self.futures.setdefault(stage, []).extend(values)

    def counts(self) -> dict[str, tuple[int, int, int]]:
        """stage -> (done, failed, total) over the futures watched so far."""
        out = {}
        for stage, futures in self.futures.items():
            states = [f.state for f in futures]
            out[stage] = (sum(s.is_completed() for s in states), sum(s.is_failed() or s.is_crashed() for s in states),
                          len(states))
        return out

    def text(self, head: str) -> str:
        parts = [f"{stage} {done}/{total}" + (f" ({failed} failed)" if failed else "")
                 for stage, (done, failed, total) in self.counts().items() if total]
        return f"{self.config.name} {self.config.version}: {head}. " + ", ".join(parts)

    def update(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self.last < self.EVERY_SECONDS:
            return
        self.last = now
        counts = self.counts().values()
        total = sum(t for _, _, t in counts) or 1
        finished = sum(d + f for d, f, _ in counts)
        update_progress_artifact(self.artifact, round(100.0 * finished / total, 1), self.text("running"))

    def wait(self, futures: list[PrefectFuture], stage: str = "collect") -> list:
        """Wait for `futures` (watched as `stage`), advancing the artifact as every watched
        task finishes; the results in the given order (a failed one raises, as
        `[f.result() for f in futures]` would)."""
        self.watch(stage, futures)
        every = [f for fs in self.futures.values() for f in fs]
        for done in as_completed(every):
            # The final state from the future itself: a Dask future's `state` is otherwise read
            # from the API, where it lands a moment later, and a finished task looked unfinished.
            done.wait()
            if done.state.is_completed():
                handed = done.result()
                if isinstance(handed, SampleSet) and done.task_run_id not in self.settled:
                    # A stage task: the CLI's bar, from any runner; once, though every round's
                    # wait (tasks/targets.py) sees the earlier rounds' tasks again.
                    self.settled.add(done.task_run_id)
                    progress.settle(handed.composition, handed.stage, handed.samples)
            self.update()
        self.update(force=True)
        if not all(f.state.is_completed() for f in futures):
            # A failed stage leaves the tasks after it NotReady (PENDING), whose result() says
            # only that; the cause (a full disk, ...) is the failed task's own exception.
            for f in every:
                if f.state.is_failed() or f.state.is_crashed():
                    f.result()
        return [f.result() for f in futures]

    def finish(self, manifest: Manifest) -> None:
        seconds = time.perf_counter() - self.started
        update_progress_artifact(self.artifact, 100.0, self.text(
            f"completed in {seconds:.0f} s, {manifest.kept} kept, {manifest.dropped} dropped, "
            f"{manifest.failed} failed of {manifest.planned}"))

    def fail(self, err: BaseException) -> None:
        counts = self.counts().values()
        total = sum(t for _, _, t in counts) or 1
        update_progress_artifact(self.artifact, round(100.0 * sum(d + f for d, f, _ in counts) / total, 1),
                                 self.text(f"FAILED ({type(err).__name__}: {str(err)[:300]})"))


@contextlib.contextmanager
def run_progress(config: DatasetConfig, stages: Iterable[str]) -> Iterator[RunProgress]:
    """A RunProgress whose artifact ends as failed, with the error, when the block raises."""
    tracker = RunProgress(config, stages)
    try:
        yield tracker
    except BaseException as err:
        try:
            tracker.fail(err)
        except Exception:  # the artifact is a view: the run's own error is what matters
            pass
        raise


def task_seconds(futures: Iterable[PrefectFuture], timeout: float = 10.0) -> dict[str, float]:
    """Task-run name -> its run time in seconds as Prefect recorded it.

    Task-run states reach the API as events, a moment after the task finished here: poll
    until every finished task's run time is there, or `timeout`.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterId

    ids = [f.task_run_id for f in futures]
    found: dict = {}
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            for start in range(0, len(ids), 200):
                batch = ids[start:start + 200]
                for tr in client.read_task_runs(task_run_filter=TaskRunFilter(id=TaskRunFilterId(any_=batch)),
                                                limit=len(batch)):
                    if tr.state is not None and tr.state.is_final():
                        found[tr.id] = tr
            if len(found) >= len(ids) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
    seconds: dict[str, float] = {}
    for tr in found.values():  # one name per composition and stage, a run per round: summed
        seconds[tr.name] = seconds.get(tr.name, 0.0) + tr.total_run_time.total_seconds()
    return seconds


def composition_rows(stats: Iterable[CompositionStats], stages: Iterable[str] | None = None,
                     timings: Mapping[str, float] | None = None) -> list[dict]:
    """One row per composition and a total row; every row has the same columns (a table
    needs them). Stage columns in the order the stages run (`stages`); a stage's seconds
    are its task run's time (`timings`, task-run name -> seconds: `repaint[cat-mug]`), else
    the sum of its samples' own seconds. Whole-dataset stages (segment, publish: named
    without a composition) fill only the total row."""
    stats = list(stats)
    timings = dict(timings or {})
    reasons = sorted({code for st in stats for code in st.reasons})
    if stages is None:
        stages = sorted({stage for st in stats for stage in st.seconds})
    stages = list(stages)
    per_dataset = {stage: _dataset_seconds(stage, timings) for stage in stages}

    def seconds(st: CompositionStats, stage: str) -> float | None:
        if f"{stage}[{st.composition}]" in timings:
            return round(timings[f"{stage}[{st.composition}]"], 2)
        if stage in st.seconds:
            return round(st.seconds[stage], 2)
        return None if per_dataset[stage] is not None else 0.0

    rows = [
        {
            "composition": st.composition,
            "planned": st.tried,  # every round's samples (attempts)
            "kept": st.kept,
            "target": st.target,  # kept images asked for (tasks/targets.py); none: no target
            "rounds": st.rounds,
            "yield": st.yield_rate,
            "out of budget": st.out_of_budget,
            "dropped": st.dropped,
            "failed": st.failed,
            **{f"reason {code}": st.reasons.get(code, 0) for code in reasons},
            **{f"{stage} s": seconds(st, stage) for stage in stages},
        }
        for st in stats
    ]
    total: dict = {"composition": "total"}
    for col in rows[0] if rows else []:
        if col == "composition":
            continue
        values = [r[col] for r in rows if r[col] is not None]
        total[col] = round(sum(values), 2) if values else None
    if rows:  # not sums: the dataset's yield, and whether any composition ran out of budget
        made = sum(st.kept + st.unused for st in stats)
        total["yield"] = round(made / max(1, sum(st.tried for st in stats)), 3)
        total["out of budget"] = any(st.out_of_budget for st in stats)
        total["rounds"] = max(st.rounds for st in stats)
    for stage, value in per_dataset.items():
        if value is not None:
            total[f"{stage} s"] = round(value, 2)
    return rows + [total]


def _dataset_seconds(stage: str, timings: Mapping[str, float]) -> float | None:
    """The stage's seconds when it is not per composition: `publish`, or `segment[<concept>]`
    summed (a concept is shared by compositions); None for a per-composition stage."""
    if stage in timings:
        return timings[stage]
    if stage == "segment":
        found = [t for name, t in timings.items() if name.startswith("segment[")]
        return sum(found) if found else None
    return None


def publish_table(config: DatasetConfig, manifest: Manifest, stages: Iterable[str] | None = None,
                  timings: Mapping[str, float] | None = None) -> None:
    create_table_artifact(
        composition_rows(manifest.compositions, stages, timings),
        key=table_key(config),
        description=(
            f"{manifest.dataset} {manifest.version}: {manifest.kept} kept of {manifest.planned} at {manifest.uri}. "
            "Seconds: each stage's task-run time (segment: all concepts; publish: the dataset). "
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


# --------------------------------------------------------------------------- history

HISTORY_ROWS = 200  # newest runs kept in a history table; an artifact must stay small


def history_key(config: DatasetConfig) -> str:
    return artifact_key(config.name, "history")


def latest_table(key: str) -> list[dict]:
    """The rows of the newest table artifact with this key ([] when there is none).

    An artifact key keeps every version Prefect was sent: the newest one is the history so
    far, so the history lives where it is shown, with no file of its own to keep.
    """
    import json

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                      sort=ArtifactSort.CREATED_DESC, limit=1)
    if not found:
        return []
    data = found[0].data
    rows = json.loads(data) if isinstance(data, str) else data
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def history_row(manifest: Manifest, run: str) -> dict:
    attempts = manifest.attempts if manifest.attempts is not None else manifest.planned
    reasons: dict[str, int] = {}
    for st in manifest.compositions:
        for code, n in st.reasons.items():
            reasons[code] = reasons.get(code, 0) + n
    return {
        "run": run,
        "created": manifest.created.isoformat(timespec="seconds"),
        "version": manifest.version,
        "planned": attempts,  # every round's samples
        "kept": manifest.kept,
        "keep rate": round(manifest.kept / attempts, 3) if attempts else 0.0,
        "target": sum(st.target for st in manifest.compositions if st.target is not None) or None,
        "rounds": max((st.rounds for st in manifest.compositions), default=0),
        "short": ", ".join(sorted(manifest.short)) or None,
        "dropped": manifest.dropped,
        "failed": manifest.failed,
        **{f"reason {code}": n for code, n in sorted(reasons.items())},
        "config": manifest.config_sha256[:12],
        "uri": manifest.uri,
    }


def same_columns(rows: list[dict]) -> list[dict]:
    """Rows with the union of their columns (a reason new in one run is 0 in the others),
    the drop reasons together after `failed` (sorted), before the recipe hash and the URI:
    a reason first seen in a later run is not pushed past the table's right edge."""
    columns: list[str] = []
    for r in rows:
        columns += [c for c in r if c not in columns]
    reasons = sorted(c for c in columns if c.startswith("reason "))
    rest = [c for c in columns if not c.startswith("reason ")]
    at = rest.index("failed") + 1 if "failed" in rest else len(rest)
    columns = [*rest[:at], *reasons, *rest[at:]]
    return [{c: r.get(c, 0 if c.startswith("reason ") else None) for c in columns} for r in rows]


def publish_history(config: DatasetConfig, manifest: Manifest, run: str) -> list[dict]:
    """Add this run to the dataset's history table (`{name}-history`: keep rate and drop
    reasons per run, oldest first); returns the rows."""
    earlier = [r for r in latest_table(history_key(config)) if r.get("run") != run]
    rows = same_columns([*earlier, history_row(manifest, run)])[-HISTORY_ROWS:]
    create_table_artifact(rows, key=history_key(config),
                          description=f"{config.name}: keep rate and drop reasons of every published run, oldest first")
    return rows
