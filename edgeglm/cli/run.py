"""``edgeglm run`` and ``edgeglm score``: use a model."""

from __future__ import annotations

import functools
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from edgeglm.cli import _fail, app, err
from edgeglm.cli.hub import PullOpt, pull_if_missing
from edgeglm.errors import EdgeGLMError, UsageError
from edgeglm.planner.launch import LaunchControls

if TYPE_CHECKING:
    from edgeglm.artifacts import Artifact
    from edgeglm.backends.base import Backend, Completion
    from edgeglm.generation import Sampling

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
RpcOpt = Annotated[
    str | None,
    typer.Option(
        "--rpc",
        help="Spread the model over these `edgeglm worker`s too: HOST:PORT,... "
        "(llama.cpp's RPC; unencrypted, see README).",
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

# The model, where it runs, and its context: shared by run and chat --cli
# (score and bench pick their own context).
ModelArg = Annotated[
    str | None,
    typer.Argument(
        help="GGUF file, ONNX folder, HF folder or cached repo id (default: the demo model)."
    ),
]
BackendOpt = Annotated[
    str,
    typer.Option(
        "--backend",
        help="auto (the plan's choice), llama.cpp (a GGUF, or a checkpoint converted to one) "
        "or onnx (an ONNX folder); a model the backend cannot run is refused.",
    ),
]
CtxOpt = Annotated[
    int | None,
    typer.Option("--ctx-size", "-c", "--ctx", help="Context size in tokens (default: the plan's)."),
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option("--threads", "-t", help="CPU threads (default: the plan's)."),
]
VerboseOpt = Annotated[
    bool,
    typer.Option("--verbose", "-v", help="llama.cpp's own log (debug lines too) on stderr."),
]

# Sampling, named as llama.cpp names it. None: the model's own default
# (generation_config.json, GGUF general.sampling.*), else llama.cpp's; see
# edgeglm/generation.py.
NPredictOpt = Annotated[
    int | None,
    typer.Option(
        "--n-predict",
        "-n",
        "--max-tokens",
        help="Most tokens in a reply; -1: until the model ends its turn or the context is full "
        "(default: the model's max_new_tokens, else -1).",
    ),
]
TempOpt = Annotated[
    float | None,
    typer.Option("--temp", help="Temperature; 0 = greedy (default: the model's, else 0.8)."),
]
TopKOpt = Annotated[
    int | None,
    typer.Option("--top-k", help="Top-k; 0 = off (default: the model's, else 40)."),
]
TopPOpt = Annotated[
    float | None,
    typer.Option("--top-p", help="Top-p; 1 = off (default: the model's, else 0.95)."),
]
MinPOpt = Annotated[
    float | None,
    typer.Option("--min-p", help="Min-p; 0 = off (default: the model's, else 0.05)."),
]
RepeatPenaltyOpt = Annotated[
    float | None,
    typer.Option(
        "--repeat-penalty", help="Repeat penalty; 1 = off (default: the model's, else 1)."
    ),
]
SeedOpt = Annotated[
    int | None,
    typer.Option("--seed", help="Sampling seed (default: 0, so a prompt gives the same reply)."),
]
SystemOpt = Annotated[str | None, typer.Option("--system", "-s", help="System prompt.")]
HideThinkingOpt = Annotated[
    bool,
    typer.Option(
        "--hide-thinking",
        help="Leave out the model's <think> reasoning (shown dimmed on a terminal otherwise).",
    ),
]


@dataclass(frozen=True)
class LoadOptions:
    """How to load a model: run's and chat --cli's shared flags."""

    backend: str = "auto"
    ctx: int | None = None
    threads: int | None = None
    quant: str | None = None
    no_plan: bool = False
    controls: LaunchControls = field(default_factory=LaunchControls)
    verbose: bool = False

    def check(self) -> None:
        """Every value, before a model is touched (UsageError)."""
        from edgeglm.backends.base import check_n_ctx, check_threads

        if self.backend not in BACKENDS:
            raise UsageError(f"unknown backend {self.backend!r}; choose {', '.join(BACKENDS)}")
        if self.ctx is not None:
            check_n_ctx(self.ctx, what="--ctx-size")
        check_threads(self.threads, "--threads")


BACKENDS = ("auto", "llama.cpp", "onnx")


def check_backend(art: Artifact, backend: str) -> None:
    """``--backend`` honoured or refused, never ignored: a backend that cannot
    run this kind of model says so (UsageError) instead of another running."""
    if backend == "llama.cpp" and art.kind == "onnx":
        raise UsageError(
            f"{art.path}: an ONNX folder runs in ONNX Runtime, not llama.cpp "
            "(--backend onnx or auto; llama.cpp runs a GGUF or a Hugging Face checkpoint)"
        )
    if backend == "onnx" and art.kind == "gguf":
        raise UsageError(
            f"{art.path}: a GGUF runs in llama.cpp, not ONNX Runtime "
            "(--backend llama.cpp or auto; ONNX Runtime runs an ONNX folder)"
        )


def load_model(
    ref: str | None, load: LoadOptions, *, progress: bool = True, n_seq_max: int = 1
) -> tuple[Artifact, Backend]:
    """The artifact ``ref`` names and the backend running it, as planned.
    ``progress``: a checkpoint converted on first use shows a bar on a
    terminal's stderr (cli/progress.py). ``n_seq_max``: sequences decoded
    together (serve's slots; llama.cpp only)."""
    from edgeglm.artifacts import resolve
    from edgeglm.cli.progress import conversion_bar
    from edgeglm.runtime import open_backend

    art = resolve(ref)
    check_backend(art, load.backend)
    extra: dict[str, Any] = {} if load.threads is None else {"n_threads": load.threads}
    if n_seq_max > 1:
        extra["n_seq_max"] = n_seq_max
    with conversion_bar(progress) as hook:
        m = open_backend(
            ref,
            backend=load.backend,
            n_ctx=load.ctx,
            quant=load.quant,
            use_plan=not load.no_plan,
            controls=load.controls,
            verbose=load.verbose,
            convert_progress=hook,
            **extra,
        )
    return art, m


@dataclass(frozen=True)
class SamplingFlags:
    """The sampling flags given (None: not given)."""

    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    max_tokens: int | None = None
    seed: int | None = None

    def check(self) -> None:
        """Every value, before a model is touched (UsageError)."""
        from edgeglm.generation import Sampling, check_max_tokens

        if self.max_tokens is not None:
            check_max_tokens(self.max_tokens)
        Sampling().override(**vars(self))

    def on(self, defaults: Sampling) -> Sampling:
        return defaults.override(**vars(self))


def sampling_for(art: Artifact, flags: SamplingFlags) -> Sampling:
    """The model's sampling defaults (llama.cpp's where it has none) under the flags."""
    from edgeglm.generation import model_defaults

    return flags.on(model_defaults(art.kind, art.path))


def show_sampling(sampling: Sampling) -> None:
    """Where each sampling value came from, and any model value skipped (stderr)."""
    for warning in sampling.warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    err.print(f"[dim]sampling: {escape(sampling.describe())}[/]", highlight=False)


def launch_controls(
    override_tensor: list[str] | None,
    cpu_moe: bool,
    n_cpu_moe: int | None,
    ngl: int | None,
    rpc: str | None = None,
) -> LaunchControls:
    from edgeglm.rpc.endpoints import parse_endpoints

    workers = parse_endpoints(rpc) if rpc is not None else ()
    c = LaunchControls(tuple(override_tensor or ()), cpu_moe, n_cpu_moe, ngl, workers)
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
    model: ModelArg = None,
    prompt: Annotated[
        str | None,
        typer.Option("-p", "--prompt", help="The user message (or raw text with --raw)."),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option("-f", "--file", help="Read the prompt from this UTF-8 text file."),
    ] = None,
    n_predict: NPredictOpt = None,
    backend: BackendOpt = "auto",
    system: SystemOpt = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="Continue the text as is, without the chat template.")
    ] = False,
    temperature: TempOpt = None,
    top_p: TopPOpt = None,
    top_k: TopKOpt = None,
    min_p: MinPOpt = None,
    repeat_penalty: RepeatPenaltyOpt = None,
    seed: SeedOpt = None,
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
        typer.Option("--json", help="Print the text, timings and settings as JSON."),
    ] = False,
    pull: PullOpt = False,
) -> None:
    """Generate a reply, streaming tokens to stdout.

    The prompt comes from -p, -f or standard input; with none of them on a
    terminal, an interactive chat starts (as edgeglm chat --cli)."""
    from edgeglm.backends.base import check_text

    try:
        controls = launch_controls(override_tensor, cpu_moe, n_cpu_moe, n_gpu_layers, rpc)
        load = LoadOptions(backend, ctx, threads, quant, no_plan, controls, verbose)
        flags = SamplingFlags(temperature, top_k, top_p, min_p, repeat_penalty, n_predict, seed)
        if hardware is not None and not dry_run:
            raise UsageError("--hardware plans for another machine: it needs --dry-run")
        if dry_run:
            pull_if_missing([model], pull)
            _dry_run(model, load, hardware, as_json)
            return
        # Every value is checked before a model is touched (the same checks
        # open_backend, chat and generate_text make for every caller).
        load.check()
        flags.check()
        if system is not None:
            check_text(system, "--system")
        text = read_prompt(prompt, file, chat=not raw)
        pull_if_missing([model], pull)
        if text is None:  # a terminal and no prompt: talk
            for flag, given in (("--raw", raw), ("--json", as_json)):
                if given:
                    raise UsageError(f"{flag} needs a prompt (-p, -f or standard input)")
            from edgeglm.cli.repl import chat_in_terminal

            raise typer.Exit(
                chat_in_terminal(model, load, flags, system=system, hide_thinking=hide_thinking)
            )
        if raw and not text:
            raise UsageError("--raw needs a non-empty --prompt to continue")
        art, m = load_model(model, load, progress=not as_json)
        try:
            sampling = sampling_for(art, flags)
            result = _generate(m, text, system, raw, sampling, as_json, hide_thinking)
        finally:
            m.close()
    except EdgeGLMError as e:
        _fail(e)
    if as_json:
        _print_json(model, m, result, sampling)
    else:
        t = result.timings
        err.print(
            f"[dim]{t.prompt_tokens} prompt tokens, {t.completion_tokens} generated; "
            f"first token {t.time_to_first_token * 1000:.0f} ms, "
            f"{t.decode_tokens_per_second:.1f} tok/s decode ({m.name}, {m.capabilities.device})[/]"
        )


def read_prompt(prompt: str | None, file: Path | None, *, chat: bool) -> str | None:
    """The prompt from -p, -f or standard input (not a terminal); None when
    there is none of these (a terminal: the caller starts a chat).

    From a file or a pipe, a chat prompt loses its trailing newlines (``echo``
    adds one); raw text is continued exactly as it is."""
    from edgeglm.backends.base import check_text

    if prompt is not None and file is not None:
        raise UsageError("give the prompt with -p or with -f, not both")
    if prompt is not None:
        return check_text(prompt, "--prompt")
    if file is not None:
        what = str(file)
        try:
            data = file.read_bytes()
        except OSError as e:
            raise UsageError(f"{file}: cannot read ({_reason(e)})") from e
    elif sys.stdin is None or sys.stdin.isatty():
        return None
    else:
        what = "standard input"
        try:
            data = sys.stdin.buffer.read()
        except OSError as e:
            raise UsageError(f"standard input: cannot read ({_reason(e)})") from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{what}: not UTF-8 text ({_reason(e)})") from e
    if chat:
        text = text.rstrip("\r\n")
    if not text.strip():
        raise UsageError(f"{what}: no prompt in it (it is empty)")
    return text


def _generate(
    m: Backend,
    text: str,
    system: str | None,
    raw: bool,
    sampling: Sampling,
    as_json: bool,
    hide_thinking: bool,
) -> Completion:
    """One reply, streamed to stdout unless ``as_json``."""
    from edgeglm.chat import GLM_STOP_TOKENS
    from edgeglm.cli.repl import ReplyWriter
    from edgeglm.runtime import chat, generate_text

    if raw:
        stream = generate_text(m, text, sampling.params())
    else:
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": text}
        ]
        # GLM's end-of-turn markers end the reply even where a GGUF does not
        # flag them as end-of-generation tokens (as in the chat app)
        stream = chat(m, messages, sampling.params(stop=GLM_STOP_TOKENS))  # renders now
    if not as_json:
        settings = getattr(m, "settings", None)
        if settings:
            shown = ", ".join(f"{k}={v}" for k, v in settings.items())
            err.print(f"[dim]{m.name}: {shown}  (edgeglm plan MODEL explains these)[/]")
        show_sampling(sampling)
    writer = None if as_json else ReplyWriter(sys.stdout, hide_thinking=hide_thinking)
    while True:
        try:
            piece = next(stream)
        except StopIteration as stop:
            result: Completion = stop.value
            break
        if writer is not None:
            writer.write(piece.text)
    if writer is not None:
        writer.finish()
    return result


def _print_json(model: str | None, m: Backend, result: Completion, sampling: Sampling) -> None:
    from edgeglm.chat import split_thinking

    t = result.timings
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
                "sampling": sampling.to_dict(),
                "sampling_warnings": list(sampling.warnings),
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


def _dry_run(model: str | None, load: LoadOptions, hardware: Path | None, as_json: bool) -> None:
    """Print the launch spec ``run`` would load (EdgeGLMError on a bad model or flag)."""
    from edgeglm.runtime import dry_run_spec

    load.check()
    if load.backend == "onnx":
        raise UsageError("--dry-run prints llama.cpp launch specs; not with --backend onnx")
    hw = None
    if hardware is not None:
        from edgeglm.hardware import load_profile

        hw = load_profile(hardware)
    spec = dry_run_spec(
        model,
        n_ctx=load.ctx,
        quant=load.quant,
        use_plan=not load.no_plan,
        controls=load.controls,
        hardware=hw,
    )
    if load.threads is not None:
        spec = spec.with_(n_threads=load.threads)
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
    model: ModelArg = None,
    text: Annotated[Path, typer.Option("--text", help="UTF-8 text file to score.")] = ...,  # type: ignore[assignment]
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Output .npz (tokens int32, logits float32).")
    ] = ...,  # type: ignore[assignment]
    backend: BackendOpt = "auto",
    threads: ThreadsOpt = None,
    quant: QuantOpt = None,
    no_plan: NoPlanOpt = False,
    override_tensor: OverrideTensorOpt = None,
    cpu_moe: CpuMoeOpt = False,
    n_cpu_moe: NCpuMoeOpt = None,
    n_gpu_layers: NglOpt = None,
    rpc: RpcOpt = None,
) -> None:
    """Save the model's next-token logits for every token of a text."""
    import numpy as np

    from edgeglm.artifacts import resolve
    from edgeglm.fileio import atomic_output
    from edgeglm.runtime import open_backend, trained_context

    try:
        controls = launch_controls(override_tensor, cpu_moe, n_cpu_moe, n_gpu_layers, rpc)
        LoadOptions(backend, threads=threads, controls=controls).check()
        check_output(output)
        try:
            content = text.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"{text}: cannot read as UTF-8 text ({_reason(e)})") from e
        check_backend(resolve(model), backend)
        extra: dict[str, Any] = {} if threads is None else {"n_threads": threads}
        load = functools.partial(
            open_backend,
            model,
            backend=backend,
            quant=quant,
            use_plan=not no_plan,
            controls=controls,
            **extra,
        )
        from edgeglm.cli.progress import conversion_bar

        with conversion_bar() as hook:  # a checkpoint is converted by the first load
            probe = load(n_ctx=64, convert_progress=hook)
        tokens = probe.tokenize(content)
        probe.close()
        if not tokens:
            raise UsageError(f"{text}: no tokens to score")
        train = trained_context(resolve(model))
        if train is not None and len(tokens) + 8 > train:
            raise UsageError(
                f"{text}: {len(tokens)} tokens, more than the model's trained context of "
                f"{train} tokens can score at once; score a text of at most {train - 8} tokens"
            )
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
