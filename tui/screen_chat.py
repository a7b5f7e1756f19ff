"""The chat screen: transcript, live stats, prompt; generation runs in a worker thread.

The worker renders and tokenizes the prompt (leaving out the oldest turns
when the conversation outgrows the context, see context.py) and feeds each
chunk into a ReplyBuffer; the screen shows what is new on a timer
(streaming.py), so the UI never paces the model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Footer, Static
from textual.worker import get_current_worker

from edgeglm.backends.base import Completion, SamplingParams
from edgeglm.chat import render, split_thinking

from .context import ContextOverflow, fit_context, reply_room
from .messages import GenerationEnded, GenerationStarted, ModelFailed, ModelLoaded
from .modal_history import HistoryModal
from .modal_model import ModelPickerModal
from .modal_settings import SettingsModal
from .session import ModelChoice, ModelSession
from .settings import ChatSettings, model_sampling
from .store import Conversation, ConversationStore, Turn
from .streaming import MIN_DELAY_S, ReplyBuffer, live_tps, next_delay
from .widget_prompt import PromptEditor
from .widgets_chat import AssistantMessage, StatsBar, UserMessage
from .widgets_common import TopBar, describe_error

WELCOME = (
    "Type a message and press Enter (Shift+Enter or Ctrl+J: new line).  Esc stops a reply.\n"
    "Ctrl+T model · Ctrl+S settings · Ctrl+O history · Ctrl+P all commands"
)


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
    ChatScreen .context-note { color: $warning; margin: 1 2 0 2; }
    ChatScreen #prompt { dock: bottom; margin: 0 0 1 0; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "stop", "Stop"),
        Binding("ctrl+r", "regenerate", "Regen"),
        Binding("ctrl+l", "edit_last", "Edit last", show=False),
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
        self.last_completion: Completion | None = None  # the last reply that ended normally
        self._buffer = ReplyBuffer()  # the streaming reply's text, filled by the worker
        self._prompt_tokens = 0
        self._drain_timer: Timer | None = None
        self._cpu_mark = 0.0  # the UI thread's CPU time at the last drain
        self._dropped = 0  # messages the last prompt left out (to say so once per change)

    def compose(self) -> ComposeResult:
        yield TopBar("chat")
        with VerticalScroll(id="log"):
            yield Static(WELCOME, id="welcome")
        yield StatsBar(id="stats")
        yield PromptEditor(
            placeholder="Message GLM…  (Enter send · Shift+Enter/Ctrl+J new line · ↑ edit last)",
            id="prompt",
        )
        # compact: every key, Ctrl+Q included, fits an 80-column terminal
        yield Footer(compact=True)

    @property
    def prompt(self) -> PromptEditor:
        return self.query_one("#prompt", PromptEditor)

    def on_mount(self) -> None:
        self.prompt.focus()
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
        sampling = model_sampling(backend)
        self.post_message(ModelLoaded(choice, backend.name, device, self.session.n_ctx, sampling))

    def on_model_loaded(self, m: ModelLoaded) -> None:
        self.model_state = "ready"
        self.conv.model = m.choice.ref
        self.settings = self.settings.for_next_model(m.sampling)
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

    @on(PromptEditor.Submitted, "#prompt")
    async def _submitted(self, event: PromptEditor.Submitted) -> None:
        # blank lines around a message are noise; the lines inside it are kept
        text = event.text.strip("\n").rstrip()
        if not text.strip():
            return
        if self.generating:
            self.notify("Still replying: Esc stops it first", severity="warning")
            return
        if self.session.backend is None:
            self.notify(f"No model ready ({self.model_state})", severity="warning")
            return
        event.editor.clear()
        self.conv.turns.append(Turn("user", text))
        self.conv.retitle()
        await self._mount(UserMessage(text))
        await self._start_reply()

    async def _mount(self, widget: Widget, before: Widget | None = None) -> None:
        log = self.query_one("#log", VerticalScroll)
        for w in log.query("#welcome, .error"):
            await w.remove()
        await log.mount(widget, before=before)
        log.scroll_end(animate=False)

    async def _start_reply(self) -> None:
        self.gen_id += 1
        self.reply = AssistantMessage()
        await self._mount(self.reply)
        self._buffer = ReplyBuffer()
        self._prompt_tokens = 0
        self._show_stats(state="generating…")
        self.generate(self.gen_id, self.conv.messages(), self.settings.sampling(), self._buffer)
        self._cpu_mark = time.thread_time()
        self._drain_timer = self.set_timer(MIN_DELAY_S, self._drain_tick)

    @work(thread=True, exclusive=True, group="generate")
    def generate(
        self,
        gen_id: int,
        messages: list[dict[str, str]],
        params: SamplingParams,
        buffer: ReplyBuffer,
    ) -> None:
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
                template = model.chat_template()
                n_ctx = self.session.n_ctx
                fitted = fit_context(
                    messages,
                    lambda msgs: model.tokenize(render(msgs, template), special=True),
                    n_ctx,
                    reply_room(params.max_tokens, n_ctx),
                )
            except ContextOverflow as e:
                self.post_message(GenerationEnded(gen_id, None, overflow=(e.tokens, e.n_ctx)))
                return
            except Exception as e:
                self.post_message(GenerationEnded(gen_id, None, describe_error(e)))
                return
            self.post_message(GenerationStarted(gen_id, len(fitted.prompt), fitted.dropped))
            try:
                stream = model.generate(fitted.prompt, params)
                try:
                    while not worker.is_cancelled:
                        try:
                            chunk = next(stream)
                        except StopIteration as stop:
                            completion = stop.value
                            break
                        buffer.push(chunk.text, len(chunk.tokens), time.perf_counter() - t0)
                finally:
                    stream.close()  # a stopped generation frees the backend here
            except Exception as e:
                self.post_message(GenerationEnded(gen_id, None, describe_error(e)))
                return
        self.post_message(GenerationEnded(gen_id, completion))

    async def on_generation_started(self, m: GenerationStarted) -> None:
        if m.gen_id != self.gen_id or self.reply is None:
            return
        self._prompt_tokens = m.prompt_tokens
        if m.dropped > self._dropped:
            n = m.dropped
            kept = " (the system prompt stays)" if self.conv.system.strip() else ""
            await self._mount(
                Static(
                    f"↥ Context full: the oldest {n} message{'s' if n > 1 else ''} "
                    f"no longer reach the model{kept}. Ctrl+N starts a fresh chat.",
                    classes="context-note",
                    markup=False,
                ),
                before=self.reply,
            )
        self._dropped = m.dropped

    async def _drain_tick(self) -> None:
        """Show what the worker produced since the last tick, then plan the next tick."""
        if self.reply is None:
            return
        await self._drain()
        if self.reply is not None:  # not finished meanwhile
            # CPU time of this (the UI) thread since the last tick: the last
            # redraw's layout and rendering as well as this drain
            now = time.thread_time()
            busy, self._cpu_mark = now - self._cpu_mark, now
            self._drain_timer = self.set_timer(next_delay(busy), self._drain_tick)

    async def _drain(self) -> None:
        reply = self.reply
        if reply is None:
            return
        taken = self._buffer.take()
        log = self.query_one("#log", VerticalScroll)
        follow = log.scroll_y >= log.max_scroll_y - 1  # don't yank a user who scrolled up
        if taken.text:
            await reply.append(taken.text)
        if taken.tokens:
            self._show_stats(
                ttft=taken.t_first,
                tps=live_tps(taken),
                ctx_used=self._prompt_tokens + taken.tokens,
                state="generating…",
            )
        if follow:
            log.scroll_end(animate=False)

    async def on_generation_ended(self, m: GenerationEnded) -> None:
        if m.gen_id != self.gen_id or self.reply is None:
            return
        if m.overflow is not None:
            await self._message_too_long(*m.overflow)
        elif m.error is not None:
            await self._finish_reply(Ending("error", note=f"⚠ {m.error}", keep=False))
            self.notify(m.error, title="Generation failed", severity="error")
        elif m.completion is None:
            await self._finish_reply(STOPPED)
        else:
            self.last_completion = m.completion
            t = m.completion.timings
            used = t.prompt_tokens + t.completion_tokens
            full = m.completion.finish_reason == "length" and used >= self.session.n_ctx
            await self._finish_reply(
                Ending(
                    f"done ({m.completion.finish_reason})",
                    # the reply ran into the end of the context window
                    note="⚠ The context is full: the reply was cut here. "
                    "The next message leaves out the oldest turns."
                    if full
                    else None,
                    ttft=t.time_to_first_token,
                    tps=t.decode_tokens_per_second,
                    ctx_used=used,
                )
            )

    async def _message_too_long(self, tokens: int, n_ctx: int) -> None:
        """The latest message alone fills the context: give it back to edit."""
        reply, self.reply = self.reply, None
        self._stop_draining()
        if reply is not None:
            await reply.remove()
        text = self.conv.turns.pop().content if self.conv.turns else ""
        users = self.query(UserMessage)
        if users:
            await users.last().remove()
        self._show_stats(state="message too long")
        await self._mount(
            Static(
                f"⚠ That message is {tokens} tokens as the model sees it; its context holds "
                f"{n_ctx}. Shorten it, or load the model with a larger context (Ctrl+T).",
                classes="error",
                markup=False,
            )
        )
        self.prompt.set_text(text)
        self.prompt.focus()

    def _stop_draining(self) -> None:
        if self._drain_timer is not None:
            self._drain_timer.stop()
            self._drain_timer = None

    async def _finish_reply(self, end: Ending) -> None:
        """End the streamed reply; the status line shows ``end`` whatever happens on the way."""
        self._stop_draining()
        await self._drain()  # the text produced since the last tick
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
        self.prompt.set_text(text)
        self.prompt.focus()

    @on(PromptEditor.EditLast, "#prompt")
    async def _edit_last(self) -> None:
        await self.action_edit_last()

    async def action_new_chat(self) -> None:
        await self.action_stop()
        self.conv = Conversation(model=self.session.choice.ref, system=self.settings.system)
        self._dropped = 0
        await self._render_conversation()
        self.prompt.focus()

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
            self._dropped = 0
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

        self.app.push_screen(ModelPickerModal(self.session.choice), load)

    async def open_model(self, choice: ModelChoice) -> None:
        """Load another model (also used by the Models screen)."""
        await self.action_stop()
        self.model_state = "loading model…"
        self.load_model(choice)
