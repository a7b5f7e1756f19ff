"""The chat screen: transcript, live stats, prompt; generation runs in a worker thread."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Input, Static
from textual.worker import get_current_worker

from edgeglm.backends.base import Completion, SamplingParams
from edgeglm.chat import render, split_thinking

from . import artifacts
from .messages import (
    GenerationEnded,
    GenerationStarted,
    ModelFailed,
    ModelLoaded,
    TokensStreamed,
)
from .modal_history import HistoryModal
from .modal_model import ModelPickerModal
from .modal_settings import SettingsModal
from .session import ModelChoice, ModelSession
from .settings import ChatSettings
from .store import Conversation, ConversationStore, Turn
from .widgets_chat import AssistantMessage, StatsBar, UserMessage
from .widgets_common import TopBar, describe_error

WELCOME = (
    "Type a message and press Enter.  Esc stops a reply.\n"
    "Ctrl+T model · Ctrl+S settings · Ctrl+O history · Ctrl+P all commands"
)


@dataclass
class LiveStats:
    """What the stats line shows while a reply streams (the worker measures the times)."""

    prompt_tokens: int = 0
    tokens: int = 0
    t_first: float | None = None


@dataclass(frozen=True)
class Ending:
    """How a reply ended: the final status line, a note under the reply, whether it is kept."""

    state: str
    note: str | None = None
    keep: bool = True  # a failed reply is shown but not added to the conversation
    stopped: bool = False
    ttft: float | None = None
    tps: float | None = None
    ctx_used: int | None = None


STOPPED = Ending("stopped", note="⏹ stopped", stopped=True)


class ChatScreen(Screen[None]):
    DEFAULT_CSS = """
    ChatScreen #log { height: 1fr; padding: 0 1; }
    ChatScreen #welcome { color: $text-muted; margin: 1 2; }
    ChatScreen .error { color: $error; margin: 1 2; }
    ChatScreen #prompt { dock: bottom; margin: 0 0 1 0; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "stop", "Stop"),
        Binding("ctrl+r", "regenerate", "Regen"),
        Binding("ctrl+l", "edit_last", "Edit last", show=False),
        Binding("up", "edit_if_empty", show=False),
        Binding("ctrl+n", "new_chat", "New"),
        Binding("ctrl+o", "history", "History"),
        Binding("ctrl+s", "settings", "Settings"),
        Binding("ctrl+t", "pick_model", "Model"),
    ]

    def __init__(self, session: ModelSession, store: ConversationStore) -> None:
        super().__init__()
        self.session = session
        self.store = store
        self.settings = ChatSettings()
        self.conv = Conversation(model=session.choice.ref)
        self.gen_id = 0
        self.reply: AssistantMessage | None = None  # the reply being streamed
        self.model_state = "loading model…"
        self._live = LiveStats()

    def compose(self) -> ComposeResult:
        yield TopBar("chat")
        with VerticalScroll(id="log"):
            yield Static(WELCOME, id="welcome")
        yield StatsBar(id="stats")
        yield Input(placeholder="Message GLM…  (Enter send · Esc stop · ↑ edit last)", id="prompt")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#prompt", Input).focus()
        self.load_model(self.session.choice)

    @property
    def generating(self) -> bool:
        return self.reply is not None

    # -- model loading ----------------------------------------------------

    @work(thread=True, exclusive=True, group="model")
    def load_model(self, choice: ModelChoice) -> None:
        self.app.call_from_thread(self._show_stats, state=f"loading {choice.label}…")
        try:
            backend = self.session.open(choice)
        except Exception as e:  # the UI boundary: every failure becomes a message
            self.post_message(ModelFailed(choice, describe_error(e)))
            return
        device = backend.capabilities.device
        self.post_message(ModelLoaded(choice, backend.name, device, self.session.n_ctx))

    def on_model_loaded(self, m: ModelLoaded) -> None:
        self.model_state = "ready"
        self.conv.model = m.choice.ref
        self._show_stats(state=f"ready ({m.name}, {m.device})")

    async def on_model_failed(self, m: ModelFailed) -> None:
        self.model_state = "no model"
        self._show_stats(state="no model: Ctrl+T to pick one")
        self.notify(m.error, title=f"Could not load {m.choice.label}", severity="error")
        # the toast fades; the reason stays in the transcript until the next message
        await self._mount(
            Static(f"⚠ Could not load {m.choice.label}: {m.error}", classes="error", markup=False)
        )

    def _show_stats(
        self,
        *,
        state: str,
        ttft: float | None = None,
        tps: float | None = None,
        ctx_used: int | None = None,
    ) -> None:
        self.query_one(StatsBar).show(
            model=self.session.choice.label,
            state=state,
            ttft=ttft,
            tps=tps,
            ctx_used=ctx_used,
            n_ctx=self.session.n_ctx,
        )

    # -- sending and streaming ------------------------------------------

    @on(Input.Submitted, "#prompt")
    async def _submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        if self.generating:
            self.notify("Still replying: Esc stops it first", severity="warning")
            return
        if self.session.backend is None:
            self.notify(f"No model ready ({self.model_state})", severity="warning")
            return
        event.input.value = ""
        self.conv.turns.append(Turn("user", text))
        self.conv.retitle()
        await self._mount(UserMessage(text))
        await self._start_reply()

    async def _mount(self, widget: Widget) -> None:
        log = self.query_one("#log", VerticalScroll)
        for w in log.query("#welcome, .error"):
            await w.remove()
        await log.mount(widget)
        log.scroll_end(animate=False)

    async def _start_reply(self) -> None:
        self.gen_id += 1
        self.reply = AssistantMessage()
        await self._mount(self.reply)
        self._live = LiveStats()
        self._show_stats(state="generating…")
        self.generate(self.gen_id, self.conv.messages(), self.settings.sampling())

    @work(thread=True, exclusive=True, group="generate")
    def generate(self, gen_id: int, messages: list[dict[str, str]], params: SamplingParams) -> None:
        worker = get_current_worker()
        t0 = time.perf_counter()
        completion: Completion | None = None
        # the lock makes a new reply wait until a stopped one has let go of the model
        with self.session.lock:
            model = self.session.backend
            if model is None or worker.is_cancelled:
                self.post_message(GenerationEnded(gen_id, None, "no model loaded"))
                return
            try:
                prompt = model.tokenize(render(messages, model.chat_template()), special=True)
                self.post_message(GenerationStarted(gen_id, len(prompt)))
                stream = model.generate(prompt, params)
                try:
                    while not worker.is_cancelled:
                        try:
                            chunk = next(stream)
                        except StopIteration as stop:
                            completion = stop.value
                            break
                        elapsed = time.perf_counter() - t0
                        self.post_message(
                            TokensStreamed(gen_id, chunk.text, len(chunk.tokens), elapsed)
                        )
                finally:
                    stream.close()  # a stopped generation frees the backend here
            except Exception as e:
                self.post_message(GenerationEnded(gen_id, None, describe_error(e)))
                return
        self.post_message(GenerationEnded(gen_id, completion))

    def on_generation_started(self, m: GenerationStarted) -> None:
        if m.gen_id == self.gen_id:
            self._live.prompt_tokens = m.prompt_tokens

    async def on_tokens_streamed(self, m: TokensStreamed) -> None:
        if m.gen_id != self.gen_id or self.reply is None:
            return  # a stopped reply's late tokens
        log = self.query_one("#log", VerticalScroll)
        follow = log.scroll_y >= log.max_scroll_y - 1  # don't yank a user who scrolled up
        await self.reply.append(m.text)
        live = self._live
        if live.t_first is None:
            live.t_first = m.elapsed
        live.tokens += m.n_tokens
        span = m.elapsed - live.t_first
        tps = (live.tokens - 1) / span if span > 0 and live.tokens > 1 else None
        self._show_stats(
            ttft=live.t_first,
            tps=tps,
            ctx_used=live.prompt_tokens + live.tokens,
            state="generating…",
        )
        if follow:
            log.scroll_end(animate=False)

    async def on_generation_ended(self, m: GenerationEnded) -> None:
        if m.gen_id != self.gen_id or self.reply is None:
            return
        if m.error is not None:
            await self._finish_reply(Ending("error", note=f"⚠ {m.error}", keep=False))
            self.notify(m.error, title="Generation failed", severity="error")
        elif m.completion is None:
            await self._finish_reply(STOPPED)
        else:
            t = m.completion.timings
            await self._finish_reply(
                Ending(
                    f"done ({m.completion.finish_reason})",
                    ttft=t.time_to_first_token,
                    tps=t.decode_tokens_per_second,
                    ctx_used=t.prompt_tokens + t.completion_tokens,
                )
            )

    async def _finish_reply(self, end: Ending) -> None:
        """End the streamed reply; the status line shows ``end`` whatever happens on the way."""
        reply, self.reply = self.reply, None
        assert reply is not None
        log = self.query_one("#log", VerticalScroll)
        follow = log.scroll_y >= log.max_scroll_y - 1
        try:
            await reply.finish(end.note)
        finally:
            self._show_stats(state=end.state, ttft=end.ttft, tps=end.tps, ctx_used=end.ctx_used)
        if follow:
            log.scroll_end(animate=False)  # keeps the note under the reply in view
        if end.keep:
            parts = split_thinking(reply.raw)
            turn = Turn("assistant", parts.content, parts.reasoning, end.stopped)
            self.conv.turns.append(turn)
            self._save()

    def _save(self) -> None:
        try:
            self.store.save(self.conv)
        except OSError as e:
            self.notify(f"Could not save the conversation: {e}", severity="error")

    # -- actions ----------------------------------------------------------

    async def action_stop(self) -> None:
        if not self.generating:
            return
        # the UI stops at once; the worker lets go of the model at its next token
        self.workers.cancel_group(self, "generate")
        self.gen_id += 1
        await self._finish_reply(STOPPED)

    async def action_regenerate(self) -> None:
        if self.generating:
            self.notify("Still replying: Esc stops it first", severity="warning")
            return
        if self.session.backend is None:
            self.notify(f"No model ready ({self.model_state})", severity="warning")
            return
        if self.conv.turns and self.conv.turns[-1].role == "assistant":
            self.conv.turns.pop()
            replies = self.query(AssistantMessage)
            if replies:
                await replies.last().remove()
        if not self.conv.turns:
            self.notify("Nothing to regenerate yet", severity="warning")
            return
        await self._start_reply()

    async def action_edit_last(self) -> None:
        await self.action_stop()
        users = [i for i, t in enumerate(self.conv.turns) if t.role == "user"]
        if not users:
            self.notify("No message to edit yet", severity="warning")
            return
        text = self.conv.turns[users[-1]].content
        del self.conv.turns[users[-1] :]
        await self._render_conversation()
        prompt = self.query_one("#prompt", Input)
        prompt.value = text
        prompt.cursor_position = len(text)
        prompt.focus()

    async def action_edit_if_empty(self) -> None:
        prompt = self.query_one("#prompt", Input)
        if prompt.has_focus and not prompt.value:
            await self.action_edit_last()

    async def action_new_chat(self) -> None:
        await self.action_stop()
        self.conv = Conversation(model=self.session.choice.ref, system=self.settings.system)
        await self._render_conversation()
        self.query_one("#prompt", Input).focus()

    async def _render_conversation(self) -> None:
        log = self.query_one("#log", VerticalScroll)
        await log.remove_children()
        widgets: list[Widget] = [
            UserMessage(t.content) if t.role == "user" else AssistantMessage(t)
            for t in self.conv.turns
        ]
        await log.mount_all(widgets or [Static(WELCOME, id="welcome")])
        log.scroll_end(animate=False)

    def action_history(self) -> None:
        async def resume(conv_id: str | None) -> None:
            if conv_id is None:
                return
            await self.action_stop()
            try:
                self.conv = self.store.load(conv_id)
            except (OSError, ValueError, TypeError) as e:
                self.notify(f"Could not open that conversation: {e}", severity="error")
                return
            self.settings = self.settings.with_system(self.conv.system)
            await self._render_conversation()

        self.app.push_screen(HistoryModal(self.store), resume)

    def action_settings(self) -> None:
        def apply(settings: ChatSettings | None) -> None:
            if settings is None:
                return
            self.settings = settings
            self.conv.system = settings.system
            if self.conv.turns:
                self._save()
            self.notify("Settings saved")

        self.app.push_screen(SettingsModal(self.settings.with_system(self.conv.system)), apply)

    def action_pick_model(self) -> None:
        async def load(choice: ModelChoice | None) -> None:
            if choice is not None:
                await self.open_model(choice)

        try:
            found = artifacts.scan()
        except OSError as e:
            self.notify(f"Could not list local models: {e}", severity="warning")
            found = []
        self.app.push_screen(ModelPickerModal(self.session.choice, found), load)

    async def open_model(self, choice: ModelChoice) -> None:
        """Load another model (also used by the Models screen)."""
        await self.action_stop()
        self.model_state = "loading model…"
        self.load_model(choice)
