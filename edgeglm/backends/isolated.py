"""Run llama.cpp work in a child process, so a native abort cannot take us down.

llama.cpp calls abort() on some malformed models (GGML_ASSERT), and a few
kernels crash outright; either kills the whole Python process. Loading an
untrusted file first in a child turns that into a BackendError the CLI (or a
server, or the TUI) can report.

The child's stderr and stdout go to a temporary file rather than the terminal: native
code writes there (ggml's ``GGML_ASSERT(...) failed``, and the gdb backtrace
ggml adds when gdb is installed), and a crash is reported as one line that
carries the assertion and names a copy of the whole log kept under the cache
folder's ``logs/``. An unexpected
Python exception in the child is reported in one line too (its type and
message); its traceback goes to the ``edgeglm`` logger at debug level,
to stderr when ``EDGEGLM_DEBUG=1``, and rides along as the error's
``__cause__`` (a ``ChildTraceback``) for code that wants it.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from itertools import count
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

from edgeglm.errors import BackendError, EdgeGLMError
from edgeglm.paths import cache_dir

R = TypeVar("R")
log = logging.getLogger("edgeglm")
# Longest exception message from a child that goes into the one-line error.
_MESSAGE_CHARS = 400
_crash_ids = count()


class ChildTraceback(Exception):
    """The traceback of an exception raised in a child process, as text."""


def _child(
    conn: Connection, fn: Callable[..., Any], args: tuple[Any, ...], stderr_path: str | None
) -> None:
    # The parent owns Ctrl-C (it kills this child); see run_isolated.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if stderr_path is not None:
        fd = os.open(stderr_path, os.O_WRONLY | os.O_APPEND)
        os.dup2(fd, 2)
        # stdout too: ggml's abort runs gdb, which prints its backtrace there; the
        # result travels through the pipe, not stdout.
        os.dup2(fd, 1)
        os.close(fd)
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
    debug = os.environ.get("EDGEGLM_DEBUG") == "1"
    log_fd, log_path = (None, None) if debug else tempfile.mkstemp(prefix="edgeglm-child-")
    proc = ctx.Process(target=_child, args=(child, fn, args, log_path), daemon=True)
    try:
        # Ctrl-C at a terminal reaches the whole process group. A child hit
        # while Python is still importing would print a KeyboardInterrupt
        # traceback over the parent's message, so it starts with SIGINT
        # blocked (the mask survives fork and exec) and ignores it once
        # running; a Ctrl-C that arrives meanwhile is delivered to the parent
        # as soon as the mask is restored.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        child.close()
        if not parent.poll(timeout):
            raise BackendError(f"{what} did not finish within {timeout} s")
        status, payload = parent.recv()
    except EOFError:
        proc.join()
        native = f": {line}" if (line := _native_message(log_fd)) else ""
        kept = f" (full log: {path})" if (path := _keep_log(log_fd)) else ""
        raise BackendError(
            f"{what} crashed{_describe(proc.exitcode)}{native}; the model is unusable here{kept}"
        ) from None
    finally:
        if proc.is_alive():
            proc.kill()
        if proc.pid is not None:
            proc.join()
        parent.close()
        if log_fd is not None and log_path is not None:
            os.close(log_fd)
            os.unlink(log_path)
    if status == "ok":
        return payload  # type: ignore[no-any-return]
    if status == "error":
        raise payload
    summary, child_tb = payload
    log.debug("%s failed in a child process:\n%s", what, child_tb)
    if os.environ.get("EDGEGLM_DEBUG") == "1":
        sys.stderr.write(f"{what} failed in a child process:\n{child_tb}")
    raise BackendError(f"{what} failed in a child process: {summary}") from ChildTraceback(child_tb)


# ggml_abort's own line, "<path>/ggml.c:3354: GGML_ASSERT(x) failed", as opposed to
# the gdb backtrace lines that follow it ("#3 0x... in f () at ggml.c:3354").
_ABORT_LINE = re.compile(r"^(?:\S*/)?([^/\s]+:\d+): (.+)$")
# The log tail searched for that line: a gdb backtrace is a few hundred lines.
_TAIL_BYTES = 1 << 20


def _native_message(fd: int | None) -> str:
    """ggml's abort message as ``GGML_ASSERT(x) failed at ggml.c:3354``, or else
    the last line native code wrote to the child's stderr."""
    if fd is None:
        return ""
    size = os.fstat(fd).st_size
    tail = os.pread(fd, _TAIL_BYTES, max(0, size - _TAIL_BYTES)).decode("utf-8", "replace")
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    if not lines:
        return ""
    aborts = [m for ln in lines if (m := _ABORT_LINE.match(ln))]
    if aborts:
        line = f"{aborts[-1].group(2)} at {aborts[-1].group(1)}"
    else:
        line = re.sub(r"\S*/([^/\s]+:\d+:)", r"\1", lines[-1])
    return line if len(line) <= _MESSAGE_CHARS else line[: _MESSAGE_CHARS - 1] + "…"


def _keep_log(fd: int | None) -> Path | None:
    """A copy of the crashed child's whole stderr under the cache's logs/ folder."""
    if fd is None or os.fstat(fd).st_size == 0:
        return None
    try:
        folder = cache_dir() / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = folder / f"crash-{stamp}-{os.getpid()}-{next(_crash_ids)}.log"
        tmp = path.with_suffix(".log.tmp")
        with open(tmp, "wb") as out:
            out.write(os.pread(fd, os.fstat(fd).st_size, 0))
        tmp.replace(path)
    except OSError:
        return None  # the one-line message still stands
    return path


def _describe(exitcode: int | None) -> str:
    if exitcode is None or exitcode >= 0:
        return f" (exit code {exitcode})"
    try:
        return f" ({signal.Signals(-exitcode).name})"
    except ValueError:
        return f" (signal {-exitcode})"
