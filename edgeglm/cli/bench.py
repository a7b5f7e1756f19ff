"""``edgeglm bench``: latency against quality, and ``bench compare``.

Ctrl-C ends a benchmark with exit 130. Rows that finished are kept: the table
and ``--json`` show them, marked partial, and ``-o report.json`` writes them
as ``report.partial.json`` (+ .csv .md .svg), never at the paths a complete
run would have written. Interrupted before any artifact finished (while
converting, checking or measuring the first), nothing is written.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from edgeglm.cli import Command, _fail, _sigterm_as_interrupt, app, err, out
from edgeglm.cli.hub import PullOpt, pull_if_missing
from edgeglm.errors import EdgeGLMError, ExitCode, UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from edgeglm.bench.report import BenchReport
    from edgeglm.bench.run import BenchRequest

PARTIAL = ".partial"  # the stem's mark on the files of an interrupted run


class _BenchCommand(Command):
    """``bench compare ...`` is its own command (own arguments, own --help)
    under ``bench``, whose first argument is otherwise a model."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any
    ) -> Any:
        if args[:1] == ["compare"]:
            cmd = typer.main.get_command(_compare_app)
            return cmd.make_context("bench compare", args[1:], parent=parent, **extra)
        return super().make_context(info_name, args, parent=parent, **extra)


@app.command(cls=_BenchCommand, context_settings={"allow_interspersed_args": True})
def bench(
    models: Annotated[
        list[str] | None,
        typer.Argument(
            help="Models: GGUF files, ONNX folders, Hugging Face folders or repo ids "
            "(default: the demo model)."
        ),
    ] = None,
    quants: Annotated[
        str | None,
        typer.Option(
            "--quants",
            help="Comma-separated quants to convert Hugging Face checkpoints to: GGUF ones "
            "(F32 ... Q4_K_M) run in llama.cpp, ONNX ones (fp32, fp16, int8, int4) in ONNX "
            "Runtime (default: Q8_0,Q4_K_M and int4). Refused for GGUF and ONNX inputs.",
        ),
    ] = None,
    backends: Annotated[
        str | None,
        typer.Option(
            "--backends",
            help="Comma-separated: llama.cpp, onnx (default: each model's own; for a "
            "checkpoint, the backends its --quants run in, else llama.cpp). A model the "
            "backends cannot run is refused.",
        ),
    ] = None,
    text: Annotated[
        Path | None, typer.Option("--text", help="Held-out text for quality (default: bundled).")
    ] = None,
    repeat: Annotated[
        int,
        typer.Option(
            "--repeat",
            help="Timed runs per artifact: the median and the interquartile range are "
            "reported (with 5 or more, one disturbed run moves neither quartile).",
        ),
    ] = 5,
    threads: Annotated[
        int | None,
        typer.Option("--threads", "-t", help="CPU threads (default: the plan's)."),
    ] = None,
    device: Annotated[
        str,
        typer.Option(
            "--device",
            help="auto (the plan's GPU layers and placement; ONNX: the plan's provider), cpu "
            "(nothing on a GPU) or gpu (every layer offloaded; ONNX: the GPU provider that "
            "works here). gpu is refused where the engine cannot reach a GPU.",
        ),
    ] = "auto",
    hardware: Annotated[
        Path | None,
        typer.Option(
            "--hardware",
            help="Plan the auto rows for this hardware profile (JSON, as doctor --json writes) "
            "instead of this machine; they are still measured here.",
        ),
    ] = None,
    rpc: Annotated[
        str | None,
        typer.Option(
            "--rpc",
            help="Spread the llama.cpp rows over these `edgeglm worker`s too: HOST:PORT,...",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            help="Report path: writes its .json, .csv, .md and .svg (.partial.* if interrupted).",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the JSON report on stdout.")
    ] = False,
    pull: PullOpt = False,
) -> None:
    """Measure latency against quality: speed, memory and KL divergence per artifact.

    edgeglm bench compare REPORT... puts reports from several machines side by
    side (edgeglm bench compare --help)."""
    from edgeglm.bench.run import BenchRequest, main_table, run_bench
    from edgeglm.cli.run import check_output

    _sigterm_as_interrupt()
    report = None
    try:
        if output is not None:  # refused now, not after minutes of measuring
            for path in [output, *_report_paths(output), *_report_paths(output, PARTIAL)]:
                check_output(path)
        if quants is not None and not _names(quants):
            raise UsageError("--quants names no quant")
        from edgeglm.rpc.endpoints import parse_endpoints

        request = BenchRequest(
            rpc=parse_endpoints(rpc) if rpc is not None else (),
            models=tuple(models or ()) or (None,),
            quants=_names(quants),
            backends=_names(backends),
            text=text,
            repeat=repeat,
            threads=threads,
            device=device,
            hardware=hardware,
        )
        pull_if_missing(request.models, pull)
        report = _measure(request, run_bench)
    except EdgeGLMError as e:
        _fail(e)
    except KeyboardInterrupt:  # before any row: nothing to show or write
        err.print("interrupted before any artifact was measured: no report written")
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    for w in report.warnings:
        err.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
    if not report.complete:
        err.print(
            f"[yellow]interrupted: {len(report.rows)} artifact(s) finished; the report is "
            "partial[/]"
        )
    if output is not None:
        try:
            _write_report(report, output)
        except EdgeGLMError as e:
            _fail(e)
    if as_json:
        print(report.to_json())
    else:
        if not out.is_terminal:
            out.width = max(out.width, 160)  # a report table, not a terminal layout
        out.print(main_table(report))
        out.print(
            "[dim]* on the Pareto front (no artifact is both faster and closer to the reference)[/]"
        )
    if not report.complete:
        raise typer.Exit(int(ExitCode.INTERRUPTED))


def _names(value: str | None) -> tuple[str, ...] | None:
    """A comma-separated flag as names (None: not given; given empty: no names)."""
    if value is None:
        return None
    return tuple(n.strip() for n in value.split(",") if n.strip())


def _measure(request: BenchRequest, run_bench: Callable[..., BenchReport]) -> BenchReport:
    """``run_bench`` with a transient bar on a terminal's stderr (conversions
    first, then one step per artifact); an interrupt before any row is re-raised."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as bar:
        task = bar.add_task("bench", total=1.0)

        def progress(label: str, fraction: float) -> None:
            bar.update(task, description=label, completed=fraction)

        def converting(what: str, i: int, n: int, done: int, total: int) -> None:
            bar.update(task, description=f"{what} ({i}/{n} tensors)", completed=done / total)

        report: BenchReport = run_bench(request, progress=progress, convert_progress=converting)
    if not report.complete and not report.rows:
        raise KeyboardInterrupt
    return report


def _report_paths(output: Path, mark: str = "") -> list[Path]:
    """The four files ``-o`` names: its stem (+ ``mark``) with .json, .csv, .md and .svg."""
    stem = output.with_suffix("")
    return [stem.with_name(stem.name + mark + s) for s in (".json", ".csv", ".md", ".svg")]


def _write_report(report: BenchReport, output: Path) -> None:
    """All four report files, or none: each is written under a temporary name,
    and only when all are complete are they renamed into place. A partial
    report goes to ``STEM.partial.*``."""
    from edgeglm.bench.plot import to_svg
    from edgeglm.fileio import atomic_output

    mark = "" if report.complete else PARTIAL
    texts = [report.to_json(), report.to_csv(), report.to_markdown(), to_svg(report)]
    paths = _report_paths(output, mark)
    with ExitStack() as stack:
        for path, text in zip(paths, texts, strict=True):
            # a failed write unwinds every open atomic_output: no file is renamed
            stack.enter_context(atomic_output(path)).write_text(text, encoding="utf-8")
    err.print(f"report: {paths[0]} (+ .csv .md .svg)", highlight=False)


_compare_app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@_compare_app.command(cls=Command)
def compare(
    reports: Annotated[
        list[Path],
        typer.Argument(
            metavar="REPORT",
            help="Report files (.json, as bench -o writes them), one per machine.",
        ),
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the comparison as JSON on stdout.")
    ] = False,
) -> None:
    """Compare benchmark reports from several machines, artifact by artifact.

    Rows are matched by artifact label. Each report gets its device, decode
    speed (median and interquartile range) and mean KL; decode speed after the
    first report is also given as a ratio to the first. Reports of every
    schema this EdgeGLM reads are accepted (1 to 4)."""
    from edgeglm.bench.compare import compare as compare_reports
    from edgeglm.bench.compare import to_rich
    from edgeglm.bench.report import BenchReport

    try:
        if not reports:
            raise UsageError("bench compare needs at least one report")
        loaded = [BenchReport.load(p) for p in reports]
        result = compare_reports(loaded, [p.stem for p in reports])
    except EdgeGLMError as e:
        _fail(e)
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        out.print(to_rich(result))
