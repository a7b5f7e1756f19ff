"""The chat transcript: one widget per turn, and the live stats line."""

from __future__ import annotations

import asyncio

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Collapsible, Markdown, Static

from .store import Turn
from .thinking import ThinkSplitter


class UserMessage(Static):
    DEFAULT_CSS = """
    UserMessage {
        margin: 1 0 0 6;
        padding: 0 1;
        background: $primary 15%;
        border-left: thick $primary;
    }
    """

    def __init__(self, text: str) -> None:
        # the user's words shown as typed: no markup, no Markdown surprises
        super().__init__(text, markup=False)
        self.text = text


class AssistantMessage(Vertical):
    """A reply; streamed text is split live into a collapsed <think> block and the answer.

    The chat screen appends text a few dozen times a second at most (see
    streaming.py), so each append goes straight to ``Markdown.append``, which
    re-parses only from the last block on. Appends are serialized: two in
    flight would interleave their Markdown updates.
    """

    DEFAULT_CSS = """
    AssistantMessage { height: auto; margin: 1 2 0 0; border-left: thick $accent; }
    AssistantMessage Collapsible { margin: 0; padding: 0; border-top: none; background: $surface; }
    AssistantMessage Collapsible.-empty { display: none; }
    AssistantMessage Markdown { margin: 0; padding: 0 1; }
    AssistantMessage #think Markdown { color: $text-muted; }
    AssistantMessage .note { color: $warning; padding: 0 1; }
    """

    def __init__(self, turn: Turn | None = None) -> None:
        super().__init__()
        self._turn = turn
        self._splitter = ThinkSplitter()
        self._lock = asyncio.Lock()
        self.raw = ""  # everything the model said, <think> tags included

    def compose(self) -> ComposeResult:
        turn = self._turn
        think = turn.reasoning if turn else None
        with Collapsible(
            title="Thinking", collapsed=True, id="think", classes="" if think else "-empty"
        ):
            yield Markdown(think or "", id="think-md")
        yield Markdown(turn.content if turn else "", id="answer")
        if turn and turn.stopped:
            yield Static("⏹ stopped", classes="note")

    async def append(self, text: str) -> None:
        async with self._lock:
            self.raw += text
            for part, piece in self._splitter.feed(text):
                await self._write(part, piece)

    async def _write(self, part: str, piece: str) -> None:
        if part == "think":
            box = self.query_one("#think", Collapsible)
            if box.has_class("-empty"):
                box.remove_class("-empty")
                box.title = "Thinking…"
        md = self.query_one("#think-md" if part == "think" else "#answer", Markdown)
        await md.append(piece)

    async def finish(self, note: str | None = None) -> None:
        async with self._lock:
            for part, piece in self._splitter.flush():
                await self._write(part, piece)
            self.query_one("#think", Collapsible).title = "Thinking"
            if note:
                await self.mount(Static(note, classes="note", markup=False))


class StatsBar(Static):
    """One line: model, time to first token, tokens/s, context used, state."""

    DEFAULT_CSS = """
    StatsBar { height: 1; padding: 0 1; background: $panel; color: $text-muted; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", markup=False, id=id)

    def show(
        self,
        *,
        model: str,
        state: str,
        ttft: float | None = None,
        tps: float | None = None,
        ctx_used: int | None = None,
        n_ctx: int | None = None,
    ) -> None:
        parts = [model]
        if ttft is not None:
            parts.append(f"TTFT {ttft * 1000:.0f} ms")
        if tps is not None:
            parts.append(f"{tps:.1f} tok/s")
        if ctx_used is not None and n_ctx:
            parts.append(f"ctx {ctx_used}/{n_ctx}")
        parts.append(state)
        self.update(" · ".join(parts))
