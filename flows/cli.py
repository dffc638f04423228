"""The `gen4gen` command.

    gen4gen generate CONFIG [--out URI] [--workers N] [--samples N] [--no-cache] [--verbose]
    gen4gen report DATASET_URI [--out report.html] [--compare OTHER_URI] [--decisions FILE]
    gen4gen verify DATASET_URI
    gen4gen serve [--state DIR] [--port 4200] [--s3-port 9000] [--pool NAME] [--stop]

Shows a progress bar while the flow runs and a summary table at the end. The exit code is
0 when the run completed (dropped or failed samples are results, not errors), 1 when the
run itself failed, 2 for an unusable recipe or command line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _quiet_prefect(verbose: bool) -> None:
    # Set before Prefect is imported: its settings are read once.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # Without a server configured, Prefect starts a temporary one; on a busy small machine
    # that can take longer than its 20 s default.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gen4gen", description="The Gen4Gen data factory")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="generate and publish a dataset from a recipe")
    gen.add_argument("config", help="dataset recipe (YAML path or URI)")
    gen.add_argument("--out", help="dataset URI (default: the recipe's run.out)")
    gen.add_argument("--workers", type=int, help="compositions processed side by side")
    gen.add_argument("--samples", type=int, help="samples per composition (a quick preview)")
    gen.add_argument("--no-cache", action="store_true", help="recompute every stage")
    gen.add_argument("-v", "--verbose", action="store_true", help="show Prefect's logs")
    rep = sub.add_parser("report", help="write a self-contained HTML report of a published dataset")
    rep.add_argument("dataset", help="dataset URI (a folder, file:// or s3://)")
    rep.add_argument("--out", default="report.html", help="where the page goes (default: report.html)")
    rep.add_argument("--compare", metavar="OTHER_URI", help="an earlier version: show what changed")
    rep.add_argument("--decisions", metavar="FILE", help="human ratings (JSON or CSV, sample id -> 1..5)")
    rep.add_argument("-v", "--verbose", action="store_true", help="show Prefect's logs")
    ver = sub.add_parser("verify", help="check a published dataset against its manifest")
    ver.add_argument("dataset", help="dataset URI (a folder, file:// or s3://)")
    srv = sub.add_parser("serve", help="a local stack: Prefect server, S3 server, work pool and worker (Ctrl-C stops it)")
    srv.add_argument("--state", default=".gen4gen/serve", help="folder for the database, logs and serve.json")
    srv.add_argument("--port", type=int, default=4200, help="Prefect server port on 127.0.0.1")
    srv.add_argument("--s3-port", type=int, default=9000, help="S3-API server port on 127.0.0.1")
    srv.add_argument("--pool", default="gen4gen-cpu", help="process work pool to create and serve")
    srv.add_argument("--stop", action="store_true", help="stop the stack running with this --state")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "verify":
        return _verify(args)
    _quiet_prefect(args.verbose)
    if args.command == "generate":
        return _generate(args)
    if args.command == "report":
        return _report(args)
    return 2


def _serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    from infra import serve

    state = Path(args.state).resolve()
    if args.stop:
        return serve.stop(state)
    return serve.serve(state, args.port, args.s3_port, args.pool, out=lambda line: print(line, flush=True))


def _verify(args: argparse.Namespace) -> int:
    """Exit 0 when every listed file is there with its hash and the counts agree, else 1."""
    from tasks.verify import problems

    found = problems(args.dataset)
    for line in found:
        print(f"problem: {line}", file=sys.stderr)
    print(f"{args.dataset}: {'whole' if not found else f'{len(found)} problem(s)'}")
    return 1 if found else 0


def _report(args: argparse.Namespace) -> int:
    """Exit 0 with the page written, 2 when a dataset or the decisions file cannot be used."""
    from infra.errors import BadInput
    from infra.storage import resolve, write_bytes
    from tasks.report import DecisionsError, build_report, read_decisions

    try:
        ratings = read_decisions(args.decisions) if args.decisions else None
        report = build_report(args.dataset, compare_uri=args.compare, ratings=ratings)
    except (BadInput, DecisionsError, ValueError) as err:  # pydantic's ValidationError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    data = report.html.encode()
    write_bytes(resolve(args.out), data)
    if report.agreement is not None:
        print("\n".join(report.agreement.lines()))
    if report.changes is not None:
        c = report.changes
        print(f"since {c.old_label}: {len(c.added)} samples added, {len(c.removed)} removed, "
              f"{len(c.verdict_changed)} verdicts changed")
    print(f"report: {report.samples} samples, {len(data) / 1e6:.2f} MB", file=sys.stderr)
    print(resolve(args.out))
    return 0


def _generate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from infra.config import ConfigError, load_config

    # Off a terminal (CI, pipes), keep lines whole: a path must stay greppable.
    console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
    try:
        config = load_config(args.config, args.out)
        run = config.run.model_copy(
            update={k: v for k, v in (("workers", args.workers), ("cache", False if args.no_cache else None)) if v is not None}
        )
        config = config.model_copy(update={"run": run})
        if args.samples is not None:
            config = config.model_validate(
                config.model_dump() | {"compositions": [c.model_dump() | {"samples": args.samples} for c in config.compositions]}
            )
        from flows.generate import check_backends

        check_backends(config)
        if config.review.mode == "file":  # an unusable decisions file is a recipe error (exit 2), found before any work
            from tasks.report import read_decisions

            read_decisions(config.review.decisions)
    except (ConfigError, ValueError) as err:
        console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
        return 2

    from flows.generate import run_generate
    from infra import progress
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    stages = ("composite", "repaint", "caption", "filter")
    total = sum(c.samples for c in config.compositions) * len(stages)
    start = time.perf_counter()
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=False,
    ) as bar:
        job = bar.add_task(f"{config.name}: samples x stages", total=total)
        stop = progress.listen(lambda comp, stage, n: bar.advance(job, n) if stage in stages else None)
        try:
            manifest = run_generate(config, config.out)
        except Exception as err:  # the run failed: say why, exit non-zero
            console.print(f"[red]run failed:[/red] {type(err).__name__}: {err}", highlight=False, soft_wrap=True)
            return 1
        finally:
            stop()
    _summary(console, manifest, time.perf_counter() - start)
    print(manifest.uri)
    return 0


def _summary(console, manifest, seconds: float) -> None:
    from rich.table import Table

    table = Table(title=f"{manifest.dataset} {manifest.version}: {manifest.kept} kept of {manifest.planned}")
    for col in ("composition", "planned", "kept", "dropped", "failed", "reasons", "seconds"):
        table.add_column(col, justify="right" if col not in ("composition", "reasons") else "left")
    for st in manifest.compositions:
        reasons = ", ".join(f"{k} {v}" for k, v in st.reasons.items()) or "-"
        table.add_row(
            st.composition, str(st.planned), str(st.kept), str(st.dropped), str(st.failed), reasons,
            f"{sum(st.seconds.values()):.1f}",
        )
    console.print(table)
    for photo, why in manifest.unusable_photos.items():
        console.print(f"[yellow]unusable photo[/yellow] {why}", highlight=False)
    console.print(
        f"wall time {seconds:.1f} s. Dataset: {manifest.uri}\n"
        f"  load it: datasets.load_dataset('imagefolder', data_dir='{manifest.uri.removeprefix('file://')}')",
        highlight=False,
    )


if __name__ == "__main__":
    sys.exit(main())
