"""The ``edgeglm`` command. Only this module prints and exits: libraries raise
``EdgeGLMError`` subclasses, mapped here to documented exit codes. Data goes
to stdout, progress and diagnostics to stderr."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from edgeglm import __version__
from edgeglm.errors import EdgeGLMError, ExitCode, UsageError

app = typer.Typer(
    name="edgeglm",
    help="Convert, plan and run GLM-family models on local hardware.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def _fail(e: EdgeGLMError) -> NoReturn:
    err.print(f"[bold red]error:[/] {e}", highlight=False)
    raise typer.Exit(int(e.exit_code))


def _sigterm_as_interrupt() -> None:
    """SIGTERM unwinds like Ctrl-C, so temp files are removed on the way out."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


@app.command()
def convert(
    src: Annotated[
        str, typer.Argument(help="Hugging Face model folder, or a repo id in the local HF cache.")
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output .gguf path.")],
    quant: Annotated[
        str,
        typer.Option(
            "--quant",
            "-q",
            help="llama.cpp type: F32, F16, BF16, Q8_0, Q6_K, Q5_K_M, Q4_K_M, IQ4_XS, Q2_K, ...",
        ),
    ] = "Q4_K_M",
    imatrix: Annotated[
        Path | None,
        typer.Option("--imatrix", help="llama.cpp imatrix file (.gguf or legacy .dat)."),
    ] = None,
    calibrate: Annotated[
        Path | None,
        typer.Option(
            "--calibrate", help="Text file to compute an importance matrix on (runs the model)."
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option("--threads", "-t", help="Quantization threads (default: all usable cores)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON summary on stdout.")
    ] = False,
) -> None:
    """Convert a Hugging Face GLM checkpoint to GGUF in one pass."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from edgeglm.checkpoint.hf import resolve_checkpoint
    from edgeglm.converters.gguf.convert import convert as run_convert
    from edgeglm.converters.gguf.imatrix import read_imatrix

    _sigterm_as_interrupt()
    try:
        if imatrix is not None and calibrate is not None:
            raise UsageError("give --imatrix or --calibrate, not both")
        im = read_imatrix(imatrix) if imatrix is not None else None
        if calibrate is not None:
            from edgeglm.converters.gguf.calibrate import calibrate as run_calibration

            err.print(f"calibrating on {calibrate} …")
            im = run_calibration(resolve_checkpoint(src), calibrate)
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TextColumn("{task.fields[tensors]}"),
            TimeRemainingColumn(),
            console=err,
            transient=True,
            disable=not err.is_terminal,
        ) as bar:
            task = bar.add_task(f"{quant.upper()}", total=None, tensors="")

            def progress(name: str, i: int, n: int, done: int, total: int) -> None:
                bar.update(task, completed=done, total=total, tensors=f"{i}/{n} tensors")

            result = run_convert(src, output, quant, imatrix=im, threads=threads, progress=progress)
    except EdgeGLMError as e:
        _fail(e)
    for w in result.warnings:
        err.print(f"[yellow]warning:[/] {w}", highlight=False)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        types = ", ".join(f"{k}×{v}" for k, v in result.tensor_types.items())
        out.print(
            f"wrote {result.output} ({result.bytes / 2**20:.1f} MiB, "
            f"{result.bits_per_weight:.2f} bpw, {result.parameters / 1e6:.1f} M params) "
            f"in {result.seconds:.1f} s\n  tensors: {types}\n  sha256: {result.sha256}",
            highlight=False,
        )


@app.command()
def run(
    model: Annotated[
        str | None,
        typer.Argument(
            help="GGUF file, ONNX folder, HF folder or cached repo id (default: the demo model)."
        ),
    ] = None,
    prompt: Annotated[
        str, typer.Option("-p", "--prompt", help="The user message (or raw text with --raw).")
    ] = ...,  # type: ignore[assignment]
    n: Annotated[int, typer.Option("-n", "--max-tokens", help="Maximum new tokens.")] = 256,
    backend: Annotated[str, typer.Option("--backend", help="auto, llama.cpp or onnx.")] = "auto",
    system: Annotated[str | None, typer.Option("--system", help="System prompt.")] = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="Continue the text as is, without the chat template.")
    ] = False,
    temperature: Annotated[float, typer.Option("--temp", help="0 = greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option("--top-p")] = 1.0,
    top_k: Annotated[int, typer.Option("--top-k")] = 0,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    ctx: Annotated[int, typer.Option("--ctx", help="Context size in tokens.")] = 2048,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print the text and timings as JSON instead of streaming."),
    ] = False,
) -> None:
    """Generate a reply, streaming tokens to stdout."""
    from edgeglm.backends.base import SamplingParams
    from edgeglm.chat import split_thinking
    from edgeglm.runtime import chat, generate_text, open_backend

    params = SamplingParams(
        max_tokens=n, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed
    )
    try:
        m = open_backend(model, backend=backend, n_ctx=ctx)
        try:
            if raw:
                stream = generate_text(m, prompt, params)
            else:
                messages = ([{"role": "system", "content": system}] if system else []) + [
                    {"role": "user", "content": prompt}
                ]
                stream = chat(m, messages, params)
            while True:
                try:
                    piece = next(stream)
                except StopIteration as stop:
                    result = stop.value
                    break
                if not as_json:
                    sys.stdout.write(piece.text)
                    sys.stdout.flush()
        finally:
            m.close()
    except EdgeGLMError as e:
        _fail(e)
    t = result.timings
    if as_json:
        reply = split_thinking(result.text)
        print(
            json.dumps(
                {
                    "model": model or "demo",
                    "backend": m.name,
                    "device": m.capabilities.device,
                    "text": result.text,
                    "content": reply.content,
                    "reasoning": reply.reasoning,
                    "finish_reason": result.finish_reason,
                    "timings": {
                        "prompt_tokens": t.prompt_tokens,
                        "completion_tokens": t.completion_tokens,
                        "time_to_first_token_s": round(t.time_to_first_token, 4),
                        "prefill_tokens_per_s": round(t.prefill_tokens_per_second, 2),
                        "decode_tokens_per_s": round(t.decode_tokens_per_second, 2),
                    },
                },
                indent=2,
                ensure_ascii=False,
            )
        )
    else:
        sys.stdout.write("\n")
        err.print(
            f"[dim]{t.prompt_tokens} prompt tokens, {t.completion_tokens} generated; "
            f"first token {t.time_to_first_token * 1000:.0f} ms, "
            f"{t.decode_tokens_per_second:.1f} tok/s decode ({m.name}, {m.capabilities.device})[/]"
        )


@app.command()
def score(
    model: Annotated[
        str | None, typer.Argument(help="Model reference (default: the demo model).")
    ] = None,
    text: Annotated[Path, typer.Option("--text", help="UTF-8 text file to score.")] = ...,  # type: ignore[assignment]
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Output .npz (tokens int32, logits float32).")
    ] = ...,  # type: ignore[assignment]
    backend: Annotated[str, typer.Option("--backend", help="auto, llama.cpp or onnx.")] = "auto",
) -> None:
    """Save the model's next-token logits for every token of a text."""
    import numpy as np

    from edgeglm.runtime import open_backend

    try:
        try:
            content = text.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"{text}: cannot read as UTF-8 text ({e})") from e
        if not output.parent.is_dir():
            raise UsageError(f"{output.parent}: output folder does not exist")
        probe = open_backend(model, backend=backend, n_ctx=64)
        tokens = probe.tokenize(content)
        probe.close()
        if not tokens:
            raise UsageError(f"{text}: no tokens to score")
        m = open_backend(model, backend=backend, n_ctx=len(tokens) + 8, logits=True)
        try:
            logits = m.score(tokens)
        finally:
            m.close()
        tmp = output.with_name(f".{output.name}.tmp.npz")
        np.savez(tmp, tokens=np.asarray(tokens, dtype=np.int32), logits=logits.astype(np.float32))
        tmp.replace(output)
    except EdgeGLMError as e:
        _fail(e)
    err.print(f"scored {len(tokens)} tokens -> {output}")


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

    from edgeglm.bench.report import BenchReport

    args = models or []
    try:
        if args and args[0] == "compare":
            _bench_compare([Path(a) for a in args[1:]], as_json)
            return
        from edgeglm.bench.run import main_table, run_bench

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

            report: BenchReport = run_bench(
                [a for a in args] or [None],
                [q.strip() for q in quants.split(",") if q.strip()],
                [b.strip() for b in backends.split(",") if b.strip()],
                text,
                repeat,
                progress=progress,
                threads=threads,
            )
    except EdgeGLMError as e:
        _fail(e)
    if not report.complete:
        err.print("[yellow]interrupted: the report holds the artifacts that finished[/]")
    if output is not None:
        _write_report(report, output)
    if as_json:
        print(report.to_json())
    else:
        if not out.is_terminal:
            out.width = max(out.width, 160)  # a report table, not a terminal layout
        out.print(main_table(report))
        out.print(
            "[dim]* on the Pareto front (no artifact is both faster and closer to the reference)[/]"
        )


def _write_report(report: Any, output: Path) -> None:
    from edgeglm.bench.plot import to_svg

    stem = output.with_suffix("")
    for suffix, text in (
        (".json", report.to_json()),
        (".csv", report.to_csv()),
        (".md", report.to_markdown()),
        (".svg", to_svg(report)),
    ):
        path = stem.with_suffix(suffix)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    err.print(f"report: {stem}.json (+ .csv .md .svg)")


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


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="Where converted artifacts go.")] = Path("out/demo"),
) -> None:
    """Run the whole pipeline on the bundled demo GLM model."""
    from edgeglm.demo import run_demo

    try:
        run_demo(workdir, out, err)
    except EdgeGLMError as e:
        _fail(e)


@app.command()
def version() -> None:
    """Print the versions of EdgeGLM and its engines."""
    import llama_cpp

    print(f"edgeglm {__version__}\nllama-cpp-python {llama_cpp.__version__}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(int(ExitCode.INTERRUPTED))
