"""What the generation worker hands the UI: text and counts, collected between redraws.

Posting a message per token wakes the event loop per token, and a loop that
redraws per token holds the GIL the generating thread needs between its
llama.cpp calls: the app ran at a third of ``edgeglm run``'s speed. The
worker only appends here (a lock-guarded list append); the chat screen takes
everything new on a timer, 20 times a second at most, and spaces its
redraws further apart when they take long (``next_delay``): Markdown-rendering
a long reply costs the UI thread tens of milliseconds, and while it runs, the
worker waits for the GIL after each llama.cpp call.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

# At most 20 redraws a second: smooth to the eye, idle to the CPU between.
MIN_DELAY_S = 0.05
# However slow a redraw (a long Markdown reply), new text shows this often.
MAX_DELAY_S = 0.5
# The UI thread may be busy at most 1 / DUTY of the time: the rest is the model's.
DUTY = 5


@dataclass(frozen=True)
class Taken:
    """New text since the last take, and the totals so far."""

    text: str
    tokens: int  # tokens generated so far
    t_first: float | None  # seconds from the request to the first token
    elapsed: float  # seconds from the request to the latest token


class ReplyBuffer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: list[str] = []
        self._tokens = 0
        self._t_first: float | None = None
        self._elapsed = 0.0

    def push(self, text: str, n_tokens: int, elapsed: float) -> None:
        """Called by the worker thread for every chunk the backend yields."""
        with self._lock:
            if text:
                self._parts.append(text)
            if self._t_first is None:
                self._t_first = elapsed
            self._tokens += n_tokens
            self._elapsed = elapsed

    def take(self) -> Taken:
        """Called by the UI: what is new since the last call."""
        with self._lock:
            text = "".join(self._parts)
            self._parts.clear()
            return Taken(text, self._tokens, self._t_first, self._elapsed)


def next_delay(busy_s: float) -> float:
    """Seconds until the next redraw, given the UI thread's CPU time since
    the previous one (the redraw, its layout and rendering, anything else)."""
    return max(MIN_DELAY_S, min(MAX_DELAY_S, busy_s * DUTY))


def live_tps(taken: Taken) -> float | None:
    """Decode speed so far: tokens after the first over the time since it."""
    if taken.t_first is None or taken.tokens < 2:
        return None
    span = taken.elapsed - taken.t_first
    return (taken.tokens - 1) / span if span > 0 else None
