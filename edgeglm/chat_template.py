"""Render untrusted chat templates in a worker process with time and memory limits.

A chat template comes with the model file (GGUF ``tokenizer.chat_template``,
tokenizer_config.json) and is a program. Jinja's immutable sandbox stops it
from escaping (no ``__class__``, no attribute writes), not from exhausting the
machine: ``{% for a in range(100000) %}{% for b in range(100000) %}`` never
ends, ``{{ 'x' * 5368709120 }}`` allocates 5 GB (Jinja even folds that constant
while *compiling*, at ~4x the string's size), ``{{ 10 ** (10 ** 10) }}`` spins
for minutes in the compiler, and a deep macro recursion can take the
interpreter down. None of that can be stopped from inside the process.

So templates compile and render in one long-lived child process:

- spawned lazily on the first render and reused, so a chat turn costs a pipe
  round trip, not a process start (compiled templates are cached there);
- its address space is capped (``RLIMIT_AS``: what it uses at start plus
  ``MEMORY_LIMIT``), so a huge allocation fails with MemoryError instead of
  being made; the output is capped at ``MAX_OUTPUT_CHARS`` while it streams,
  so many small pieces cannot add up either;
- a render that takes longer than ``timeout`` gets the worker killed; the next
  render starts a fresh one. A worker that dies (a native crash) is replaced
  the same way.

Any failure is a ``CheckpointError`` (exit 4: the model file's template is
broken) with one line saying what went wrong. Renders may come from any
thread (the TUI renders from a worker thread); one lock keeps them in turn.

Where ``RLIMIT_AS`` does not exist (Windows) or is not enforced (macOS), the
time limit and the output cap still hold.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import queue
import signal
import struct
import subprocess
import sys
import threading
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

from edgeglm.errors import CheckpointError, UsageError

# Real chat templates render in milliseconds; a template still running after
# this long is a bomb (or hopelessly slow), not a conversation.
RENDER_TIMEOUT_S = 10.0
# Starting the worker imports Python and Jinja, which a loaded laptop can make
# slow; this is not part of a render's time limit.
START_TIMEOUT_S = 120.0
# Address space the worker may add to what it holds after start-up.
MEMORY_LIMIT = 1 << 30
# A prompt longer than any context a model offers (tens of MB of text) is a bomb too.
MAX_OUTPUT_CHARS = 32 << 20
# Longest template-chosen text (an error message) we repeat to the user.
_MESSAGE_CHARS = 300

Context = dict[str, Any]


# -- the worker process ---------------------------------------------------------------


def _limit_memory(budget: int) -> bool:
    """Cap this process's address space at its current size plus ``budget``."""
    try:
        import resource

        import psutil

        limit = psutil.Process().memory_info().vms + budget
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, OSError, ValueError):
        return False  # Windows has no RLIMIT_AS; macOS may refuse it
    return True


def _one_line(text: object) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= _MESSAGE_CHARS else line[: _MESSAGE_CHARS - 1] + "…"


class _Raised(Exception):
    """What a template's ``raise_exception(message)`` raises."""


@lru_cache(maxsize=8)
def _compile(template: str) -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=False, lstrip_blocks=False)

    def raise_exception(message: str) -> None:  # Hugging Face templates refuse with it
        raise _Raised(message)

    env.globals["raise_exception"] = raise_exception
    return env.from_string(template)


def _render(template: str, context: Context, max_chars: int) -> str:
    parts: list[str] = []
    size = 0
    for piece in _compile(template).generate(**context):
        size += len(piece)
        if size > max_chars:
            raise _TooLong
        parts.append(piece)
    return "".join(parts)


class _TooLong(Exception):
    pass


def _describe(e: BaseException, memory_limit: int | None) -> tuple[str, bool]:
    """(one-line reason, must the worker restart?) for a failed render;
    ``memory_limit``: the worker's budget, None where none could be set."""
    from jinja2 import TemplateSyntaxError

    if isinstance(e, _Raised):
        return f"it refused the conversation: {_one_line(e)}", False
    if isinstance(e, TemplateSyntaxError):
        return f"syntax error on line {e.lineno}: {_one_line(e.message)}", False
    if isinstance(e, _TooLong):
        return f"its output passed the limit of {MAX_OUTPUT_CHARS >> 20} M characters", False
    if isinstance(e, MemoryError):
        limit = f"the limit of {memory_limit >> 20} MiB" if memory_limit else "available"
        return f"it needs more memory than {limit}", True
    if isinstance(e, RecursionError):
        return "it recurses without end", True
    from jinja2 import TemplateError

    if isinstance(e, TemplateError):  # SecurityError, undefined names, bad filters
        return _one_line(e.message or type(e).__name__), False
    return _one_line(f"{type(e).__name__}: {e}"), False


# -- the wire: length-prefixed JSON frames over the worker's stdin and stdout ----------
#
# JSON, not pickle: the parent never unpickles what comes from a process that
# ran untrusted code.

_HEADER = struct.Struct("<Q")


def _write_frame(stream: IO[bytes], message: object) -> None:
    data = json.dumps(message, ensure_ascii=False).encode("utf-8")
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read_frame(stream: IO[bytes]) -> Any:
    """The next message, or None at end of stream."""
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    (n,) = _HEADER.unpack(head)
    data = stream.read(n)
    return json.loads(data) if len(data) == n else None


def _worker_main() -> None:
    """The worker's loop: {template, context} in, {ok: text} or {error, restart} out."""
    import jinja2.sandbox  # noqa: F401  (loaded before the memory limit is measured)

    # The protocol owns stdout; anything else that prints goes to stderr.
    wire = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    inp = sys.stdin.buffer
    budget = int(sys.argv[2])
    limited = _limit_memory(budget)
    _write_frame(wire, {"ready": limited})
    while True:
        request = _read_frame(inp)
        if request is None:
            return  # the parent closed the pipe or died
        restart = False
        try:
            text = _render(request["template"], request["context"], MAX_OUTPUT_CHARS)
            reply: dict[str, Any] = {"ok": text}
        except BaseException as e:  # a template may raise anything; it is data, not a bug
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                return
            reason, restart = _describe(e, budget if limited else None)
            reply = {"error": reason, "restart": restart}
        try:
            _write_frame(wire, reply)
        except (MemoryError, OSError):
            return
        if restart:  # after MemoryError or RecursionError, start clean (the parent knows)
            return


# -- the parent's side ----------------------------------------------------------------

# Started with -I (no PYTHONPATH, no user site, no current folder on sys.path),
# then given the parent's path with the parent's own edgeglm first.
_BOOT = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
    "from edgeglm.chat_template import _worker_main; _worker_main()"
)


class TemplateWorker:
    """One worker process, started on first use, replaced after a kill or a crash."""

    def __init__(self, memory_limit: int = MEMORY_LIMIT) -> None:
        self.memory_limit = memory_limit
        self.memory_limited = False
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._replies: queue.Queue[Any] = queue.Queue()

    @property
    def pid(self) -> int | None:
        """The running worker's process id (None before the first render)."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def _start(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._stop()
        import edgeglm

        here = str(Path(edgeglm.__file__).resolve().parents[1])
        debug = os.environ.get("EDGEGLM_DEBUG") == "1"
        try:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-c",
                    _BOOT,
                    json.dumps([here, *sys.path]),
                    str(self.memory_limit),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=None if debug else subprocess.DEVNULL,
                # Its own session: the Ctrl-C a terminal sends to its whole
                # foreground group (to stop a reply) must not end the worker.
                start_new_session=True,
            )
        except OSError as e:
            raise CheckpointError(f"the chat template renderer could not start ({e})") from e
        self._proc, self._replies = proc, queue.Queue()
        threading.Thread(
            target=self._read, args=(proc, self._replies), daemon=True, name="edgeglm-template"
        ).start()
        ready = self._reply(START_TIMEOUT_S)
        if not isinstance(ready, dict) or "ready" not in ready:
            self._stop()
            raise CheckpointError("the chat template renderer failed to start")
        self.memory_limited = bool(ready["ready"])
        return proc

    @staticmethod
    def _read(proc: subprocess.Popen[bytes], replies: queue.Queue[Any]) -> None:
        assert proc.stdout is not None
        try:
            while (message := _read_frame(proc.stdout)) is not None:
                replies.put(message)
        except (OSError, ValueError):
            pass
        replies.put(None)  # the worker is gone

    def _reply(self, timeout: float) -> Any:
        """The worker's next message; None if it died; TimeoutError if it took too long."""
        try:
            return self._replies.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError from None

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def render(self, template: str, context: Context, *, timeout: float = RENDER_TIMEOUT_S) -> str:
        """``template`` rendered with ``context`` (JSON-shaped data), or CheckpointError."""
        try:
            request = {"template": template, "context": context}
            json.dumps(request, ensure_ascii=False).encode("utf-8")
        except (TypeError, ValueError) as e:
            raise UsageError(f"chat request cannot be passed to the template ({e})") from e
        with self._lock:
            try:
                proc = self._start()
                assert proc.stdin is not None
                with contextlib.suppress(OSError):  # it died: the reader sees that too
                    _write_frame(proc.stdin, request)
                reply = self._reply(timeout)
            except TimeoutError:
                self._stop()
                raise CheckpointError(f"it did not finish within {timeout:g} s") from None
            except BaseException:
                self._stop()  # Ctrl-C mid-render: the worker's state is unknown
                raise
            if reply is None:
                code = self._proc.wait() if self._proc is not None else None
                self._stop()
                raise CheckpointError(f"it crashed the renderer ({_exit_status(code)})")
            if reply.get("restart"):
                self._stop()
            if "ok" in reply:
                return str(reply["ok"])
            raise CheckpointError(str(reply.get("error")))

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _after_fork(self) -> None:
        # a forked child shares the pipes; it must start a worker of its own
        self._lock = threading.Lock()
        self._proc = None
        self._replies = queue.Queue()


def _exit_status(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


_WORKER = TemplateWorker()
atexit.register(_WORKER.close)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_WORKER._after_fork)


def render_template(template: str, context: Context, *, timeout: float = RENDER_TIMEOUT_S) -> str:
    """Render an untrusted Jinja chat template in the shared, bounded worker.

    Raises CheckpointError whose message says why the template failed
    (without saying which model: the caller knows that).
    """
    return _WORKER.render(template, context, timeout=timeout)


def worker() -> TemplateWorker:
    """The shared worker (tests read its pid and whether its memory is limited)."""
    return _WORKER
