"""``edgeglm convert``: Hugging Face checkpoints to GGUF."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from edgeglm.cli import _fail, _sigterm_as_interrupt, app, err, out
from edgeglm.errors import EdgeGLMError, UsageError


@app.command()
def convert(
    src: Annotated[
        str, typer.Argument(help="Hugging Face model folder, or a repo id in the local HF cache.")
    ],
    output: Annotated[
        Path,
        typer.Option("-o", "--output", help="Output .gguf file (or folder with --format onnx)."),
    ],
    quant: Annotated[
        str,
        typer.Option(
            "--quant",
            "-q",
            help="GGUF: llama.cpp type (F32, F16, BF16, Q8_0, Q6_K, Q5_K_M, Q4_K_M, IQ4_XS, Q2_K, "
            "...; default Q4_K_M). ONNX: fp32, fp16, int8, int4 (default int4).",
        ),
    ] = "",
    fmt: Annotated[str, typer.Option("--format", "-f", help="gguf or onnx.")] = "gguf",
    recipe: Annotated[
        str | None,
        typer.Option(
            "--recipe",
            help="Recipe name (recipes/NAME.json) or file: its quant for this machine "
            "(when --quant is not given) and its keep-higher-precision rules.",
        ),
    ] = None,
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
    """Convert a Hugging Face GLM checkpoint to GGUF (llama.cpp) or ONNX in one pass."""
    from edgeglm.checkpoint.hf import resolve_checkpoint
    from edgeglm.cli.progress import conversion_progress
    from edgeglm.converters.gguf.imatrix import read_imatrix
    from edgeglm.converters.output import check_output

    _sigterm_as_interrupt()
    try:
        if fmt not in ("gguf", "onnx"):
            raise UsageError(f"unknown --format {fmt!r}; choose gguf or onnx")
        if fmt == "onnx" and (imatrix or calibrate):
            raise UsageError("--imatrix/--calibrate apply to GGUF only")
        keep: list[tuple[str, str]] = []
        if recipe is not None:
            if fmt != "gguf":
                raise UsageError("--recipe applies to GGUF conversions")
            quant, keep = _apply_recipe(recipe, src, quant)
        quant = quant or ("Q4_K_M" if fmt == "gguf" else "int4")
        if imatrix is not None and calibrate is not None:
            raise UsageError("give --imatrix or --calibrate, not both")
        for flag, given in (("--imatrix", imatrix), ("--calibrate", calibrate)):
            if given is not None and not given.is_file():
                raise UsageError(f"{flag} {given}: no such file")
        # The output must not be any input; the converters check the checkpoint's
        # own files again, this adds the imatrix and calibration text.
        check_output(output, resolve_checkpoint(src), folder=fmt == "onnx",
                     also=(imatrix, calibrate))  # fmt: skip
        im = read_imatrix(imatrix) if imatrix is not None else None
        if calibrate is not None:
            from edgeglm.converters.gguf.calibrate import calibrate as run_calibration

            err.print(f"calibrating on {calibrate} …")
            im = run_calibration(resolve_checkpoint(src), calibrate)
        with conversion_progress(disable=not err.is_terminal) as bar:
            task = bar.add_task(f"{quant.upper()}", total=None, tensors="")

            def progress(name: str, i: int, n: int, done: int, total: int) -> None:
                bar.update(task, completed=done, total=total, tensors=f"{i}/{n} tensors")

            if fmt == "onnx":
                from edgeglm.converters.onnx import convert as onnx_convert

                result: Any = onnx_convert(src, output, quant, progress=progress)
            else:
                from edgeglm.converters.gguf.convert import convert as gguf_convert

                result = gguf_convert(
                    src, output, quant, imatrix=im, threads=threads, progress=progress, keep=keep
                )
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


def _apply_recipe(name: str, src: str, quant: str) -> tuple[str, list[tuple[str, str]]]:
    """The recipe's quant for this machine (unless one was given) and its precision rules."""
    from edgeglm.hardware import probe
    from edgeglm.planner.planner import make_plan
    from edgeglm.planner.recipes import load_recipe, recipes_dir
    from edgeglm.planner.sources import open_model

    path = Path(name)
    if not path.is_file():
        path = recipes_dir() / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in recipes_dir().glob("*.json"))
        raise UsageError(f"no recipe {name!r}; known: {', '.join(known)}")
    r = load_recipe(path)
    keep = [(k.tensors, k.type) for k in r.keep_higher_precision]
    if not quant:
        plan = make_plan(open_model(src), probe(bandwidth=False), recipes=[r])
        quant = plan.quant or r.recommendation("*").quants[0]
        err.print(f"recipe {r.name}: {quant} for this machine (edgeglm plan {src} explains why)")
    return quant, keep
