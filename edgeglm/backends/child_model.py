"""A llama.cpp model that lives in a child process, behind the Backend protocol.

Runs across machines (``--rpc``) load this way: ggml-rpc aborts the process
(GGML_ABORT) when a worker dies or stops answering mid-run, and its sockets
have no timeouts. Here only the child dies; the parent sees the pipe close,
asks each worker (bounded) which one is gone, and raises one ``BackendError``
naming it, while ggml's abort text stays in the child's stderr file.

Every wait on the child is bounded: ``load_timeout`` for the load,
``reply_timeout`` for each reply (a token, a score, a tokenization).

Processes that already isolate llama.cpp (``edgeglm serve``'s engine child)
set ``IN_CHILD`` so they load in-process instead of nesting another child.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import tempfile
from collections.abc import Callable, Generator
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeglm.backends.base import Capabilities, Chunk, Completion, SamplingParams
from edgeglm.backends.isolated import _describe, _keep_log, _native_message, _summary
from edgeglm.errors import BackendError, EdgeGLMError
from edgeglm.planner.launch import LaunchSpec

IN_CHILD = False
LOAD_TIMEOUT_S = 3600.0  # weights may cross a slow link the first time
REPLY_TIMEOUT_S = 300.0  # one token or one scoring pass: generous, but bounded


def _child_main(
    conn: Connection, spec: LaunchSpec, opts: dict[str, Any], stderr_path: str | None
) -> None:
    global IN_CHILD
    IN_CHILD = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent owns Ctrl-C
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if stderr_path is not None:
        fd = os.open(stderr_path, os.O_WRONLY | os.O_APPEND)
        os.dup2(fd, 2)
        os.dup2(fd, 1)  # ggml's abort prints its gdb backtrace on stdout: the log keeps it
        os.close(fd)

    from edgeglm.backends.llamacpp import LlamaCppModel

    try:
        model = LlamaCppModel.from_spec(spec, **opts)
    except EdgeGLMError as e:
        conn.send(("error", e))
        return
    except Exception as e:
        conn.send(("error", BackendError(f"llama.cpp failed to load: {_summary(e)}")))
        return
    conn.send(("ok", (model.capabilities, dict(model.metadata), model.n_ctx, model.settings)))
    while True:
        try:
            op, args, kwargs = conn.recv()
        except EOFError:
            return
        if op == "close":
            return
        try:
            if op == "generate":
                _stream(conn, model.generate(*args))
            else:
                conn.send(("ok", getattr(model, op)(*args, **kwargs)))
        except EdgeGLMError as e:
            conn.send(("error", e))
        except Exception as e:
            conn.send(("error", BackendError(f"llama.cpp failed: {_summary(e)}")))


def _stream(conn: Connection, gen: Generator[Chunk, None, Completion]) -> None:
    """Chunks until the generator returns, or until the parent cancels."""
    while True:
        if conn.poll() and conn.recv()[0] == "cancel":
            gen.close()
            conn.send(("ok", None))
            return
        try:
            chunk = next(gen)
        except StopIteration as stop:
            conn.send(("ok", stop.value))
            return
        conn.send(("chunk", chunk))


class ChildModel:
    """LlamaCppModel's surface, forwarded to a child process."""

    name = "llama.cpp"

    def __init__(
        self,
        spec: LaunchSpec,
        *,
        logits_all: bool = False,
        verbose: bool = False,
        n_seq_max: int = 1,
        diagnose: Callable[[], BackendError | None] | None = None,
        load_timeout: float = LOAD_TIMEOUT_S,
        reply_timeout: float = REPLY_TIMEOUT_S,
    ) -> None:
        """``diagnose``: asked after the child dies or stalls, for the error
        that says why (e.g. which worker is gone); None: a generic one."""
        self.spec = spec
        self.path = spec.artifact
        self._diagnose = diagnose
        self._reply_timeout = reply_timeout
        self._dead: BackendError | None = None
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._log_fd: int | None = None
        log_path: str | None = None
        if not verbose:  # native output (ggml's abort text) goes to a file, not the user
            self._log_fd, log_path = tempfile.mkstemp(prefix="edgeglm-child-")
        opts = {"logits_all": logits_all, "verbose": verbose, "n_seq_max": n_seq_max}
        self._proc = ctx.Process(
            target=_child_main, args=(child, spec, opts, log_path), daemon=True
        )
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # as isolated.py
        try:
            self._proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        child.close()
        self._log_path = log_path
        try:
            caps, meta, n_ctx, settings = self._reply(load_timeout)
        except BaseException:
            self.close()
            raise
        self.capabilities: Capabilities = caps
        self.metadata: dict[str, str] = meta
        self.n_ctx: int = n_ctx
        self.settings: dict[str, Any] = settings

    # -- the pipe ------------------------------------------------------------

    def _lost(self, why: str) -> BackendError:
        """The child is gone or stuck: stop it and say why, once."""
        if self._proc.is_alive():
            self._proc.kill()
        self._proc.join(10)
        error = self._diagnose() if self._diagnose else None
        if error is None:
            native = _native_message(self._log_fd)
            kept = _keep_log(self._log_fd) if why == "crashed" else None
            error = BackendError(
                f"llama.cpp {why}{_describe(self._proc.exitcode) if why == 'crashed' else ''}"
                + (f": {native}" if native else "")
                + (f" (full log: {kept})" if kept else "")
            )
        self._dead = error
        return error

    def _recv(self, timeout: float) -> tuple[str, Any]:
        if self._dead is not None:
            raise self._dead
        try:
            if not self._conn.poll(timeout):
                raise self._lost(f"did not answer within {timeout:g} s")
            msg: tuple[str, Any] = self._conn.recv()
        except (EOFError, ConnectionError, OSError):
            raise self._lost("crashed") from None
        except KeyboardInterrupt:
            self._lost("was interrupted")
            raise
        return msg

    def _reply(self, timeout: float) -> Any:
        kind, value = self._recv(timeout)
        if kind == "error":
            raise value
        return value

    def _call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        if self._dead is not None:
            raise self._dead
        try:
            self._conn.send((op, args, kwargs))
        except (ConnectionError, OSError):
            raise self._lost("crashed") from None
        return self._reply(self._reply_timeout)

    # -- the Backend protocol ------------------------------------------------

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        return self._call("tokenize", text, special=special)  # type: ignore[no-any-return]

    def detokenize(self, tokens: list[int]) -> str:
        return self._call("detokenize", tokens)  # type: ignore[no-any-return]

    def chat_template(self) -> str | None:
        return self.metadata.get("tokenizer.chat_template")

    def score(self, tokens: list[int]) -> npt.NDArray[np.float32]:
        return np.asarray(self._call("score", tokens), dtype=np.float32)

    def tensor_overrides(self) -> list[tuple[str, str]]:
        return self._call("tensor_overrides")  # type: ignore[no-any-return]

    def generate(
        self, prompt: list[int], params: SamplingParams
    ) -> Generator[Chunk, None, Completion]:
        if self._dead is not None:
            raise self._dead
        self._conn.send(("generate", (prompt, params), {}))
        done = False
        try:
            while True:
                kind, value = self._recv(self._reply_timeout)
                if kind == "chunk":
                    yield value
                    continue
                done = True
                if kind == "error":
                    raise value
                return value  # type: ignore[no-any-return]
        finally:
            if not done and self._dead is None and self._proc.is_alive():
                self._conn.send(("cancel", (), {}))  # the consumer stopped early
                while self._recv(self._reply_timeout)[0] == "chunk":
                    pass

    def close(self) -> None:
        if self._proc.is_alive() and self._dead is None:
            with contextlib.suppress(OSError):
                self._conn.send(("close", (), {}))
            self._proc.join(30)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        self._conn.close()
        if self._log_fd is not None and self._log_path is not None:
            os.close(self._log_fd)
            os.unlink(self._log_path)
            self._log_fd = None
