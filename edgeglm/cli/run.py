"""``edgeglm run`` and ``edgeglm score``: use a model."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from edgeglm.cli import _fail, app, err
from edgeglm.errors import EdgeGLMError, UsageError
from edgeglm.planner.launch import LaunchControls

# llama.cpp's own placement flags, named as llama.cpp names them (common/arg.cpp);
# shared by run and score. They override the plan's fields.
OverrideTensorOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--override-tensor",
        "-ot",
        help="PATTERN=DEVICE[,...]: weights matching the regex go to DEVICE (e.g. 'exps=CPU'); "
        "repeatable; replaces the plan's overrides.",
    ),
]
CpuMoeOpt = Annotated[
    bool, typer.Option("--cpu-moe", "-cmoe", help="Keep every MoE expert weight in RAM.")
]
NCpuMoeOpt = Annotated[
    int | None,
    typer.Option(
        "--n-cpu-moe", "-ncmoe", help="Keep the MoE experts of the first N blocks in RAM."
    ),
]
NglOpt = Annotated[
    int | None,
    typer.Option(
        "--n-gpu-layers", "-ngl", help="Layers in VRAM (llama.cpp semantics); replaces the plan's."
    ),
]

QuantOpt = Annotated[
    str | None,
    typer.Option(
        "--quant",
        "-q",
        help="For a Hugging Face checkpoint: the GGUF quant to convert it to "
        "(default: the plan's for this machine).",
    ),
]

NoPlanOpt = Annotated[
    bool,
    typer.Option(
        "--no-plan",
        help="llama.cpp with llama-cpp-python's defaults instead of the planner's launch spec "
        "(also where the plan does not fit this machine).",
    ),
]


def _controls(
    override_tensor: list[str] | None, cpu_moe: bool, n_cpu_moe: int | None, ngl: int | None
) -> LaunchControls:
    c = LaunchControls(tuple(override_tensor or ()), cpu_moe, n_cpu_moe, ngl)
    c.check()  # before any model is touched
    return c


def check_output(path: Path) -> None:
    """Refuse an output path that cannot be written, before any work is done.

    ``fileio.atomic_output`` checks again when it writes (and maps a full disk
    to exit 5); this only spares the user a model load that ends in a refusal.
    """
    if path.is_dir():
        raise UsageError(f"{path}: is a directory; give a file path")
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(f"{parent}: output folder does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{path}: cannot write there (permission denied)")


@app.command()
def run(
    model: Annotated[
        str | None,
        typer.Argument(
            help="GGUF file, ONNX folder, HF folder or cached repo id (default: the demo model)."
        ),
    ] = None,
    prompt: Annotated[
        str | None,
        typer.Option("-p", "--prompt", help="The user message (or raw text with --raw)."),
    ] = None,
    n: Annotated[int, typer.Option("-n", "--max-tokens", help="Maximum new tokens.")] = 256,
    backend: Annotated[str, typer.Option("--backend", help="auto, llama.cpp or onnx.")] = "auto",
    system: Annotated[str | None, typer.Option("--system", help="System prompt.")] = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="Continue the text as is, without the chat template.")
    ] = False,
    temperature: Annotated[float, typer.Option("--temp", help="0 = greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option("--top-p")] = 1.0,
    top_k: Annotated[int, typer.Option("--top-k", help="0 = off.")] = 0,
    min_p: Annotated[float, typer.Option("--min-p")] = 0.0,
    repeat_penalty: Annotated[float, typer.Option("--repeat-penalty", help="1 = off.")] = 1.0,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    ctx: Annotated[
        int | None, typer.Option("--ctx", help="Context size in tokens (default: the plan's).")
    ] = None,
    quant: QuantOpt = None,
    no_plan: NoPlanOpt = False,
    override_tensor: OverrideTensorOpt = None,
    cpu_moe: CpuMoeOpt = False,
    n_cpu_moe: NCpuMoeOpt = None,
    n_gpu_layers: NglOpt = None,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="llama.cpp's own log (debug lines too) on stderr."),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print the launch spec that would load, without loading anything."
        ),
    ] = False,
    hardware: Annotated[
        Path | None,
        typer.Option(
            "--hardware",
            help="With --dry-run: plan for this hardware profile (JSON) instead of this machine.",
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print the text and timings as JSON instead of streaming."),
    ] = False,
) -> None:
    """Generate a reply, streaming tokens to stdout."""
    from edgeglm.backends.base import SamplingParams, check_n_ctx, check_text
    from edgeglm.chat import split_thinking
    from edgeglm.runtime import chat, generate_text, open_backend

    try:
        controls = _controls(override_tensor, cpu_moe, n_cpu_moe, n_gpu_layers)
        if hardware is not None and not dry_run:
            raise UsageError("--hardware plans for another machine: it needs --dry-run")
        if dry_run:
            _dry_run(model, backend, ctx, quant, no_plan, controls, hardware, as_json)
            return
        if prompt is None:
            raise UsageError("run needs -p/--prompt (or --dry-run)")
        # Every value is checked before a model is touched (the same checks
        # open_backend, chat and generate_text make for every caller).
        params = SamplingParams(
            max_tokens=n,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            min_p=min_p,
            repeat_penalty=repeat_penalty,
            seed=seed,
        )
        check_text(prompt, "--prompt")
        if raw and not prompt:
            raise UsageError("--raw needs a non-empty --prompt to continue")
        if system is not None:
            check_text(system, "--system")
        if ctx is not None:
            check_n_ctx(ctx, what="--ctx")
        m = open_backend(
            model,
            backend=backend,
            n_ctx=ctx,
            quant=quant,
            use_plan=not no_plan,
            controls=controls,
            verbose=verbose,
        )
        try:
            if raw:
                stream = generate_text(m, prompt, params)
            else:
                messages = ([{"role": "system", "content": system}] if system else []) + [
                    {"role": "user", "content": prompt}
                ]
                stream = chat(m, messages, params)  # renders the template now
            settings = getattr(m, "settings", None)
            if settings and not as_json:
                shown = ", ".join(f"{k}={v}" for k, v in settings.items())
                err.print(f"[dim]{m.name}: {shown}  (edgeglm plan MODEL explains these)[/]")
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
                    "settings": getattr(m, "settings", None),
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


def _dry_run(
    model: str | None,
    backend: str,
    ctx: int | None,
    quant: str | None,
    no_plan: bool,
    controls: LaunchControls,
    hardware: Path | None,
    as_json: bool,
) -> None:
    """Print the launch spec ``run`` would load (EdgeGLMError on a bad model or flag)."""
    from edgeglm.backends.base import check_n_ctx
    from edgeglm.runtime import dry_run_spec

    if backend == "onnx":
        raise UsageError("--dry-run prints llama.cpp launch specs; not with --backend onnx")
    if backend not in ("auto", "llama.cpp"):
        raise UsageError(f"unknown backend {backend!r}; choose auto, llama.cpp or onnx")
    if ctx is not None:
        check_n_ctx(ctx, what="--ctx")
    hw = None
    if hardware is not None:
        from edgeglm.hardware import load_profile

        hw = load_profile(hardware)
    spec = dry_run_spec(
        model, n_ctx=ctx, quant=quant, use_plan=not no_plan, controls=controls, hardware=hw
    )
    if as_json:
        print(json.dumps(spec.to_dict(), indent=2))
        return
    for key, value in spec.to_dict().items():
        if key != "schema_version":
            print(f"{key}: {value}")
    if spec.backend == "llama.cpp":  # an ONNX plan has no llama.cpp flags
        print("llama.cpp flags: " + " ".join(spec.llama_cpp_args()))


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
    quant: QuantOpt = None,
    no_plan: NoPlanOpt = False,
    override_tensor: OverrideTensorOpt = None,
    cpu_moe: CpuMoeOpt = False,
    n_cpu_moe: NCpuMoeOpt = None,
    n_gpu_layers: NglOpt = None,
) -> None:
    """Save the model's next-token logits for every token of a text."""
    import numpy as np

    from edgeglm.fileio import atomic_output
    from edgeglm.runtime import open_backend

    try:
        controls = _controls(override_tensor, cpu_moe, n_cpu_moe, n_gpu_layers)
        check_output(output)
        try:
            content = text.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"{text}: cannot read as UTF-8 text ({_reason(e)})") from e
        use_plan = not no_plan
        load = functools.partial(
            open_backend, model, backend=backend, quant=quant, use_plan=use_plan, controls=controls
        )
        probe = load(n_ctx=64)
        tokens = probe.tokenize(content)
        probe.close()
        if not tokens:
            raise UsageError(f"{text}: no tokens to score")
        m = load(n_ctx=len(tokens) + 8, logits=True)
        try:
            logits = m.score(tokens)
        finally:
            m.close()
        with atomic_output(output) as tmp, open(tmp, "wb") as f:
            # a file object: given a path, np.savez would append ".npz" to the temp name
            np.savez(f, tokens=np.asarray(tokens, dtype=np.int32), logits=logits.astype(np.float32))
    except EdgeGLMError as e:
        _fail(e)
    err.print(f"scored {len(tokens)} tokens -> {output}")


def _reason(e: OSError | UnicodeDecodeError) -> str:
    """An OSError's reason without its repeated path; a decode error's position."""
    if isinstance(e, OSError):
        return e.strerror or str(e)
    return f"byte 0x{e.object[e.start]:02x} at offset {e.start} is not UTF-8"
