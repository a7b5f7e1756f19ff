"""SVG snapshots of every screen at 80x24 and at 120x36 (update: pytest --snapshot-update).

The apps come from the CLI's factory with fakes whose numbers are fixed, and
the cursor blink is frozen, so a snapshot changes only when the UI does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tui_support.fake_backend import FakeBackend, FakeFactory
from tui_support.fakes import MakeApp, SnapCompare

from edgeglm.store.layout import Entry
from edgeglm.tui.widget_prompt import PromptEditor

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 36), id="120x36")]


async def settle(pilot: Any) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def _chat(pilot: Any, *texts: str) -> Any:
    async def run() -> None:
        await settle(pilot)
        for text in texts:
            pilot.app.screen.query_one("#prompt", PromptEditor).set_text(text)
            await pilot.press("enter")
            await settle(pilot)

    return run()


@pytest.mark.parametrize("size", SIZES)
def test_chat_empty(snap_compare: SnapCompare, make_app: MakeApp, size: tuple[int, int]) -> None:
    assert snap_compare(make_app(), terminal_size=size, run_before=settle)


@pytest.mark.parametrize("size", SIZES)
def test_chat_with_reply_and_thinking(
    snap_compare: SnapCompare, make_app: MakeApp, size: tuple[int, int]
) -> None:
    chunks = ["<think>The user greets me.", "</think>", "Hello! Here is a list:\n\n",
              "- **bold** point\n", "- `code` point\n"]  # fmt: skip
    app = make_app(factory=FakeFactory(FakeBackend(chunks)))
    assert snap_compare(app, terminal_size=size, run_before=lambda p: _chat(p, "Hi GLM"))


def test_chat_multi_line_and_context_full(snap_compare: SnapCompare, make_app: MakeApp) -> None:
    """A three-line message in the transcript, and the note when the oldest turns are left out."""
    app = make_app(factory=FakeFactory(FakeBackend(n_ctx=40)))
    first = "Summarise this:\nline two of the paste\nline three"
    second = "And now a longer question that fills up the small context"
    assert snap_compare(app, terminal_size=(80, 24), run_before=lambda p: _chat(p, first, second))


def test_chat_editor_with_lines(snap_compare: SnapCompare, make_app: MakeApp) -> None:
    """The editor grows with what is typed (Ctrl+J new line), before it is sent."""

    async def run(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press(*"first line", "ctrl+j", *"second line", "ctrl+j", *"third")

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run)


def test_chat_settings_modal(snap_compare: SnapCompare, make_app: MakeApp) -> None:
    async def run(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("ctrl+s")
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run)


def test_chat_model_picker(
    snap_compare: SnapCompare, make_app: MakeApp, artifacts: list[Path]
) -> None:
    async def run(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("ctrl+t")
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_models_screen(
    snap_compare: SnapCompare, make_app: MakeApp, artifacts: list[Path], size: tuple[int, int]
) -> None:
    async def run(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("f2")
        await settle(pilot)

    assert snap_compare(make_app(), terminal_size=size, run_before=run)


def test_models_delete_confirmation(
    snap_compare: SnapCompare, make_app: MakeApp, artifacts: list[Path]
) -> None:
    async def run(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("f2")
        await settle(pilot)
        await pilot.press("delete")
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run)


@pytest.mark.parametrize(
    "size", [pytest.param((80, 24), id="80x24"), pytest.param((100, 30), id="100x30")]
)
def test_models_store(
    snap_compare: SnapCompare,
    make_app: MakeApp,
    artifacts: list[Path],
    entry: Entry,
    size: tuple[int, int],
) -> None:
    async def run(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("f2")
        await settle(pilot)
        pilot.app.screen.query_one("#store").focus()
        await pilot.press("ctrl+t")  # verify: the state column says so
        await settle(pilot)
        pilot.app.clear_notifications()
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=size, run_before=run)


def test_models_pull_modal(
    snap_compare: SnapCompare, make_app: MakeApp, artifacts: list[Path]
) -> None:
    async def run(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("f2")
        await settle(pilot)
        await pilot.press("ctrl+g")
        await pilot.pause()
        await pilot.press(*"zai-org/GLM-4")
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_bench_setup(snap_compare: SnapCompare, make_app: MakeApp, size: tuple[int, int]) -> None:
    async def run(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("f3")
        await settle(pilot)

    assert snap_compare(make_app(), terminal_size=size, run_before=run)


@pytest.mark.parametrize("tab", ["results", "plot-tab"])
@pytest.mark.parametrize("size", [*SIZES, pytest.param((100, 30), id="100x30")])
def test_bench_results(
    snap_compare: SnapCompare, make_app: MakeApp, size: tuple[int, int], tab: str
) -> None:
    async def run(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("f3")
        await pilot.pause()
        await pilot.press("ctrl+r")
        await settle(pilot)
        pilot.app.screen.query_one("#tabs").active = tab
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_hardware_screen(
    snap_compare: SnapCompare, make_app: MakeApp, size: tuple[int, int]
) -> None:
    async def run(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("f4")
        await settle(pilot)

    assert snap_compare(make_app(), terminal_size=size, run_before=run)
