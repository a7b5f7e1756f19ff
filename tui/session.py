"""The loaded model, shared by the chat worker threads.

Backends are not thread-safe (llama.cpp keeps one KV cache), and a cancelled
worker may still be inside ``generate`` when the next one starts, so every
use of the backend holds ``lock``: a new generation waits for the old thread
to notice its cancellation and let go.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from edgeglm.backends.base import Backend

from .services import BackendFactory

DEFAULT_CTX = 2048


@dataclass(frozen=True)
class ModelChoice:
    ref: str | None  # None: the bundled demo model
    backend: str = "auto"
    n_ctx: int | None = None  # None: the plan's context for this model on this machine

    @property
    def label(self) -> str:
        if self.ref is None:
            return "demo model"
        name = self.ref.rstrip("/").rsplit("/", 1)[-1]
        return name or self.ref


class ModelSession:
    def __init__(self, factory: BackendFactory, choice: ModelChoice) -> None:
        self.factory = factory
        self.choice = choice
        self.lock = threading.Lock()
        self.backend: Backend | None = None

    def open(self, choice: ModelChoice) -> Backend:
        """Replace the loaded model (runs in a worker thread: loading can take minutes)."""
        with self.lock:
            self._close_locked()
            self.choice = choice
            self.backend = self.factory(choice.ref, backend=choice.backend, n_ctx=choice.n_ctx)
            return self.backend

    @property
    def n_ctx(self) -> int:
        # llama.cpp may round the context; trust what the backend reports when it can
        n = getattr(self.backend, "n_ctx", None)
        return n if isinstance(n, int) and n > 0 else (self.choice.n_ctx or DEFAULT_CTX)

    def close(self, timeout: float = 5.0) -> None:
        # a generation that does not stop in time is left alone: freeing the
        # model under it would crash llama.cpp, and the process is exiting anyway
        if self.lock.acquire(timeout=timeout):
            try:
                self._close_locked()
            finally:
                self.lock.release()

    def _close_locked(self) -> None:
        if self.backend is not None:
            backend, self.backend = self.backend, None
            backend.close()
