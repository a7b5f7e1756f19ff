"""Generated tokens to streamed text, for every backend.

Two steps, each holding text back until it is safe to show: ``TokenText``
waits for whole characters (byte-level BPE splits a character across tokens),
``StopStrings`` waits until text cannot be the start of a stop string, so a
caller never shows half of "<|user|>".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


class StopStrings:
    """Finds stop strings in streamed text without emitting a partial match."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._held = ""

    def feed(self, piece: str) -> tuple[str, bool]:
        """(text safe to emit, stopped?); after a stop, the text before it."""
        text = self._held + piece
        hits = [i for s in self.stops if (i := text.find(s)) >= 0]
        if hits:
            self._held = ""
            return text[: min(hits)], True
        keep = max(
            (k for s in self.stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0
        )
        self._held = text[len(text) - keep :]
        return text[: len(text) - keep], False

    def flush(self) -> str:
        """What was held back: generation ended without completing a stop string."""
        held, self._held = self._held, ""
        return held


class TokenText:
    """Token ids in, whole characters out, for a tokenizer that decodes id lists to str.

    A token's text is known only once the next ones complete its character, so
    each push decodes the last few tokens with one token of context before them
    and returns what they add, or nothing while the text ends in an incomplete
    UTF-8 sequence.
    """

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self.decode = decode
        self.tokens: list[int] = []
        self.emitted = 0  # characters returned so far
        self._prefix = self._read = 0  # tokens decoded as context / already returned

    def push(self, token: int) -> str:
        self.tokens.append(token)
        before = self.decode(self.tokens[self._prefix : self._read])
        after = self.decode(self.tokens[self._prefix :])
        if after.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for more
            return ""
        self._prefix, self._read = self._read, len(self.tokens)
        new = after[len(before) :]
        self.emitted += len(new)
        return new

    def flush(self) -> str:
        """The rest, an incomplete character included (generation ended mid-character)."""
        rest = (self.decode(self.tokens) if self.tokens else "")[self.emitted :]
        self.emitted += len(rest)
        return rest
