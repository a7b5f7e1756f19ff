"""Chat flows with Pilot against the scripted fake backend."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Collapsible, Input, Markdown, TextArea
from tui_support.fake_backend import FakeBackend, FakeFactory
from tui_support.fakes import MakeApp
from tui_support.polling import until

from edgeglm.errors import BackendError
from edgeglm.tui.screen_chat import ChatScreen
from edgeglm.tui.store import ConversationStore
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
    prompt = pilot.app.screen.query_one("#prompt", Input)
    prompt.focus()
    prompt.value = text
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
        assert screen.query_one("#prompt", Input).value == "typing"
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
        prompt = screen.query_one("#prompt", Input)
        assert prompt.value == "secnod"
        assert len(screen.conv.turns) == 2 and len(screen.query(UserMessage)) == 1
        prompt.value = "second"
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
