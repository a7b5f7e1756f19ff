"""Split a streamed GLM reply into its <think> reasoning and its answer, live.

``edgeglm.chat.split_thinking`` splits a finished reply; while tokens stream
the tags arrive in pieces ("<th", "ink>"), so text that could still be the
start of a tag is held back until the next piece decides it.
"""

from __future__ import annotations

from typing import Literal

Part = Literal["think", "answer"]
OPEN, CLOSE = "<think>", "</think>"


class ThinkSplitter:
    def __init__(self) -> None:
        self.state: Part | None = None  # None: nothing seen yet, a <think> may still come
        self._held = ""

    def feed(self, piece: str) -> list[tuple[Part, str]]:
        text = self._held + piece
        self._held = ""
        out: list[tuple[Part, str]] = []
        while text:
            if self.state is None:
                stripped = text.lstrip()
                if stripped.startswith(OPEN):
                    self.state = "think"
                    text = stripped[len(OPEN) :]
                    continue
                if OPEN.startswith(stripped):  # maybe the start of "<think>": wait
                    self._held = text
                    return out
                self.state = "answer"
                continue
            if self.state == "answer":
                out.append(("answer", text))
                return out
            i = text.find(CLOSE)
            if i >= 0:
                if i:
                    out.append(("think", text[:i]))
                self.state = "answer"
                text = text[i + len(CLOSE) :].lstrip("\n")
                continue
            keep = _partial_suffix(text, CLOSE)
            if len(text) > keep:
                out.append(("think", text[: len(text) - keep]))
            self._held = text[len(text) - keep :]
            return out
        return out

    def flush(self) -> list[tuple[Part, str]]:
        held, self._held = self._held, ""
        if not held:
            return []
        return [("think" if self.state == "think" else "answer", held)]


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that is a proper prefix of ``tag``."""
    for k in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:k]):
            return k
    return 0
