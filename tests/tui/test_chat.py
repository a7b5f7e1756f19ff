"""Chat flows with Pilot against the scripted fake backend."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from textual import events
from textual.widgets import Collapsible, Input, Markdown, TextArea
from tui_support.fake_backend import FakeBackend, FakeFactory
from tui_support.fakes import MakeApp
from tui_support.polling import until

from edgeglm.backends.base import Backend
from edgeglm.chat import render
from edgeglm.errors import BackendError
from edgeglm.tui.screen_chat import ChatScreen
from edgeglm.tui.store import ConversationStore
from edgeglm.tui.widget_prompt import PromptEditor
from edgeglm.tui.widgets_chat import AssistantMessage, StatsBar, UserMessage

pytestmark = pytest.mark.anyio  # Pilot tests run on asyncio (see conftest)


async def ready(pilot: Any) -> ChatScreen:
    app = pilot.app
    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()
    assert isinstance(app.screen, ChatScreen)
    return app.screen


async def send(pilot: Any, text: str, *, wait: bool = True) -> None:
    prompt = pilot.app.screen.query_one("#prompt", PromptEditor)
    prompt.focus()
    prompt.set_text(text)
    await pilot.press("enter")
    if wait:
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()


def stats(screen: ChatScreen) -> str:
    return str(screen.query_one(StatsBar).render())


async def test_send_streams_reply_and_saves(make_app: MakeApp, backend: FakeBackend) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await ready(pilot)
        await send(pilot, "hi there")
        reply = screen.query(AssistantMessage).last()
        assert reply.raw == "Hello from **GLM**."
        assert "TTFT 50 ms" in stats(screen) and "20.0 tok/s" in stats(screen)
        assert "ctx " in stats(screen) and "/2048" in stats(screen)
    assert "<|user|>\nhi there" in backend.texts[-1]
    saved = ConversationStore().list()
    assert [t.role for t in saved[0].turns] == ["user", "assistant"]
    assert saved[0].turns[1].content == "Hello from **GLM**."
    assert saved[0].title == "hi there"


async def test_ui_keeps_working_while_a_slow_backend_generates(make_app: MakeApp) -> None:
    gate = threading.Semaphore(0)
    app = make_app(factory=FakeFactory(FakeBackend(gate=gate)))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await ready(pilot)
        await send(pilot, "slow please", wait=False)
        gate.release()  # one chunk out, the rest held back: the worker is mid-generation
        await until(pilot, lambda: screen.query(AssistantMessage).last().raw == "Hello", "chunk")
        assert screen.generating
        # the event loop still handles keys, focus and redraws meanwhile
        await pilot.press("t", "y", "p", "i", "n", "g")
        assert screen.query_one("#prompt", PromptEditor).text == "typing"
        assert screen.generating and screen.query(AssistantMessage).last().raw == "Hello"
        for _ in range(3):
            gate.release()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert not screen.generating
        assert screen.query(AssistantMessage).last().raw == "Hello from **GLM**."


async def test_escape_stops_and_keeps_partial_reply(make_app: MakeApp) -> None:
    gate = threading.Semaphore(0)
    backend = FakeBackend(gate=gate)
    app = make_app(factory=FakeFactory(backend))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await ready(pilot)
        await send(pilot, "stop me", wait=False)
        gate.release()
        await until(pilot, lambda: screen.query(AssistantMessage).last().raw == "Hello", "chunk")
        await pilot.press("escape")
        await until(pilot, lambda: not screen.generating, "the stop")
        for _ in range(3):
            gate.release()  # the worker finds it was cancelled and lets go
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert backend.yielded < 4  # generation really stopped
        assert screen.query(AssistantMessage).last().raw == "Hello"
        assert "stopped" in stats(screen)
        assert screen.conv.turns[-1].stopped
        # and the model is free for the next message
        await send(pilot, "again", wait=False)
        for _ in range(4):
            gate.release()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert screen.query(AssistantMessage).last().raw == "Hello from **GLM**."


async def test_regenerate_replaces_last_reply(make_app: MakeApp, backend: FakeBackend) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await ready(pilot)
        await send(pilot, "hi")
        await pilot.press("ctrl+r")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert len(backend.prompts) == 2 and backend.prompts[0] == backend.prompts[1]
        assert [t.role for t in screen.conv.turns] == ["user", "assistant"]
        assert len(screen.query(AssistantMessage)) == 1


async def test_edit_last_message_and_resend(make_app: MakeApp, backend: FakeBackend) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await ready(pilot)
        await send(pilot, "first")
        await send(pilot, "secnod")
        await pilot.press("up")  # in the empty prompt: edit the last message
        prompt = screen.query_one("#prompt", PromptEditor)
        assert prompt.text == "secnod"
        assert len(screen.conv.turns) == 2 and len(screen.query(UserMessage)) == 1
        prompt.set_text("second")
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert [t.content for t in screen.conv.turns if t.role == "user"] == ["first", "second"]
        assert "second" in backend.texts[-1] and "secnod" not in backend.texts[-1]


async def test_think_block_is_collapsed(make_app: MakeApp) -> None:
    chunks = ["<thi", "nk>Let me", " reason.</thi", "nk>\nThe **answer**."]
    app = make_app(factory=FakeFactory(FakeBackend(chunks)))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await ready(pilot)
        await send(pilot, "why?")
        reply = screen.query(AssistantMessage).last()
        box = reply.query_one(Collapsible)
        assert box.display and box.collapsed
        assert reply.query_one("#think-md", Markdown).source == "Let me reason."
        assert reply.query_one("#answer", Markdown).source == "The **answer**."
        turn = screen.conv.turns[-1]
        assert (turn.content, turn.reasoning) == ("The **answer**.", "Let me reason.")


async def test_settings_modal_changes_sampling_and_system_prompt(
    make_app: MakeApp, backend: FakeBackend
) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+s")
        modal = app.screen
        modal.query_one("#temperature", Input).value = "-1"
        await pilot.press("ctrl+s")
        assert app.screen is modal  # refused, with the reason shown
        assert "temperature" in str(modal.query_one("#errors").render())
        modal.query_one("#temperature", Input).value = "0.2"
        modal.query_one("#seed", Input).value = "7"
        modal.query_one("#system", TextArea).text = "Be brief."
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, ChatScreen)
        await send(pilot, "hello")
    assert backend.params[-1].temperature == 0.2 and backend.params[-1].seed == 7
    assert "<|system|>\nBe brief." in backend.texts[-1]


async def test_history_resumes_an_older_conversation(make_app: MakeApp) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await ready(pilot)
        await send(pilot, "first chat")
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert not screen.conv.turns
        await send(pilot, "second chat")
        await pilot.press("ctrl+o")
        await pilot.pause()
        await pilot.press("down", "enter")  # newest first: the older one is second
        await pilot.pause()
        assert screen.conv.title == "first chat"
        assert [w.text for w in screen.query(UserMessage)] == ["first chat"]


async def test_load_failure_is_shown_not_raised(make_app: MakeApp) -> None:
    app = make_app(factory=FakeFactory(error=BackendError("llama.cpp could not load it")))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await ready(pilot)
        assert any("could not load" in n.message for n in app._notifications)
        await send(pilot, "anyone?")
        assert not screen.query(AssistantMessage)
        assert "No model ready" in list(app._notifications)[-1].message


async def test_generation_error_is_shown_in_the_reply(make_app: MakeApp) -> None:
    app = make_app(factory=FakeFactory(FakeBackend(fail=BackendError("decode failed"))))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await ready(pilot)
        await send(pilot, "hi")
        assert "decode failed" in str(
            screen.query(AssistantMessage).last().query(".note").first().render()
        )
        assert not screen.generating


async def test_model_picker_loads_the_chosen_artifact(
    make_app: MakeApp, artifacts: list[Path]
) -> None:
    factory = FakeFactory()
    app = make_app(factory=factory)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+t")
        await pilot.pause()
        await pilot.press("down", "enter")  # the first artifact, after the demo model
        await app.workers.wait_for_complete()
        await pilot.pause()
    # context left empty: the runtime takes the plan's for this model and machine
    assert factory.calls[-1] == (str(artifacts[0].resolve()), "auto", None)


async def test_multi_line_prompt_enter_sends_ctrl_j_and_shift_enter_break_lines(
    make_app: MakeApp, backend: FakeBackend
) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await ready(pilot)
        screen.prompt.focus()
        await pilot.press(*"one", "ctrl+j", *"two", "shift+enter", *"three")
        assert screen.prompt.text == "one\ntwo\nthree"
        assert not screen.conv.turns  # nothing sent yet
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert screen.conv.turns[0].content == "one\ntwo\nthree"
        assert screen.query(UserMessage).last().text == "one\ntwo\nthree"
        assert screen.prompt.text == ""
    assert "<|user|>\none\ntwo\nthree" in backend.texts[-1]


async def test_paste_keeps_every_line(make_app: MakeApp, backend: FakeBackend) -> None:
    app = make_app()
    pasted = "def f(x):\n    return x + 1\n\nprint(f(2))"
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await ready(pilot)
        screen.prompt.focus()
        await pilot.press(*"Explain:", "ctrl+j")
        app.post_message(events.Paste(pasted))  # what the driver posts for a terminal paste
        await pilot.pause()
        assert screen.prompt.text == "Explain:\n" + pasted
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert screen.conv.turns[0].content == "Explain:\n" + pasted
    assert pasted in backend.texts[-1]


async def test_blank_message_is_not_sent(make_app: MakeApp, backend: FakeBackend) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await ready(pilot)
        screen.prompt.focus()
        await pilot.press("ctrl+j", "ctrl+j", "enter")
        await pilot.pause()
        assert not screen.conv.turns and not backend.prompts


async def test_many_small_chunks_arrive_whole_and_in_order(make_app: MakeApp) -> None:
    """Chunks are shown in batches (a few dozen redraws, not one per token); none is lost."""
    chunks = [f"w{i} " for i in range(2000)]
    app = make_app(factory=FakeFactory(FakeBackend(chunks)))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await ready(pilot)
        appended: list[str] = []
        reply_append = AssistantMessage.append

        async def counting(self: AssistantMessage, text: str) -> None:
            appended.append(text)
            await reply_append(self, text)

        AssistantMessage.append = counting  # type: ignore[method-assign]
        try:
            await send(pilot, "count")
        finally:
            AssistantMessage.append = reply_append  # type: ignore[method-assign]
        assert screen.query(AssistantMessage).last().raw == "".join(chunks)
        assert screen.conv.turns[-1].content == "".join(chunks).strip()
        assert 1 <= len(appended) < len(chunks) / 10
        assert screen.last_completion is not None


def words(n: int, tag: str) -> str:
    """A message of ``n`` words: the fake backend counts one token per word."""
    return " ".join(f"{tag}{i}" for i in range(n))


async def test_full_context_leaves_out_the_oldest_turns_and_says_so(make_app: MakeApp) -> None:
    backend = FakeBackend(n_ctx=120)  # reply room: min(max_tokens, 60) = 60 tokens
    app = make_app(factory=FakeFactory(backend))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await ready(pilot)
        screen.conv.system = "Be brief."
        await send(pilot, words(20, "first"))
        await send(pilot, words(20, "second"))
        assert not screen.query(".context-note")
        await send(pilot, words(20, "third"))  # with the history, past 120 - 60 tokens
        notes = screen.query(".context-note")
        assert len(notes) == 1
        assert "oldest 2 messages" in str(notes.first().render())
        assert "first0" not in backend.prompt_texts[-1]  # the oldest exchange is left out
        assert "second0" in backend.prompt_texts[-1] and "third19" in backend.prompt_texts[-1]
        assert "<|system|> Be brief." in backend.prompt_texts[-1]  # the system prompt stays
        assert len(backend.prompts[-1]) + 60 <= 120
        await send(pilot, words(20, "fourth"))
        assert "second0" not in backend.prompt_texts[-1]
        assert len(screen.query(".context-note")) == 2  # said again when more is left out
        # the whole conversation is still kept and saved; only the prompt is cut
        users = [t.content for t in screen.conv.turns if t.role == "user"]
        assert users[0] == words(20, "first") and len(users) == 4
        assert not screen.query(".error")
    assert not any("failed" in n.title.lower() for n in app._notifications)


async def test_a_message_longer_than_the_context_comes_back_to_edit(make_app: MakeApp) -> None:
    backend = FakeBackend(n_ctx=40)
    app = make_app(factory=FakeFactory(backend))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await ready(pilot)
        long = words(60, "w")
        await send(pilot, long)
        assert not backend.prompts  # nothing was generated
        assert not screen.conv.turns and not screen.query(UserMessage)
        assert not screen.query(AssistantMessage)
        error = str(screen.query(".error").last().render())
        assert "tokens as the model sees it" in error and "holds 40" in error
        assert screen.prompt.text == long  # back in the editor, to shorten
        assert not screen.generating
        await send(pilot, "short")  # and the chat goes on
        assert screen.conv.turns[-1].role == "assistant"
    assert not any("failed" in n.title.lower() for n in app._notifications)


async def test_context_shift_with_the_real_tokenizer(glm4_gguf: Path) -> None:
    """llama.cpp's tokenizer counts the prompt; the reply never runs past the context."""
    from multiprocessing import resource_tracker

    from edgeglm.tui.app import create_app
    from edgeglm.tui.services import Services, open_backend

    resource_tracker.ensure_running()  # as run_app does: before Textual replaces stderr
    n_ctx = 256

    def small_context(ref: str | None, *, backend: str, n_ctx: int | None) -> Backend:
        return open_backend(ref, backend=backend, n_ctx=256)

    app = create_app(
        str(glm4_gguf), services=Services(open_backend=small_context), cursor_blink=False
    )
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await ready(pilot)
        assert screen.session.backend is not None, [n.message for n in app._notifications]
        assert screen.session.n_ctx == n_ctx
        screen.settings = replace(screen.settings, max_tokens=48, temperature=0.0)
        message = "Tell me about the lighthouse keeper, the sea and the long winter nights. " * 3
        used: list[int] = []
        for _ in range(6):
            await send(pilot, message)
            done = screen.last_completion
            assert done is not None and screen.conv.turns[-1].role == "assistant"
            used.append(done.timings.prompt_tokens + done.timings.completion_tokens)
            if screen.query(".context-note"):
                break
        assert screen.query(".context-note"), used
        assert all(u <= n_ctx for u in used)
        assert not screen.query(".error")
        # the prompt the model saw is shorter than the whole conversation
        model = screen.session.backend
        assert model is not None
        text = render(screen.conv.messages()[:-1], model.chat_template())
        whole = model.tokenize(text, special=True)
        assert done is not None and done.timings.prompt_tokens < len(whole)
    assert not any("failed" in n.title.lower() for n in app._notifications)


async def test_sampling_starts_from_the_models_own_defaults_and_keeps_edits_across_switches(
    glm4_gguf: Path, tmp_path: Path
) -> None:
    """One set of defaults with run: the GGUF's general.sampling.* (written from
    the checkpoint's generation_config.json), llama.cpp's for the rest; what the
    user sets in the settings screen survives a model switch."""
    import json
    import shutil
    from multiprocessing import resource_tracker

    from helpers import HF_FIXTURES

    from edgeglm.converters.gguf.convert import convert
    from edgeglm.tui.app import create_app
    from edgeglm.tui.session import ModelChoice

    ckpt = tmp_path / "glm4-sampled"
    shutil.copytree(HF_FIXTURES / "glm4", ckpt)
    gen = {"do_sample": True, "temperature": 0.6, "top_p": 0.9}
    (ckpt / "generation_config.json").write_text(json.dumps(gen))
    sampled = convert(ckpt, tmp_path / "sampled.gguf", "Q8_0").output

    resource_tracker.ensure_running()  # as run_app does: before Textual replaces stderr
    app = create_app(str(sampled), cursor_blink=False)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await ready(pilot)
        s = screen.settings
        assert (s.temperature, s.top_p, s.top_k) == (0.6, 0.9, 40)
        assert s.source("temperature") == "general.sampling.temp"
        assert s.source("top_k") == "llama.cpp default"
        await pilot.press("ctrl+s")
        modal = app.screen
        modal.query_one("#top_k", Input).value = "7"
        modal.query_one("#min_p", Input).value = "0.1"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, ChatScreen), "the chat again")
        assert (screen.settings.top_k, screen.settings.min_p) == (7, 0.1)
        assert screen.settings.temperature == 0.6  # untouched: still the model's
        await screen.open_model(ModelChoice(str(glm4_gguf)))
        await until(pilot, lambda: screen.settings.temperature == 0.8, "the next model's defaults")
        s = screen.settings
        assert s.source("temperature") == "llama.cpp default"
        assert (s.top_k, s.min_p) == (7, 0.1) and s.source("top_k") == "settings"
