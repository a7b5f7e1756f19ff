"""``edgeglm bench``: latency against quality, and ``bench compare``."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgeglm.cli import _fail, app, err, out
from edgeglm.errors import EdgeGLMError, UsageError

if TYPE_CHECKING:
    from edgeglm.bench.report import BenchReport


@app.command(context_settings={"allow_interspersed_args": True})
def bench(
    models: Annotated[
        list[str] | None,
        typer.Argument(
            help="Models (GGUF, HF folder, repo id; default: the demo model), or: compare REPORT..."
        ),
    ] = None,
    quants: Annotated[
        str, typer.Option("--quants", help="Comma-separated quants for HF models.")
    ] = "Q8_0,Q4_K_M",
    backends: Annotated[
        str, typer.Option("--backends", help="Comma-separated backends.")
    ] = "llama.cpp",
    text: Annotated[
        Path | None, typer.Option("--text", help="Held-out text for quality (default: bundled).")
    ] = None,
    repeat: Annotated[
        int, typer.Option("--repeat", help="Timed runs per artifact (median reported).")
    ] = 3,
    threads: Annotated[int | None, typer.Option("--threads", "-t")] = None,
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
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Report path: writes .json, .csv, .md and .svg"),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the JSON report on stdout.")
    ] = False,
) -> None:
    """Measure latency against quality: speed, memory and KL divergence per artifact."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    args = models or []
    try:
        if args and args[0] == "compare":
            _bench_compare([Path(a) for a in args[1:]], as_json)
            return
        from edgeglm.bench.run import BenchRequest, main_table, run_bench
        from edgeglm.cli.run import check_output

        if output is not None:  # refused now, not after minutes of measuring
            for path in [output, *_report_paths(output)]:
                check_output(path)
        request = BenchRequest(
            models=tuple(args) or (None,),
            quants=tuple(q.strip() for q in quants.split(",") if q.strip()),
            backends=tuple(b.strip() for b in backends.split(",") if b.strip()),
            text=text,
            repeat=repeat,
            threads=threads,
            device=device,
            hardware=hardware,
        )

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

            report = run_bench(request, progress=progress)
    except EdgeGLMError as e:
        _fail(e)
    if not report.complete:
        err.print("[yellow]interrupted: the report holds the artifacts that finished[/]")
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


def _report_paths(output: Path) -> list[Path]:
    """The four files ``-o`` names: its stem with .json, .csv, .md and .svg."""
    stem = output.with_suffix("")
    return [stem.with_suffix(s) for s in (".json", ".csv", ".md", ".svg")]


def _write_report(report: BenchReport, output: Path) -> None:
    """All four report files, or none: each is written under a temporary name,
    and only when all are complete are they renamed into place."""
    from edgeglm.bench.plot import to_svg
    from edgeglm.fileio import atomic_output

    texts = [report.to_json(), report.to_csv(), report.to_markdown(), to_svg(report)]
    with ExitStack() as stack:
        for path, text in zip(_report_paths(output), texts, strict=True):
            # a failed write unwinds every open atomic_output: no file is renamed
            stack.enter_context(atomic_output(path)).write_text(text, encoding="utf-8")
    err.print(f"report: {output.with_suffix('')}.json (+ .csv .md .svg)")


def _bench_compare(paths: list[Path], as_json: bool) -> None:
    from edgeglm.bench.compare import compare, to_rich
    from edgeglm.bench.report import BenchReport

    if len(paths) < 1:
        raise UsageError("bench compare needs at least one report")
    reports = [BenchReport.load(p) for p in paths]
    result = compare(reports, [p.stem for p in paths])
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        out.print(to_rich(result))
