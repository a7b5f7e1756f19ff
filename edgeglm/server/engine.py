"""One thread owns the model; requests wait in a bounded queue.

llama-cpp-python's ``Llama`` is not thread-safe: two requests decoding in one
context at once freeze or crash the process (llama-cpp-python issues 1367,
1995). So every call into the backend (tokenize, generate, close) happens on
one engine thread, one job at a time, and the HTTP side only talks to it
through queues:

- ``submit`` puts a job in the waiting line, or refuses it with 503 and
  ``Retry-After`` when ``queue_size`` jobs are already waiting: an overloaded
  server answers at once instead of letting clients hang;
- the engine thread sends each job's events (``start``, ``chunk``, ``done``
  or ``error``) to the job's asyncio queue on the server's event loop;
- ``Job.cancel`` (a client that went away) is checked between tokens: the
  generation stops at the next token and the next job starts. A job cancelled
  while it waits never runs.

llama-cpp-python reuses the longest common prompt prefix of consecutive
generations (``Llama.generate``), so a conversation that grows turn by turn
only prefills its new tokens.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from edgeglm.backends.base import Backend, Chunk, Completion, SamplingParams
from edgeglm.errors import EdgeGLMError, UsageError
from edgeglm.server.metrics import Metrics
from edgeglm.server.schemas import APIError

log = logging.getLogger("edgeglm.server")

# Seconds a refused client is told to wait before trying again.
RETRY_AFTER_S = 1

EventKind = Literal["start", "chunk", "done", "error"]


@dataclass(eq=False)  # a job is itself: compared by identity
class Job:
    text: str  # the rendered prompt, or the raw text to continue
    params: SamplingParams
    loop: asyncio.AbstractEventLoop | None  # None in the engine's child process (child.py)
    special: bool = True  # parse special tokens (<|user|>...) in the text
    what: str = "messages"  # the request field the prompt came from (for errors)
    events: asyncio.Queue[tuple[EventKind, Any]] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    queued_at: float = field(default_factory=time.perf_counter)
    id: int = 0  # the job's number between the server and its engine process
    on_cancel: Callable[[], None] | None = None

    def cancel(self) -> None:
        first = not self.cancelled.is_set()
        self.cancelled.set()
        if first and self.on_cancel is not None:
            self.on_cancel()


class Engine:
    """The model's one owner (see the module docstring)."""

    def __init__(self, model: Backend, *, queue_size: int, metrics: Metrics) -> None:
        self.model = model
        self.queue_size = queue_size
        self.metrics = metrics
        n_ctx = getattr(model, "n_ctx", None)
        self.n_ctx: int | None = int(n_ctx) if isinstance(n_ctx, int) else None
        self._waiting: collections.deque[Job] = collections.deque()
        self._cv = threading.Condition()
        self._stopping = False
        self.alive = True
        self._thread = threading.Thread(target=self._run, name="edgeglm-engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue ``job``, or APIError 503 (with Retry-After) when the line is full."""
        with self._cv:
            if not self.alive or self._stopping:
                raise APIError(
                    503,
                    "the model is not available",
                    type="unavailable_error",
                    code="model_unavailable",
                    headers={"Retry-After": str(RETRY_AFTER_S)},
                )
            if len(self._waiting) >= self.queue_size:
                raise APIError(
                    503,
                    f"the server is busy ({self.queue_size} requests waiting); try again shortly",
                    type="unavailable_error",
                    code="queue_full",
                    headers={"Retry-After": str(RETRY_AFTER_S)},
                )
            self._waiting.append(job)
            job.on_cancel = lambda: self._drop(job)
            self.metrics.queue_depth.set(len(self._waiting))
            self._cv.notify()

    def _drop(self, job: Job) -> None:
        """A cancelled job leaves the line at once (its place is free for another)."""
        with self._cv:
            if job in self._waiting:
                self._waiting.remove(job)
                self.metrics.queue_depth.set(len(self._waiting))

    def close(self, timeout: float = 30.0) -> None:
        """Stop after the current token, refuse what waits, close the model (on its thread)."""
        with self._cv:
            self._stopping = True
            waiting, self._waiting = list(self._waiting), collections.deque()
            self._cv.notify()
        for job in waiting:
            job.cancel()
            self._send(
                job, "error", APIError(503, "the server is shutting down", type="unavailable_error")
            )
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- the engine thread ------------------------------------------------------------

    def _next(self) -> Job | None:
        with self._cv:
            while not self._waiting and not self._stopping:
                self._cv.wait()
            if self._stopping:
                return None
            job = self._waiting.popleft()
            self.metrics.queue_depth.set(len(self._waiting))
            return job

    def _run(self) -> None:
        try:
            while (job := self._next()) is not None:
                if job.cancelled.is_set():
                    continue
                self.metrics.running.inc()
                try:
                    self._generate(job)
                finally:
                    self.metrics.running.dec()
        finally:
            self.alive = False
            with contextlib.suppress(Exception):
                self.model.close()

    @staticmethod
    def _send(job: Job, kind: EventKind, value: Any) -> None:
        if job.loop is None:
            return
        try:
            job.loop.call_soon_threadsafe(job.events.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is gone (server shutting down)
            job.cancel()

    def _generate(self, job: Job) -> None:
        try:
            tokens = self.model.tokenize(job.text, special=job.special)
            if not tokens:
                raise APIError(400, f"the {job.what} have no tokens", param=job.what)
            if self.n_ctx is not None and len(tokens) >= self.n_ctx:
                raise APIError(
                    400,
                    f"the prompt is {len(tokens)} tokens; this server's context holds "
                    f"{self.n_ctx} (and the reply needs room)",
                    param=job.what,
                    code="context_length_exceeded",
                )
            self._send(job, "start", len(tokens))
            stream = self.model.generate(tokens, job.params)
            first = True
            while True:
                if job.cancelled.is_set():
                    stream.close()  # stops llama.cpp at this token
                    self.metrics.cancelled.inc()
                    return
                try:
                    chunk: Chunk = next(stream)
                except StopIteration as stop:
                    done: Completion = stop.value
                    self._account(job, done)
                    self._send(job, "done", done)
                    return
                if first:
                    self.metrics.ttft.observe(time.perf_counter() - job.queued_at)
                    first = False
                self._send(job, "chunk", chunk)
        except APIError as e:
            self._send(job, "error", e)
        except UsageError as e:
            self._send(job, "error", APIError(400, str(e), param=job.what))
        except EdgeGLMError as e:
            self._send(job, "error", APIError(500, str(e), type="server_error"))
        except Exception as e:  # a backend bug must not end the engine thread
            log.exception("generation failed")
            self._send(job, "error", APIError(500, f"generation failed: {e}", type="server_error"))

    def _account(self, job: Job, done: Completion) -> None:
        t = done.timings
        self.metrics.prompt_tokens.inc(t.prompt_tokens)
        self.metrics.completion_tokens.inc(t.completion_tokens)
        if t.decode_tokens_per_second:
            self.metrics.decode_tps.set(t.decode_tokens_per_second)
