"""The chat transcript: one widget per turn, and the live stats line."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Collapsible, Markdown, Static
from textual.widgets.markdown import MarkdownStream

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
    """A reply; streamed text is split live into a collapsed <think> block and the answer."""

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
        self._streams: dict[str, MarkdownStream] = {}
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

    def _stream(self, part: str) -> MarkdownStream:
        if part not in self._streams:
            md = self.query_one("#think-md" if part == "think" else "#answer", Markdown)
            self._streams[part] = Markdown.get_stream(md)
        return self._streams[part]

    async def append(self, text: str) -> None:
        self.raw += text
        for part, piece in self._splitter.feed(text):
            await self._write(part, piece)

    async def _write(self, part: str, piece: str) -> None:
        if part == "think":
            box = self.query_one("#think", Collapsible)
            if box.has_class("-empty"):
                box.remove_class("-empty")
                box.title = "Thinking…"
        await self._stream(part).write(piece)

    async def finish(self, note: str | None = None) -> None:
        for part, piece in self._splitter.flush():
            await self._write(part, piece)
        for stream in self._streams.values():
            await stream.stop()
        self._streams.clear()
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
