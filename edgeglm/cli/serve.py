"""``edgeglm serve``: the model behind an OpenAI-compatible HTTP API (edgeglm/server)."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from edgeglm.cli import _fail, app, err
from edgeglm.cli.hub import PullOpt, pull_if_missing
from edgeglm.cli.run import (
    BackendOpt,
    CpuMoeOpt,
    CtxOpt,
    LoadOptions,
    MinPOpt,
    ModelArg,
    NCpuMoeOpt,
    NglOpt,
    NoPlanOpt,
    NPredictOpt,
    OverrideTensorOpt,
    QuantOpt,
    RepeatPenaltyOpt,
    RpcOpt,
    SamplingFlags,
    SeedOpt,
    TempOpt,
    ThreadsOpt,
    TopKOpt,
    TopPOpt,
    VerboseOpt,
    sampling_for,
    show_sampling,
)
from edgeglm.errors import EdgeGLMError, UsageError
from edgeglm.planner.launch import LaunchSpec

# Waiting requests past which a new one gets 503 (llama-server has no bound at all).
DEFAULT_QUEUE = 32
# --parallel's default: as many slots as the planned context holds at this many
# tokens each (the KV cache is the plan's; slots split it, as llama-server's
# -np splits -c), at most MAX_DEFAULT_PARALLEL.
SLOT_CTX = 4096
MAX_DEFAULT_PARALLEL = 4


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound now so a taken port is one clear line (exit 2)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UsageError(f"--host {host}: not an address here ({e.strerror})") from e
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port} ({e.strerror})") from e
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def model_id(ref: str | None, alias: str | None) -> str:
    """The name clients use in ``model``: --alias, else the file or folder name."""
    if alias is not None:
        return alias
    if ref is None:
        return "demo"
    p = Path(ref).expanduser()
    return p.name if p.exists() else ref


# llama.cpp's LLAMA_MAX_SEQ
MAX_PARALLEL = 256


def default_parallel(ref: str | None, load: LoadOptions) -> int:
    """Slots the planned context holds at SLOT_CTX tokens each (1 where it is not llama.cpp)."""
    from edgeglm.runtime import dry_run_spec

    try:
        spec = dry_run_spec(
            ref, n_ctx=load.ctx, quant=load.quant, use_plan=not load.no_plan, controls=load.controls
        )
    except EdgeGLMError:
        return 1  # ONNX, or a model the real load will refuse with its own message
    if spec.backend != "llama.cpp" or load.backend == "onnx":
        return 1
    return max(1, min(MAX_DEFAULT_PARALLEL, spec.n_ctx // SLOT_CTX))


@app.command()
def serve(
    model: ModelArg = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (default: loopback only).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port (0: any free one).")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key", help="Require this key (Bearer or X-Api-Key); /health stays open."
        ),
    ] = None,
    api_key_file: Annotated[
        Path | None,
        typer.Option("--api-key-file", help="Read the key from this file's first line."),
    ] = None,
    alias: Annotated[
        str | None,
        typer.Option("--alias", help="The model's name in the API (default: its file name)."),
    ] = None,
    parallel: Annotated[
        int | None,
        typer.Option(
            "--parallel",
            "-np",
            help="Requests decoded together in one batch, each in its own slot with "
            f"ctx/N of the context (default: as many {SLOT_CTX}-token slots as the planned "
            f"context holds, at most {MAX_DEFAULT_PARALLEL}).",
        ),
    ] = None,
    queue: Annotated[
        int,
        typer.Option("--queue", help="Requests that may wait; past that, 503 with Retry-After."),
    ] = DEFAULT_QUEUE,
    restarts: Annotated[
        int,
        typer.Option(
            "--restarts",
            help="Crashes of the model's engine in a row that are restarted (after 1, 2, "
            "4... s; a completed request resets the count); 0: it stays down.",
        ),
    ] = 3,
    ctx: CtxOpt = None,
    threads: ThreadsOpt = None,
    backend: BackendOpt = "auto",
    quant: QuantOpt = None,
    no_plan: NoPlanOpt = False,
    override_tensor: OverrideTensorOpt = None,
    cpu_moe: CpuMoeOpt = False,
    n_cpu_moe: NCpuMoeOpt = None,
    n_gpu_layers: NglOpt = None,
    rpc: RpcOpt = None,
    n_predict: NPredictOpt = None,
    temperature: TempOpt = None,
    top_p: TopPOpt = None,
    top_k: TopKOpt = None,
    min_p: MinPOpt = None,
    repeat_penalty: RepeatPenaltyOpt = None,
    seed: SeedOpt = None,
    verbose: VerboseOpt = False,
    pull: PullOpt = False,
) -> None:
    """Serve a model over an OpenAI-compatible HTTP API.

    Chat and text completions (plain or streamed), models, health and
    Prometheus metrics; sampling flags set the defaults a request may override."""
    import uvicorn

    from edgeglm.artifacts import resolve
    from edgeglm.backends.base import check_count
    from edgeglm.cli.run import check_backend, launch_controls
    from edgeglm.server.app import ServerConfig, build_process_app
    from edgeglm.server.auth import check_key, read_key_file
    from edgeglm.server.child import LoadRequest

    try:
        if api_key is not None and api_key_file is not None:
            raise UsageError("give the key with --api-key or --api-key-file, not both")
        key = check_key(api_key) if api_key is not None else None
        if api_key_file is not None:
            key = check_key(read_key_file(api_key_file), f"--api-key-file {api_key_file}")
        check_count("--port", port, 0, 65535)
        check_count("--queue", queue, 0, 1 << 20)
        check_count("--restarts", restarts, 0, 1000)
        if parallel is not None:
            check_count("--parallel", parallel, 1, MAX_PARALLEL)
        controls = launch_controls(override_tensor, cpu_moe, n_cpu_moe, n_gpu_layers, rpc)
        load = LoadOptions(backend, ctx, threads, quant, no_plan, controls, verbose)
        load.check()
        flags = SamplingFlags(temperature, top_k, top_p, min_p, repeat_penalty, n_predict, seed)
        flags.check()
        pull_if_missing([model], pull)
        if parallel is None:
            parallel = default_parallel(model, load)
        art = resolve(model)
        check_backend(art, backend)
        if parallel > 1 and art.kind == "onnx":
            raise UsageError(f"--parallel {parallel}: slots need llama.cpp; {art.path} is ONNX")
        sampling = sampling_for(art, flags)
        config = ServerConfig(model_id(model, alias), sampling, key, queue, parallel=parallel)
        request = LoadRequest(model, load, parallel, restarts)
        sock = bind(host, port)
        try:
            # the model loads in the engine's own process (a crash there spares the server)
            application = build_process_app(request, config)
        except BaseException:
            sock.close()
            raise
    except EdgeGLMError as e:
        _fail(e)
    show_sampling(sampling)
    engine = application.state.server.engine
    where = sock.getsockname()
    shown = f"[{where[0]}]" if ":" in where[0] else where[0]
    err.print(
        f"serving {escape(config.model_id)} on http://{shown}:{where[1]}/v1 "
        f"({engine.info.name}, {parallel} slot(s) of {engine.n_ctx} tokens, "
        f"queue {queue})",
        highlight=False,
    )
    if engine.info.name == "llama.cpp":  # what was loaded, as llama-server flags
        args = LaunchSpec.from_dict(engine.info.settings).llama_cpp_args()
        err.print(f"[dim]launch: {escape(' '.join(args))}[/]", highlight=False)
    if not is_loopback(host) and key is None:
        err.print(
            f"[bold red]WARNING: listening on {escape(host)} without an API key: anyone who "
            "can reach this port can use the model. Give --api-key or --api-key-file.[/]",
            highlight=False,
        )
    server = uvicorn.Server(
        uvicorn.Config(application, log_level="warning", access_log=False, lifespan="on")
    )
    server.run(sockets=[sock])
