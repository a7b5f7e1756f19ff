"""Run llama.cpp work in a child process, so a native abort cannot take us down.

llama.cpp calls abort() on some malformed models (GGML_ASSERT), and a few
kernels crash outright; either kills the whole Python process. Loading an
untrusted file first in a child turns that into a BackendError the CLI (or a
server, or the TUI) can report.
"""

from __future__ import annotations

import multiprocessing
import signal
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from edgeglm.errors import BackendError, EdgeGLMError

R = TypeVar("R")


def _child(conn: Connection, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        conn.send(("ok", fn(*args)))
    except EdgeGLMError as e:
        conn.send(("error", e))
    except BaseException as e:  # reported to the parent with its traceback
        conn.send(("raise", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
    finally:
        conn.close()


def run_isolated(
    fn: Callable[..., R], *args: Any, what: str = "llama.cpp", timeout: float | None = None
) -> R:
    """``fn(*args)`` in a fresh spawned process; arguments and result must pickle."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, fn, args), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout):
            raise BackendError(f"{what} did not finish within {timeout} s")
        status, payload = parent.recv()
    except EOFError:
        proc.join()
        raise BackendError(
            f"{what} crashed{_describe(proc.exitcode)}; the model is unusable here"
        ) from None
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        parent.close()
    if status == "ok":
        return payload  # type: ignore[no-any-return]
    if status == "error":
        raise payload
    raise BackendError(f"{what} failed in a child process: {payload}")


def _describe(exitcode: int | None) -> str:
    if exitcode is None or exitcode >= 0:
        return f" (exit code {exitcode})"
    try:
        return f" ({signal.Signals(-exitcode).name})"
    except ValueError:
        return f" (signal {-exitcode})"
