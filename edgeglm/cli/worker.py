"""``edgeglm worker``: lend this machine's devices to other machines' runs
through llama.cpp's RPC server (what ``rpc-server`` runs)."""

from __future__ import annotations

import errno
import socket
import threading
from pathlib import Path
from typing import Annotated

import typer

from edgeglm.cli import _fail, app, err, out
from edgeglm.errors import EdgeGLMError, UsageError
from edgeglm.rpc.endpoints import DEFAULT_PORT

INSECURE = (
    "llama.cpp's RPC has NO authentication and NO encryption: anyone who can reach "
    "{endpoint} can run code-sized workloads on this machine and read what it computes. "
    "Expose it only on a private network, or keep it on 127.0.0.1 and carry it over SSH "
    "from the client machine: ssh -N -L {port}:127.0.0.1:{port} user@this-host "
    "(then --rpc 127.0.0.1:{port} there)."
)


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def _check_bind(host: str, port: int) -> int:
    """Bind once ourselves so a bad address or a port in use is one clear line
    (llama.cpp's server only prints that it failed); returns the port, a free
    one for port 0."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as llama.cpp's server does
        try:
            s.bind((host, port))
        except socket.gaierror as e:
            raise UsageError(f"--host {host}: not an address of this machine ({e.strerror})") from e
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise UsageError(f"--port {port}: already in use on {host}") from e
            if e.errno == errno.EADDRNOTAVAIL:
                raise UsageError(f"--host {host}: not an address of this machine") from e
            raise UsageError(f"cannot listen on {host}:{port} ({e.strerror or e})") from e
        return int(s.getsockname()[1])


@app.command()
def worker(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", help="Port to listen on (0: a free one, printed).")
    ] = DEFAULT_PORT,
    device: Annotated[
        list[str] | None,
        typer.Option(
            "--device", help="Device to offer (repeatable); default: every GPU, else the CPU."
        ),
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option(
            "--cache", help="Tensor cache, so weights are not sent again on the next load."
        ),
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", "-t", help="CPU threads (default: the usable cores).")
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Keep no tensor cache.")] = False,
    allow_remote: Annotated[
        bool,
        typer.Option("--allow-remote", help="Listen on an address other than loopback (insecure)."),
    ] = False,
) -> None:
    """Offer this machine's devices to `--rpc` runs on other machines (llama.cpp's RPC server).

    Listens on 127.0.0.1 unless --allow-remote: llama.cpp's RPC has no
    authentication or encryption; carry it over an SSH tunnel or a private network."""
    from edgeglm import paths
    from edgeglm.hardware import usable_threads
    from edgeglm.rpc import engine

    try:
        if not 0 <= port < 65536:
            raise UsageError(f"--port {port}: expected 0 to 65535")
        if not _is_loopback(host) and not allow_remote:
            raise UsageError(
                f"--host {host}: not loopback; add --allow-remote to expose this machine "
                "(llama.cpp's RPC has no authentication), or use an SSH tunnel"
            )
        port = _check_bind(host, port)
        devices = engine.served_devices(list(device or []))
        cache_dir = None
        if not no_cache:
            cache_dir = cache or paths.cache_dir() / "rpc"
            cache_dir.mkdir(parents=True, exist_ok=True)
        n_threads = threads or usable_threads()
    except EdgeGLMError as e:
        _fail(e)
    endpoint = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if not _is_loopback(host):
        err.print(f"[bold yellow]warning:[/] {INSECURE.format(endpoint=endpoint, port=port)}")
    out.print(f"edgeglm worker listening on {endpoint}", highlight=False)
    for d in devices:
        out.print(
            f"  {d.name}: {d.description} ({d.free >> 20} MiB free of {d.total >> 20} MiB)",
            highlight=False,
        )
    out.print(f"  tensor cache: {cache_dir or 'off'}", highlight=False)
    out.file.flush()
    # llama.cpp's accept loop blocks in C, where Ctrl-C cannot reach it: it
    # runs in a daemon thread, and the main thread waits for the signal.
    done = threading.Event()

    def serve() -> None:
        engine.start_server(endpoint, cache_dir, n_threads, devices)
        done.set()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    while not done.wait(0.5):  # Ctrl-C: "interrupted", exit 130, as every command
        pass
    err.print(f"error: llama.cpp's RPC server could not listen on {endpoint}")
    raise typer.Exit(6)
