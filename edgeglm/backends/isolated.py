"""Run llama.cpp work in a child process, so a native abort cannot take us down.

llama.cpp calls abort() on some malformed models (GGML_ASSERT), and a few
kernels crash outright; either kills the whole Python process. Loading an
untrusted file first in a child turns that into a BackendError the CLI (or a
server, or the TUI) can report.

An unexpected Python exception in the child is reported in one line (its type
and message); its traceback goes to the ``edgeglm`` logger at debug level,
to stderr when ``EDGEGLM_DEBUG=1``, and rides along as the error's
``__cause__`` (a ``ChildTraceback``) for code that wants it.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from edgeglm.errors import BackendError, EdgeGLMError

R = TypeVar("R")
log = logging.getLogger("edgeglm")
# Longest exception message from a child that goes into the one-line error.
_MESSAGE_CHARS = 400


class ChildTraceback(Exception):
    """The traceback of an exception raised in a child process, as text."""


def _child(conn: Connection, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        conn.send(("ok", fn(*args)))
    except EdgeGLMError as e:
        conn.send(("error", e))
    except BaseException as e:  # the parent reports the first line, keeps the traceback
        conn.send(("raise", (_summary(e), traceback.format_exc())))
    finally:
        conn.close()


def _summary(e: BaseException) -> str:
    """``Type: message`` on one line."""
    text = " ".join(f"{type(e).__name__}: {e}".split()).removesuffix(":")
    return text if len(text) <= _MESSAGE_CHARS else text[: _MESSAGE_CHARS - 1] + "…"


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
    summary, child_tb = payload
    log.debug("%s failed in a child process:\n%s", what, child_tb)
    if os.environ.get("EDGEGLM_DEBUG") == "1":
        sys.stderr.write(f"{what} failed in a child process:\n{child_tb}")
    raise BackendError(f"{what} failed in a child process: {summary}") from ChildTraceback(child_tb)


def _describe(exitcode: int | None) -> str:
    if exitcode is None or exitcode >= 0:
        return f" (exit code {exitcode})"
    try:
        return f" ({signal.Signals(-exitcode).name})"
    except ValueError:
        return f" (signal {-exitcode})"
