"""The engine in a child process: a model that crashes takes down only the child.

llama.cpp aborts on some inputs and models (GGML_ASSERT) and a few kernels
segfault; either ends the process it runs in. ``edgeglm serve`` therefore
loads the model and runs its engine (engine.py or slots.py, unchanged) in a
spawned child. The server process keeps the HTTP side and talks to the child
over one pipe:

- parent -> child: ``("submit", id, text, params, special, what)``,
  ``("cancel", id)``, ``("stop",)``;
- child -> parent: ``("ready", info)`` or ``("load_error", EdgeGLMError)``
  once, then ``("event", id, kind, value)`` for each job event and
  ``("metric", name, method, args)`` for each metric update (the parent owns
  the Prometheus registry).

The parent bounds the line itself: at most ``parallel + queue_size`` jobs are
in the child at once; past that, 503 with Retry-After. If the child dies, a
reader thread sees the pipe close: every job in flight gets an error (a
stream ends with an error event, never hangs), new requests get 503, and
``/health`` answers 503 with the reason, while the server stays up.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from edgeglm.cli.run import LoadOptions
from edgeglm.errors import BackendError, EdgeGLMError
from edgeglm.server.engine import RETRY_AFTER_S, Engine, Job
from edgeglm.server.metrics import Metrics
from edgeglm.server.schemas import APIError

log = logging.getLogger("edgeglm.server")
# Loading (and converting a checkpoint on first use) can take long; a child
# that has said nothing after this long is stuck.
LOAD_TIMEOUT_S = 3600.0
# After a crash the engine is started again, RESTART_DELAY_S later and twice
# as long each further time, until a request completes; ``restarts`` crashes
# in a row leave it down (a model that crashes on load, or on every request,
# must not spin).
RESTART_DELAY_S = 1.0


@dataclass(frozen=True)
class LoadRequest:
    """What the child loads: ``edgeglm serve``'s model flags (picklable)."""

    ref: str | None
    load: LoadOptions = field(default_factory=LoadOptions)
    parallel: int = 1
    restarts: int = 3  # crashes in a row that are restarted


@dataclass(frozen=True)
class EngineInfo:
    """What the parent needs to know of the loaded model."""

    name: str  # the backend's name
    device: str
    n_ctx: int | None  # per slot
    template: str | None
    settings: dict[str, Any]


# -- the child --------------------------------------------------------------------------


class _RemoteMetric:
    def __init__(self, send: Any, name: str, labels: tuple[str, ...] = ()) -> None:
        self._send, self._name, self._labels = send, name, labels

    def labels(self, *values: str) -> _RemoteMetric:
        return _RemoteMetric(self._send, self._name, values)

    def __getattr__(self, method: str) -> Any:
        def call(*args: float) -> None:
            self._send(("metric", self._name, self._labels, method, args))

        return call


class _RemoteMetrics:
    """Stands in for Metrics in the child: every update goes to the parent."""

    def __init__(self, send: Any) -> None:
        self._send = send

    def __getattr__(self, name: str) -> _RemoteMetric:
        return _RemoteMetric(self._send, name)


def _load(req: LoadRequest) -> Any:
    from edgeglm.backends import child_model
    from edgeglm.cli.run import load_model

    child_model.IN_CHILD = True  # this process is the isolation: load here, even with --rpc
    # ggml's abort (a lost --rpc worker) would attach gdb and print pages of
    # backtrace on the server's terminal; the parent reports the crash in one line
    os.environ.setdefault("GGML_NO_BACKTRACE", "1")

    return load_model(req.ref, req.load, n_seq_max=req.parallel)[1]


def child_main(conn: Connection, req: LoadRequest) -> None:
    """The child: load, say ready, run the engine until told to stop or the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent owns Ctrl-C
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    lock = threading.Lock()

    def send(message: Any) -> None:
        with lock, contextlib.suppress(OSError, ValueError):
            conn.send(message)

    try:
        model = _load(req)
        if req.parallel > 1 and model.name != "llama.cpp":
            model.close()
            raise BackendError(f"--parallel {req.parallel}: slots need llama.cpp, not {model.name}")
    except EdgeGLMError as e:
        send(("load_error", e))
        return
    except Exception as e:  # one line for the user; never a traceback
        send(("load_error", BackendError(f"the engine could not load the model: {e}")))
        return
    metrics: Any = _RemoteMetrics(send)
    engine: Engine
    jobs: dict[int, Job] = {}
    if req.parallel > 1:
        from edgeglm.server.slots import SlotEngine

        engine = SlotEngine(model, parallel=req.parallel, queue_size=1 << 30, metrics=metrics)
    else:
        engine = Engine(model, queue_size=1 << 30, metrics=metrics)

    def relay(job: Job, kind: str, value: Any) -> None:
        if kind in ("done", "error"):
            jobs.pop(job.id, None)
        send(("event", job.id, kind, value))

    engine._send = relay  # type: ignore[method-assign]
    info = EngineInfo(
        name=model.name,
        device=model.capabilities.device,
        n_ctx=engine.n_ctx,
        template=model.chat_template(),
        settings=dict(getattr(model, "settings", {}) or {}),
    )
    send(("ready", info))
    engine.start()
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            if message[0] == "submit":
                _, jid, text, params, special, what = message
                job = Job(text, params, None, special=special, what=what, id=jid)
                jobs[jid] = job
                engine.submit(job)
            elif message[0] == "cancel":
                found = jobs.get(message[1])
                if found is not None:
                    found.cancel()
            elif message[0] == "stop":
                break
    finally:
        engine.close()


# -- the parent -------------------------------------------------------------------------


class ProcessEngine:
    """The engine's interface (submit, n_ctx, alive, close) over a child process."""

    def __init__(self, req: LoadRequest, *, queue_size: int, metrics: Metrics) -> None:
        self.req = req
        self.queue_size = queue_size
        self.metrics = metrics
        self.alive = False
        self.failure: str | None = None  # why the child is gone
        self.n_ctx: int | None = None
        self.info: EngineInfo | None = None
        self._jobs: dict[int, Job] = {}
        self._next_id = 0
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._proc: Any = None
        self._conn: Connection | None = None
        self._stopping = threading.Event()
        self._crashes = 0  # in a row: a completed request resets it

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def launch(self, timeout: float = LOAD_TIMEOUT_S) -> EngineInfo:
        """Start the child and wait until its model is loaded; its load error
        (exit codes and all) is raised here, a crash while loading is a BackendError."""
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            self._proc = ctx.Process(
                # not a daemon: loading checks a GGUF in a child of its own
                # (backends/isolated.py). It ends when this process's pipe closes.
                target=child_main,
                args=(child, self.req),
                daemon=False,
                name="edgeglm-engine",
            )
            self._proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        child.close()
        self._conn = parent
        try:
            if not parent.poll(timeout):
                raise BackendError(f"the engine did not load the model within {timeout:g} s")
            kind, payload = parent.recv()
        except EOFError:
            self._proc.join()
            raise BackendError(
                f"the engine crashed while loading the model{_exit(self._proc.exitcode)}"
            ) from None
        except BaseException:
            self._kill()
            raise
        if kind == "load_error":
            self._kill()
            raise payload
        info: EngineInfo = payload
        self.info = info
        self.n_ctx = info.n_ctx
        self.alive = True
        threading.Thread(target=self._read, name="edgeglm-engine-reader", daemon=True).start()
        return info

    def start(self) -> None:
        """The child runs from ``launch``; nothing more to start."""

    def _post(self, message: Any) -> None:
        with self._send_lock:
            assert self._conn is not None
            self._conn.send(message)

    def submit(self, job: Job) -> None:
        with self._lock:
            if not self.alive:
                raise APIError(
                    503,
                    f"the model is not available ({self.failure or 'its engine is stopping'})",
                    type="unavailable_error",
                    code="model_unavailable",
                    headers={"Retry-After": str(RETRY_AFTER_S)},
                )
            if len(self._jobs) >= self.queue_size + self.req.parallel:
                raise APIError(
                    503,
                    f"the server is busy ({self.queue_size} requests waiting); try again shortly",
                    type="unavailable_error",
                    code="queue_full",
                    headers={"Retry-After": str(RETRY_AFTER_S)},
                )
            self._next_id += 1
            job.id = self._next_id
            self._jobs[job.id] = job
            job.on_cancel = lambda: self._cancel(job)
            try:
                self._post(("submit", job.id, job.text, job.params, job.special, job.what))
            except (OSError, ValueError):
                self._jobs.pop(job.id, None)
                raise APIError(
                    503, "the model's engine is gone", type="unavailable_error"
                ) from None

    def _cancel(self, job: Job) -> None:
        with self._lock:
            if job.id not in self._jobs or not self.alive:
                return
        with contextlib.suppress(OSError, ValueError):
            self._post(("cancel", job.id))

    def _read(self) -> None:
        assert self._conn is not None
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                break
            try:
                self._handle(message)
            except Exception:  # a bad message must not stop every reply after it
                log.exception("engine message %r", message[:2])
        self._gone()

    def _handle(self, message: Any) -> None:
        if message[0] == "event":
            _, jid, kind, value = message
            with self._lock:
                job = self._jobs.get(jid)
                if kind in ("done", "error"):
                    self._jobs.pop(jid, None)
                if kind == "done":
                    self._crashes = 0
            if job is not None:
                Engine._send(job, kind, value)
        elif message[0] == "metric":
            _, name, labels, method, args = message
            metric = getattr(self.metrics, name)
            if labels:
                metric = metric.labels(*labels)
            getattr(metric, method)(*args)

    def _gone(self) -> None:
        """The child's pipe closed: a crash, unless we stopped it."""
        proc = self._proc
        if proc is not None:
            proc.join(5)
        stopping = self._stopping.is_set()
        with self._lock:
            self.alive = False
            if self.failure is None:
                why = "stopped" if stopping else "crashed"
                self.failure = f"its engine {why}{_exit(proc.exitcode if proc else None)}"
            jobs, self._jobs = list(self._jobs.values()), {}
            self._crashes += 0 if stopping else 1
            restart = not stopping and self._crashes <= self.req.restarts
            if restart:
                delay = RESTART_DELAY_S * 2 ** (self._crashes - 1)
                self.failure += f"; restarting in {delay:g} s"
        self.metrics.running.set(0)
        self.metrics.queue_depth.set(0)
        if not stopping:
            log.error("the model's engine process %s", self.failure)
        if restart:
            threading.Thread(
                target=self._restart, args=(delay,), name="edgeglm-engine-restart", daemon=True
            ).start()
        for job in jobs:
            Engine._send(
                job,
                "error",
                APIError(
                    503,
                    f"the model is not available ({self.failure})",
                    type="unavailable_error",
                    code="engine_crashed",
                ),
            )

    def _restart(self, delay: float) -> None:
        if self._stopping.wait(delay):
            return
        self._kill()  # the old pipe
        try:
            self.launch()
        except (EdgeGLMError, OSError) as e:
            with self._lock:
                self.failure = f"its engine crashed and could not be restarted: {e}"
            log.error("the model's engine process %s", self.failure)
            return
        with self._lock:
            self.failure = None
        log.warning("the model's engine process was restarted")

    def close(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        if self._proc is None:
            return
        with contextlib.suppress(OSError, ValueError, AssertionError):
            self._post(("stop",))
        self._proc.join(timeout)
        self._kill()

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.is_alive():
            proc.kill()
            proc.join()
        if self._conn is not None:
            self._conn.close()


def _exit(code: int | None) -> str:
    if code is None or code == 0:
        return ""
    if code < 0:
        try:
            return f" ({signal.Signals(-code).name})"
        except ValueError:
            return f" (signal {-code})"
    return f" (exit code {code})"
