"""Fit a conversation into the model's context window, as chat apps do.

When the history no longer fits, the oldest turns are left out of what the
model sees (whole exchanges, starting at a user message), the system prompt
always stays, and the reply keeps room to be written. Tokens are counted
with the model's own tokenizer on the prompt as its chat template renders
it, so the count is the one the backend will see.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Message = dict[str, str]
Encode = Callable[[list[Message]], list[int]]


@dataclass(frozen=True)
class Fitted:
    prompt: list[int]  # the rendered, tokenized prompt that fits
    dropped: int  # messages of the history left out, oldest first


class ContextOverflow(Exception):
    """Even the latest message alone (with the system prompt) fills the context."""

    def __init__(self, tokens: int, n_ctx: int) -> None:
        super().__init__(f"the message is {tokens} tokens; the context holds {n_ctx}")
        self.tokens = tokens
        self.n_ctx = n_ctx


def reply_room(max_tokens: int, n_ctx: int) -> int:
    """Tokens kept free for the reply: the reply's limit, at most half the context."""
    return max(1, min(max_tokens, n_ctx // 2))


def fit_context(messages: list[Message], encode: Encode, n_ctx: int, room: int) -> Fitted:
    """The longest recent part of ``messages`` whose prompt leaves ``room`` tokens free.

    ``messages`` ends with the user message to answer. The cut always falls
    before a user message, so the model never sees a reply without its
    question. Where even the last exchange leaves less than ``room``, it is
    sent anyway with what room there is (the backend stops the reply at the
    context's end); where it fills the context, ContextOverflow.
    """
    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    history = messages[len(system) :]
    starts = [i for i, m in enumerate(history) if m["role"] == "user"] or [0]

    def prompt_from(start: int) -> list[int]:
        return encode(system + history[start:])

    full = prompt_from(0)
    if len(full) + room <= n_ctx:
        return Fitted(full, 0)
    # fewer messages never make more tokens: binary search for the earliest
    # user message from which the rest fits
    lo, hi = 1, len(starts) - 1
    best: tuple[int, list[int]] | None = None
    while lo <= hi:
        mid = (lo + hi) // 2
        prompt = prompt_from(starts[mid])
        if len(prompt) + room <= n_ctx:
            best, hi = (starts[mid], prompt), mid - 1
        else:
            lo = mid + 1
    if best is not None:
        return Fitted(best[1], best[0])
    last = prompt_from(starts[-1])
    if len(last) >= n_ctx:
        raise ContextOverflow(len(last), n_ctx)
    return Fitted(last, starts[-1])
