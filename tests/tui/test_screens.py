"""Models, Bench and Hardware screens and the command palette, driven with Pilot."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import HF_FIXTURES
from textual.command import CommandList
from textual.widgets import DataTable, Input, ProgressBar, SelectionList, Static
from tui_support.fake_backend import FakeFactory
from tui_support.fakes import FakeBench, MakeApp, fake_plan, hardware
from tui_support.polling import until

from edgeglm.bench.run import BenchRequest
from edgeglm.errors import BackendError, ConversionError, HardwareError, UsageError
from edgeglm.tui.modal_export import ExportModal
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
        assert rows[0][:4] == ["glm4-tiny", "GGUF", "Q4_K_M", "glm4"]
        assert rows[1][2] == "Q8_0"


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
        assert table.row_count == 1 and str(table.get_row_at(0)[3]) == "glm4moe"
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
        screen.query_one("#source", Input).value = str(HF_FIXTURES / "glm4")
        screen.query_one("#source", Input).focus()
        await pilot.press("enter")
        await settle(pilot)
        assert screen.query_one(ProgressBar).percentage == 1.0
        assert "wrote" in text_of(screen, "#status")
        assert str(screen.query_one(DataTable).get_row_at(0)[0]) == "glm4"


async def test_models_convert_error_is_shown(make_app: MakeApp) -> None:
    def broken(src: str, out: Path, quant: str, progress: Any) -> None:
        raise ConversionError("not enough disk for the GGUF")

    app = make_app(convert=broken)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f2")
        await settle(pilot)
        app.screen.query_one("#source", Input).value = str(HF_FIXTURES / "glm4")
        await pilot.press("ctrl+k")
        await settle(pilot)
        assert "not enough disk" in text_of(app.screen, "#status")


async def test_bench_runs_shows_front_and_exports(
    make_app: MakeApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
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
        caption = text_of(app.screen, "#caption")
        assert "Pareto front: Q4_K_M" in caption and "◆ reference (KL 0): F16" in caption
        await pilot.press("ctrl+s")  # asks where, with a default in the current folder
        await pilot.pause()
        assert isinstance(app.screen, ExportModal)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, BenchScreen)
    exported = sorted(p.suffix for p in tmp_path.glob("edgeglm-bench-*"))
    assert exported == [".csv", ".json", ".md", ".svg"]
    data = json.loads(next(tmp_path.glob("edgeglm-bench-*.json")).read_text())
    assert len(data["rows"]) == 5
    svg = next(tmp_path.glob("edgeglm-bench-*.svg")).read_text()
    assert svg.startswith("<svg") and "glm4-tiny Q4_K_M" in svg  # the plot, its points named


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
        await pilot.pause()
        # said at once, with what the benchmark finishes first
        assert "stopping: step 2/10 is the last measurement" in text_of(app.screen, "#status")
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


async def test_bench_with_no_quant_ticked_asks_for_none(make_app: MakeApp, glm4_gguf: Path) -> None:
    """No quant ticked is "not given" (None), as the CLI without --quants: a GGUF
    has its own quant, and the real selection refuses any quant named for it."""
    from edgeglm.bench.select import artifacts_for, parse

    bench = FakeBench()
    app = make_app(run_bench=bench)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f3")
        await settle(pilot)
        app.screen.query_one("#models", Input).value = str(glm4_gguf)
        app.screen.query_one("#quants", SelectionList).deselect_all()
        await pilot.press("ctrl+r")
        await settle(pilot)
    (request,) = bench.calls
    assert request.quants is None
    (group,) = artifacts_for(list(request.models), parse(request.backends, request.quants))
    assert [(a.quant, a.backend, a.path) for a in group] == [("Q8_0", "llama.cpp", glm4_gguf)]
    with pytest.raises(UsageError, match="has its own quant"):
        artifacts_for(list(request.models), parse(request.backends, ("Q8_0", "Q4_K_M")))


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


async def test_plan_follows_the_model_after_a_switch(
    make_app: MakeApp, artifacts: list[Path]
) -> None:
    planned: list[str | None] = []
    probes: list[int] = []

    def plan(model: str | None, hw: Any) -> Any:
        planned.append(model)
        return fake_plan(model, hw)

    def probe() -> Any:
        probes.append(1)
        return hardware()

    app = make_app(plan=plan, probe_hardware=probe)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("f4")
        await settle(pilot)
        assert planned == [None] and "glm-demo" in _plain(app.screen.query_one("#plan", Static))
        await pilot.press("f1")
        await settle(pilot)
        await pilot.press("ctrl+t")
        await pilot.pause()
        await pilot.press("down", "enter")  # the first artifact
        await settle(pilot)
        await pilot.press("f4")
        await settle(pilot)
        ref = str(artifacts[0].resolve())
        assert planned == [None, ref]
        plan_pane = app.screen.query_one("#plan-pane")
        assert ref in _plain(app.screen.query_one("#plan", Static))
        assert plan_pane.border_title is not None and "Q4_K_M.gguf" in str(plan_pane.border_title)
        assert len(probes) == 1  # the machine is not probed again for a new model
        await pilot.press("f1")
        await pilot.press("f4")
        await settle(pilot)
        assert len(planned) == 2  # same model: the plan stands


@pytest.mark.parametrize("key", ["f1", "f2", "f3", "f4"])
async def test_ctrl_q_is_in_the_footer_of_every_screen(make_app: MakeApp, key: str) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press(key)
        await settle(pilot)
        # FooterKey is not exported by textual.widgets: found by its CSS type name
        [quit_key] = [k for k in app.screen.query("FooterKey") if getattr(k, "key", "") == "ctrl+q"]
        assert getattr(quit_key, "description", "") == "Quit"
        assert quit_key.region.width > 0 and quit_key.region.right <= 80  # on screen, whole


async def test_bench_table_fits_100_columns(make_app: MakeApp) -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("f3")
        await settle(pilot)
        await pilot.press("ctrl+r")
        await settle(pilot)
        table = app.screen.query_one("#table", DataTable)
        # every column at its full width, and no sideways scrolling
        assert table.virtual_size.width <= table.scrollable_content_region.width
        detail = text_of(app.screen, "#detail")
        assert detail.startswith("glm4-tiny F16") and "peak RSS" in detail
        table.focus()
        await pilot.press("down")
        await pilot.pause()
        assert text_of(app.screen, "#detail").startswith("glm4-tiny Q8_0")
        assert "KL p99 0.010" in text_of(app.screen, "#detail")


async def test_bench_export_refuses_a_bad_path_in_the_prompt(
    make_app: MakeApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken.json").write_text("{}")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f3")
        await settle(pilot)
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, BenchScreen)  # nothing to export yet
        await pilot.press("ctrl+r")
        await settle(pilot)
        await pilot.press("ctrl+s")
        await pilot.pause()
        modal = app.screen
        assert isinstance(modal, ExportModal)
        path = modal.query_one("#path", Input)
        assert path.value.startswith(str(tmp_path / "edgeglm-bench-"))
        for bad, why in ((tmp_path / "nowhere" / "x", "no such folder"),
                         (tmp_path / "taken", "exist already")):  # fmt: skip
            path.value = str(bad)
            await pilot.press("enter")
            await pilot.pause()
            assert app.screen is modal and why in text_of(modal, "#errors")
        path.value = str(tmp_path / "mine.json")  # a suffix is replaced, not doubled
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, BenchScreen)
    assert sorted(p.name for p in tmp_path.glob("mine*")) == [
        "mine.csv", "mine.json", "mine.md", "mine.svg"
    ]  # fmt: skip
    assert (tmp_path / "taken.json").read_text() == "{}"
