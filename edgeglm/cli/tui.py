"""``edgeglm chat`` and ``edgeglm tui``: the Textual app (imported only when
run), or with ``chat --cli`` a chat in the plain terminal (edgeglm.cli.repl)."""

from __future__ import annotations

from typing import Annotated

import typer

from edgeglm.cli import _fail, app
from edgeglm.cli.hub import PullOpt, pull_if_missing
from edgeglm.cli.run import (
    BackendOpt,
    CpuMoeOpt,
    CtxOpt,
    HideThinkingOpt,
    LoadOptions,
    MinPOpt,
    NCpuMoeOpt,
    NglOpt,
    NPredictOpt,
    OverrideTensorOpt,
    QuantOpt,
    RepeatPenaltyOpt,
    RpcOpt,
    SamplingFlags,
    SeedOpt,
    SystemOpt,
    TempOpt,
    ThreadsOpt,
    TopKOpt,
    TopPOpt,
    VerboseOpt,
)
from edgeglm.errors import EdgeGLMError, UsageError

ModelArg = Annotated[
    str | None,
    typer.Argument(help="GGUF file, ONNX folder, HF folder or cached HF repo id (default: demo)."),
]


NoPlanOpt = Annotated[
    bool,
    typer.Option("--no-plan", help="Load models with the backend's defaults, not the plan's."),
]


def _open_app(model: str | None, use_plan: bool) -> None:
    """A model that cannot be found, read or planned is refused here, with its
    exit code, before the full-screen app takes the terminal."""
    from edgeglm.artifacts import resolve, verify_gguf
    from edgeglm.checkpoint.hf import HFCheckpoint
    from edgeglm.converters.consistency import check_checkpoint
    from edgeglm.runtime import planned_spec

    try:
        art = resolve(model)
        if art.kind == "gguf":  # loaded in a child once per content, as run does
            verify_gguf(art.path)
            if use_plan:
                planned_spec(art.path)  # a plan that does not fit: exit 7, as run says
        elif art.kind == "hf":  # headers, shards and config: no tensor is read
            ckpt = HFCheckpoint(art.path)
            try:
                check_checkpoint(ckpt)
            finally:
                ckpt.close()
    except EdgeGLMError as e:
        _fail(e)
    from edgeglm.tui.app import run_app

    run_app(model, use_plan=use_plan)


@app.command()
def chat(
    model: ModelArg = None,
    cli: Annotated[
        bool,
        typer.Option(
            "--cli", help="Chat in the plain terminal (as ollama run), not the full-screen app."
        ),
    ] = False,
    system: SystemOpt = None,
    n_predict: NPredictOpt = None,
    temperature: TempOpt = None,
    top_p: TopPOpt = None,
    top_k: TopKOpt = None,
    min_p: MinPOpt = None,
    repeat_penalty: RepeatPenaltyOpt = None,
    seed: SeedOpt = None,
    backend: BackendOpt = "auto",
    ctx: CtxOpt = None,
    threads: ThreadsOpt = None,
    quant: QuantOpt = None,
    no_plan: NoPlanOpt = False,
    override_tensor: OverrideTensorOpt = None,
    cpu_moe: CpuMoeOpt = False,
    n_cpu_moe: NCpuMoeOpt = None,
    n_gpu_layers: NglOpt = None,
    rpc: RpcOpt = None,
    hide_thinking: HideThinkingOpt = False,
    verbose: VerboseOpt = False,
    pull: PullOpt = False,
) -> None:
    """Chat with a model in the terminal app, or with --cli in the plain terminal.

    The app opens on its chat screen; --cli chats line by line, as ollama run
    does (/help lists its commands)."""
    from edgeglm.cli.run import launch_controls

    try:
        controls = launch_controls(override_tensor, cpu_moe, n_cpu_moe, n_gpu_layers, rpc)
        load = LoadOptions(backend, ctx, threads, quant, no_plan, controls, verbose)
        flags = SamplingFlags(temperature, top_k, top_p, min_p, repeat_penalty, n_predict, seed)
        load.check()
        flags.check()
        if not cli:
            # Honoured or refused, never ignored: the app takes its settings
            # on its own settings screen (Ctrl+S).
            given = _cli_only(load, flags, system, hide_thinking)
            if given:
                raise UsageError(f"{given} applies to chat --cli (the app sets it with Ctrl+S)")
        elif system is not None:
            from edgeglm.backends.base import check_text

            check_text(system, "--system")
        pull_if_missing([model], pull)
    except EdgeGLMError as e:
        _fail(e)
    if not cli:
        _open_app(model, not no_plan)
        return
    from edgeglm.cli.repl import chat_in_terminal

    try:
        code = chat_in_terminal(model, load, flags, system=system, hide_thinking=hide_thinking)
    except EdgeGLMError as e:
        _fail(e)
    raise typer.Exit(code)


def _cli_only(
    load: LoadOptions, flags: SamplingFlags, system: str | None, hide: bool
) -> str | None:
    """The first flag given that only chat --cli takes, by name."""
    names = {
        "temperature": "--temp",
        "top_k": "--top-k",
        "top_p": "--top-p",
        "min_p": "--min-p",
        "repeat_penalty": "--repeat-penalty",
        "max_tokens": "-n/--n-predict",
        "seed": "--seed",
    }
    for key, flag in names.items():
        if getattr(flags, key) is not None:
            return flag
    for flag, on in (
        ("--system", system is not None),
        ("--hide-thinking", hide),
        ("--backend", load.backend != "auto"),
        ("--ctx-size", load.ctx is not None),
        ("--threads", load.threads is not None),
        ("--quant", load.quant is not None),
        ("--verbose", load.verbose),
        *((f, True) for f in load.controls.given()),
    ):
        if on:
            return flag
    return None


@app.command()
def tui(model: ModelArg = None, no_plan: NoPlanOpt = False) -> None:
    """Open the terminal app (chat, bench, models, hardware and plan)."""
    _open_app(model, not no_plan)
