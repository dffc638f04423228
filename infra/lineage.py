"""Lineage: dataset version -> training run -> checkpoints -> evaluations, as Prefect events.

Every event names its subject as `resource` and what it came from as `related` resources
(Prefect's own lineage model: the event feed shows them, and filtering the feed by any
resource id lists every event that touches it). Prefect adds the emitting flow run itself;
the flow run upstream (the generate run a training run came from, the training run a
checkpoint came from) is added here from the id the triggering event carried.

    gen4gen.dataset.<name>                      a dataset (the train trigger matches it)
    gen4gen.dataset-version.<name>.<version>    one published version
    gen4gen.training-run.<run>                  a training run (tasks/training/train.py: run_id)
    gen4gen.checkpoint.<run>.<step>             a checkpoint (the evaluate trigger matches it)
    gen4gen.evaluation.<run>.<step>             the results of evaluating that checkpoint
"""

from __future__ import annotations

from typing import Any

from prefect.events import emit_event

PUBLISHED_EVENT = "dataset.published"
TRAINING_EVENT = "training.started"
LANDED_EVENT = "checkpoint.landed"
EVALUATED_EVENT = "evaluation.completed"


def resource(kind: str, *parts: Any, role: str | None = None, name: str | None = None, **labels: Any) -> dict:
    """A Prefect resource (or, with a role, a related resource) of ours."""
    res = {"prefect.resource.id": ".".join(["gen4gen", kind, *map(str, parts)]),
           "prefect.resource.name": name or " ".join(map(str, parts))}
    if role:
        res["prefect.resource.role"] = role
    res |= {f"gen4gen.{k}": str(v) for k, v in labels.items() if v is not None}
    return res


def dataset_version(name: str, version: str, role: str = "dataset-version", **labels: Any) -> dict:
    return resource("dataset-version", name, version, role=role, name=f"{name} {version}", **labels)


def training_run(run: str, role: str = "training-run") -> dict:
    return resource("training-run", run, role=role)


def checkpoint(run: str, step: int, role: str | None = None) -> dict:
    return resource("checkpoint", run, step, role=role, name=f"{run} step {step}")


def flow_run(run_id: str | None, role: str) -> list[dict]:
    """A flow run other than the emitting one (which Prefect adds itself), when known."""
    if not run_id or run_id in ("None", "null"):  # an event template renders a missing id so
        return []
    return [{"prefect.resource.id": f"prefect.flow-run.{run_id}", "prefect.resource.role": role}]


def current_run() -> tuple[str | None, str | None]:
    """(id, name) of the flow run this code runs in, or (None, None) outside one."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return None, None
    return str(ctx.flow_run.id), ctx.flow_run.name


def run_name(run_id: str) -> str | None:
    """The flow run's name as the UI shows it (`demo-v2-20261202-014252`), None when the
    API cannot say (an unknown id, no server): a label only."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            return client.read_flow_run(run_id).name
    except Exception:
        return None


def run_link(run_id: str | None, name: str | None = None) -> str:
    """Markdown for a flow run, labelled by its name (looked up when not given): a link
    into the UI when its address is known."""
    if not run_id or run_id in ("None", "null"):
        return "-"
    from prefect.settings import PREFECT_UI_URL

    label = name or run_name(run_id) or run_id
    base = PREFECT_UI_URL.value()
    return f"[{label}]({base}/runs/flow-run/{run_id})" if base else f"{label} (`{run_id}`)"


def announce_dataset(manifest, run=None) -> None:
    """`dataset.published` for a committed manifest (train/on-dataset listens for it)."""
    run_id, run_name = (str(run.id), run.name) if run is not None else current_run()
    emit_event(
        event=PUBLISHED_EVENT,
        resource=resource("dataset", manifest.dataset, name=manifest.dataset),
        related=[dataset_version(manifest.dataset, manifest.version, uri=manifest.uri,
                                 config=manifest.config_sha256[:12])],
        payload={
            "uri": manifest.uri,
            "version": manifest.version,
            "manifest": f"{manifest.uri}/manifest.json",
            "kept": manifest.kept,
            "planned": manifest.planned,
            "config_sha256": manifest.config_sha256,
            "flow_run": run_id,
            "flow_run_name": run_name,
        },
    )


def emit(event: str, subject: dict, related: list[dict], payload: dict) -> None:
    """An event of ours carrying the emitting run's id (the next run's `upstream`)."""
    run_id, run_name = current_run()
    emit_event(event=event, resource=subject, related=related,
               payload=payload | {"flow_run": run_id, "flow_run_name": run_name})


def publish_links(key: str, title: str, items: list[tuple[str, str]]) -> None:
    """A markdown artifact on the current run: where its inputs came from, what it made."""
    from prefect.artifacts import create_markdown_artifact

    text = f"## {title}\n\n" + "\n".join(f"- **{k}**: {v}" for k, v in items)
    create_markdown_artifact(text, key=key, description=title)
