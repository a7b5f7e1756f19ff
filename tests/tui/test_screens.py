"""Models, Bench and Hardware screens and the command palette, driven with Pilot."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from textual.command import CommandList
from textual.widgets import DataTable, Input, ProgressBar, SelectionList, Static
from tui_support.fake_backend import FakeFactory
from tui_support.fakes import FakeBench, MakeApp
from tui_support.polling import until

from edgeglm.bench.run import BenchRequest
from edgeglm.errors import BackendError, ConversionError, HardwareError, UsageError
from edgeglm.tui.screen_bench import BenchScreen
from edgeglm.tui.screen_chat import ChatScreen
from edgeglm.tui.screen_hardware import HardwareScreen
from edgeglm.tui.screen_models import ModelsScreen

pytestmark = pytest.mark.anyio  # Pilot tests run on asyncio (see conftest)


async def settle(pilot: Any) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def text_of(screen: Any, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


async def test_models_lists_gguf_metadata(make_app: MakeApp, artifacts: list[Path]) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f2")
        await settle(pilot)
        assert isinstance(app.screen, ModelsScreen)
        table = app.screen.query_one(DataTable)
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        assert rows[0][:3] == ["glm4-tiny", "Q4_K_M", "glm4"]
        assert rows[1][1] == "Q8_0"


async def test_models_add_path_and_chat_with_it(make_app: MakeApp, tmp_path: Path) -> None:
    from tui_support.fakes import write_gguf

    own = write_gguf(tmp_path / "mine" / "x.gguf", "glm4moe", 7, "mine")
    factory = FakeFactory()
    app = make_app(factory=factory)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f2")
        await settle(pilot)
        screen = app.screen
        screen.query_one("#add", Input).value = str(own.parent)
        screen.query_one("#add", Input).focus()
        await pilot.press("enter")
        await pilot.pause()
        table = screen.query_one(DataTable)
        assert table.row_count == 1 and str(table.get_row_at(0)[2]) == "glm4moe"
        table.focus()
        await pilot.press("enter")  # chat with the highlighted model
        await settle(pilot)
        assert isinstance(app.screen, ChatScreen)
    assert factory.calls[-1][0] == str(own.resolve())


async def test_models_convert_with_progress(make_app: MakeApp) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f2")
        await settle(pilot)
        screen = app.screen
        screen.query_one("#source", Input).value = "/models/glm4-fresh"
        screen.query_one("#source", Input).focus()
        await pilot.press("enter")
        await settle(pilot)
        assert screen.query_one(ProgressBar).percentage == 1.0
        assert "wrote" in text_of(screen, "#status")
        assert str(screen.query_one(DataTable).get_row_at(0)[0]) == "glm4-fresh"


async def test_models_convert_error_is_shown(make_app: MakeApp) -> None:
    def broken(src: str, out: Path, quant: str, progress: Any) -> None:
        raise ConversionError("not enough disk for the GGUF")

    app = make_app(convert=broken)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f2")
        await settle(pilot)
        app.screen.query_one("#source", Input).value = "/models/x"
        await pilot.press("ctrl+k")
        await settle(pilot)
        assert "not enough disk" in text_of(app.screen, "#status")


async def test_bench_runs_shows_front_and_exports(make_app: MakeApp, cache: Path) -> None:
    bench = FakeBench()
    app = make_app("glm4-tiny", run_bench=bench)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f3")
        await settle(pilot)
        assert isinstance(app.screen, BenchScreen)
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert bench.calls == [
            BenchRequest(("glm4-tiny",), ("Q8_0", "Q4_K_M"), ("llama.cpp",), None, repeat=3)
        ]
        table = app.screen.query_one("#table", DataTable)
        stars = {str(table.get_row_at(i)[1]): str(table.get_row_at(i)[0]) for i in range(5)}
        assert stars["glm4-tiny Q4_K_M"] == "★" and stars["glm4-tiny Q4_0"] == ""
        assert "Pareto front: Q4_K_M" in text_of(app.screen, "#caption")
        await pilot.press("ctrl+s")
        await pilot.pause()
    exported = sorted(p.suffix for p in (cache / "bench").iterdir())
    assert exported == [".csv", ".json", ".md"]
    data = json.loads(next((cache / "bench").glob("*.json")).read_text())
    assert len(data["rows"]) == 5


async def test_bench_escape_stops_the_run(make_app: MakeApp) -> None:
    step = threading.Semaphore(0)
    bench = FakeBench(steps=10, wait=lambda: step.acquire(timeout=60))
    app = make_app(run_bench=bench)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f3")
        await settle(pilot)
        await pilot.press("ctrl+r")
        step.release()
        await until(pilot, lambda: "step 2/10" in text_of(app.screen, "#status"), "progress")
        await pilot.press("escape")
        for _ in range(10):
            step.release()
        await settle(pilot)
        assert "stopped" in text_of(app.screen, "#status")


async def test_bench_refuses_an_empty_selection(make_app: MakeApp) -> None:
    bench = FakeBench()
    app = make_app(run_bench=bench)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f3")
        await settle(pilot)
        app.screen.query_one("#backends", SelectionList).deselect_all()
        await pilot.press("ctrl+r")
        await settle(pilot)
    assert bench.calls == []
    assert any("backend" in n.message for n in app._notifications)


async def test_bench_failure_is_shown(make_app: MakeApp) -> None:
    def broken(*args: object) -> None:
        raise BackendError("llama.cpp crashed (SIGSEGV); the model is unusable here")

    app = make_app(run_bench=broken)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f3")
        await settle(pilot)
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert "failed: llama.cpp crashed" in text_of(app.screen, "#status")


async def test_hardware_shows_doctor_and_plan_reasons(make_app: MakeApp) -> None:
    app = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("f4")
        await settle(pilot)
        assert isinstance(app.screen, HardwareScreen)
        doctor = app.screen.query_one("#doctor", Static)
        plan = app.screen.query_one("#plan", Static)
        assert "AVX2" in _plain(doctor)
        assert "libcudnn" in _plain(doctor)  # why CUDA does not work for ONNX Runtime
        assert "fits in 20 GiB available RAM" in _plain(plan)  # the planner's own view


async def test_hardware_plan_failure_says_why(make_app: MakeApp) -> None:
    def no_plan(model: str | None, hw: object) -> None:
        raise UsageError("glm4-huge: no such model")

    app = make_app(plan=no_plan)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f4")
        await settle(pilot)
        shown = _plain(app.screen.query_one("#plan", Static))
        assert "Plan not available" in shown and "no such model" in shown


async def test_hardware_probe_failure_is_shown(make_app: MakeApp) -> None:
    def broken() -> None:
        raise HardwareError("NVML crashed")

    app = make_app(probe_hardware=broken)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f4")
        await settle(pilot)
        assert "NVML crashed" in _plain(app.screen.query_one("#doctor", Static))


async def test_command_palette_switches_screens(make_app: MakeApp) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"bench")
        await until(pilot, lambda: _best_command(app) == "Go to Bench", "search")
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, BenchScreen)


async def test_command_palette_runs_chat_actions(make_app: MakeApp) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f4")
        await settle(pilot)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"settings")
        await until(pilot, lambda: _best_command(app) == "Chat: settings", "search")
        await pilot.press("enter")
        await settle(pilot)
        assert type(app.screen).__name__ == "SettingsModal"


def _best_command(app: Any) -> str | None:
    """The command palette's highlighted entry, once its search has answered."""
    results = app.screen.query(CommandList)
    if not results or results.first().highlighted is None:
        return None
    option = results.first().highlighted_option
    return None if option is None else str(option.prompt).splitlines()[0]


def _plain(widget: Static) -> str:
    """All text a Static shows, wrapped as the screen wraps it."""
    from rich.console import Console

    console = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(widget.content)
    return console.export_text()
