"""Models screen and model picker: GGUF files and ONNX folders, headers read off the UI
thread and memoized, one conversion cache with the CLI, deleting with confirmation."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import HF_FIXTURES
from textual.widgets import DataTable, Input, OptionList, Select, Static
from tui_support.fake_backend import FakeBackend, FakeFactory
from tui_support.fakes import MakeApp, write_gguf
from tui_support.polling import until

from edgeglm import artifacts as edgeglm_artifacts
from edgeglm.artifacts import cached_path, ensure_gguf, ensure_onnx
from edgeglm.errors import UsageError
from edgeglm.tui import artifacts as tui_artifacts
from edgeglm.tui.artifacts import ArtifactInfo
from edgeglm.tui.modal_confirm import ConfirmModal
from edgeglm.tui.modal_model import ModelPickerModal
from edgeglm.tui.screen_chat import ChatScreen
from edgeglm.tui.screen_models import ModelsScreen
from edgeglm.tui.services import convert_gguf

pytestmark = pytest.mark.anyio  # Pilot tests run on asyncio (see conftest)
GLM4 = HF_FIXTURES / "glm4"


async def settle(pilot: Any) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def rows(app: Any) -> list[list[str]]:
    table = app.screen.query_one(DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def prompts(app: Any) -> list[str]:
    ol = app.screen.query_one("#models", OptionList)
    return [str(ol.get_option_at_index(i).prompt) for i in range(ol.option_count)]


@pytest.fixture
def gated_reads(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """A slow disk: every GGUF header read waits until the test sets the event
    (then reads the real file)."""
    gate = threading.Event()
    real = tui_artifacts._read_gguf

    def slow(info: ArtifactInfo) -> ArtifactInfo:
        gate.wait(60)
        return real(info)

    monkeypatch.setattr(tui_artifacts, "_read_gguf", slow)
    return gate


def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The paths whose GGUF header is read from now on (each read still happens)."""
    reads: list[Path] = []
    real = tui_artifacts._read_gguf

    def counted(info: ArtifactInfo) -> ArtifactInfo:
        reads.append(info.path)
        return real(info)

    monkeypatch.setattr(tui_artifacts, "_read_gguf", counted)
    return reads


@pytest.fixture
def settled_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Memoize files written just now (the memo otherwise waits a second for a
    new file's timestamps to settle, see edgeglm.artifacts)."""
    monkeypatch.setattr(edgeglm_artifacts, "RACY_NS", 0)


async def test_picker_lists_at_once_and_keys_work_while_headers_are_read(
    make_app: MakeApp, artifacts: list[Path], gated_reads: threading.Event
) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("ctrl+t")
        await until(pilot, lambda: isinstance(app.screen, ModelPickerModal), "the picker")
        await until(pilot, lambda: len(prompts(app)) == 3, "the listing")
        assert all("reading…" in p for p in prompts(app)[1:])
        await pilot.press("down")  # the app answers keys while the worker reads
        assert app.screen.query_one("#models", OptionList).highlighted == 1
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, ChatScreen), "the picker to close")
        gated_reads.set()
        await settle(pilot)


async def test_picker_fills_in_metadata_as_it_is_read(
    make_app: MakeApp, artifacts: list[Path]
) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+t")
        await settle(pilot)
        listed = prompts(app)
        assert "GGUF Q4_K_M · glm4" in listed[1] and "GGUF Q8_0 · glm4" in listed[2]


async def test_known_headers_show_at_once_on_the_next_open(
    make_app: MakeApp,
    artifacts: list[Path],
    settled_files: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+t")
        await settle(pilot)  # read once
        await pilot.press("escape")
        await settle(pilot)
        reads = count_reads(monkeypatch)
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert "GGUF Q4_K_M · glm4" in prompts(app)[1]  # before any worker ran
        await settle(pilot)
        assert reads == []  # and nothing is read again
        await pilot.press("escape")
        await pilot.press("f2")
        await settle(pilot)
        assert [r[2] for r in rows(app)] == ["Q4_K_M", "Q8_0"]
        assert reads == []


def test_metadata_is_read_once_per_version_of_the_file(
    artifacts: list[Path], settled_files: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = artifacts[0].resolve()
    reads = count_reads(monkeypatch)
    assert not tui_artifacts.peek(path, "gguf").known
    first = tui_artifacts.read(path, "gguf")
    assert (first.quant, first.architecture, first.name) == ("Q4_K_M", "glm4", "glm4-tiny")
    assert tui_artifacts.peek(path, "gguf") == first
    assert tui_artifacts.read(path, "gguf") == first and len(reads) == 1
    tui_artifacts.save()
    monkeypatch.setattr(tui_artifacts, "_memo", None)  # a fresh process: the memo on disk
    assert tui_artifacts.peek(path, "gguf") == first
    write_gguf(path, "glm4", 7, "glm4-tiny")  # rewritten in place: another version
    assert not tui_artifacts.peek(path, "gguf").known
    assert tui_artifacts.read(path, "gguf").quant == "Q8_0" and len(reads) == 2


def test_a_file_written_just_now_is_not_memoized(artifacts: list[Path]) -> None:
    """Its timestamps could still change without changing its identity ("racily clean")."""
    path = artifacts[0].resolve()
    assert tui_artifacts.read(path, "gguf").quant == "Q4_K_M"
    assert not tui_artifacts.peek(path, "gguf").known


def test_a_malformed_gguf_is_listed_with_the_reason(cache: Path) -> None:
    bad = cache / "artifacts" / "broken-0123456789abcdef" / "Q4_0.gguf"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"GGUF" + b"\xff" * 64)
    [(path, kind)] = tui_artifacts.find(tui_artifacts.roots())
    info = tui_artifacts.read(path, kind)
    assert info.known and info.error and info.label == "broken"


async def test_conversion_lands_where_run_converts(make_app: MakeApp) -> None:
    app = make_app(convert=convert_gguf)  # the real converter
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("f2")
        await settle(pilot)
        screen = app.screen
        screen.query_one("#source", Input).value = str(GLM4)
        screen.query_one("#quant", Select).value = "Q8_0"
        await pilot.press("ctrl+k")
        await settle(pilot)
        expected = cached_path(GLM4, "Q8_0.gguf")
        assert expected.is_file()
        [row] = rows(app)
        assert row[:4] == ["glm4", "GGUF", "Q8_0", "glm4"]
        assert row[5] == f"{expected.parent.name}/Q8_0.gguf"
        made = expected.stat().st_mtime_ns
        # `edgeglm run` finds it: no second conversion, no second artifact
        assert ensure_gguf(GLM4, "Q8_0") == expected and expected.stat().st_mtime_ns == made
        await pilot.press("ctrl+k")  # and the app does not convert it again either
        await settle(pilot)
        assert "already converted" in str(screen.query_one("#status", Static).render())
        assert len(rows(app)) == 1 and expected.stat().st_mtime_ns == made


async def test_the_app_lists_what_run_converted_once(make_app: MakeApp) -> None:
    made = ensure_gguf(GLM4, "Q8_0")  # what `edgeglm run tests/fixtures/hf/glm4 -q Q8_0` makes
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("f2")
        await settle(pilot)
        assert [r[5] for r in rows(app)] == [f"{made.parent.name}/Q8_0.gguf"]


async def test_onnx_folders_are_converted_listed_and_opened(make_app: MakeApp) -> None:
    factory = FakeFactory()
    app = make_app(factory=factory)  # the real ONNX converter (the services' default)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("f2")
        await settle(pilot)
        screen = app.screen
        screen.query_one("#format", Select).value = "onnx"
        await pilot.pause()
        assert screen.query_one("#quant", Select).value == "int4"
        screen.query_one("#source", Input).value = str(GLM4)
        await pilot.press("ctrl+k")
        await settle(pilot)
        expected = cached_path(GLM4, "onnx-int4")
        assert (expected / "genai_config.json").is_file()
        assert ensure_onnx(GLM4, "int4") == expected  # the CLI's path
        [row] = rows(app)
        assert row[:3] == ["glm4", "ONNX", "int4"] and row[3] not in ("?", "…")
        screen.query_one(DataTable).focus()
        await pilot.press("enter")  # chat with it
        await settle(pilot)
        assert isinstance(app.screen, ChatScreen)
    assert factory.calls[-1][0] == str(expected.resolve())


async def test_delete_asks_first_then_removes_the_cached_artifact(
    make_app: MakeApp, artifacts: list[Path], cache: Path
) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f2")
        await settle(pilot)
        await pilot.press("delete")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmModal)
        await pilot.press("n")
        await settle(pilot)
        assert artifacts[0].is_file() and len(rows(app)) == 2
        await pilot.press("delete")
        await pilot.pause()
        await pilot.press("y")
        await settle(pilot)
        assert not artifacts[0].exists() and artifacts[1].is_file()
        assert [r[2] for r in rows(app)] == ["Q8_0"]
        await pilot.press("delete")
        await pilot.pause()
        await pilot.press("y")
        await settle(pilot)
        assert rows(app) == [] and not artifacts[1].parent.exists()  # no empty folder left
    assert (cache / "artifacts").is_dir()


async def test_delete_never_removes_a_users_file(make_app: MakeApp, tmp_path: Path) -> None:
    own = write_gguf(tmp_path / "mine" / "x.gguf", "glm4", 7, "mine")
    tui_artifacts.add_user_path(own.parent)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("f2")
        await settle(pilot)
        assert len(rows(app)) == 1
        await pilot.press("delete")
        await pilot.pause()
        modal = app.screen
        assert isinstance(modal, ConfirmModal) and "Stop listing" in modal.question
        await pilot.press("y")
        await settle(pilot)
        assert rows(app) == []
    assert own.is_file()  # only forgotten


def test_delete_refuses_anything_outside_the_cache(cache: Path, tmp_path: Path) -> None:
    own = write_gguf(tmp_path / "mine" / "x.gguf", "glm4", 7, "mine")
    with pytest.raises(UsageError, match="not in EdgeGLM's cache"):
        tui_artifacts.delete(ArtifactInfo(own, "gguf", 1))
    # a link in the cache that leads out of it names the file outside
    link = cache / "artifacts" / "linked" / "x.gguf"
    link.parent.mkdir(parents=True)
    link.symlink_to(own)
    [(found, kind)] = tui_artifacts.find(tui_artifacts.roots())
    assert found == own.resolve()
    with pytest.raises(UsageError):
        tui_artifacts.delete(ArtifactInfo(found, kind, 1))
    with pytest.raises(UsageError):
        tui_artifacts.delete(ArtifactInfo(link, "gguf", 1))
    assert own.is_file() and link.is_symlink()


async def test_the_loaded_model_is_not_deleted(make_app: MakeApp, artifacts: list[Path]) -> None:
    backend = FakeBackend()
    backend.path = artifacts[0]  # where LlamaCppModel says it was loaded from
    app = make_app(factory=FakeFactory(backend))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("f2")
        await settle(pilot)
        await pilot.press("delete")
        await pilot.pause()
        assert isinstance(app.screen, ModelsScreen)
        assert "load another model first" in list(app._notifications)[-1].message
    assert artifacts[0].is_file()


def test_find_lists_each_artifact_once(cache: Path, tmp_path: Path) -> None:
    onnx = cache / "artifacts" / "glm4-0123456789abcdef" / "onnx-int4"
    onnx.mkdir(parents=True)
    (onnx / "genai_config.json").write_text("{}")
    (onnx / "model.onnx").write_bytes(b"")
    gguf = write_gguf(cache / "artifacts" / "glm4-0123456789abcdef" / "Q8_0.gguf", "glm4", 7, "g")
    hidden = cache / "artifacts" / "glm4-0123456789abcdef" / f".Q4_0.gguf.{os.getpid()}.tmp.gguf"
    hidden.write_bytes(b"")  # a conversion in progress
    tui_artifacts.add_user_path(gguf)  # also added by hand: still one entry
    found = tui_artifacts.find(tui_artifacts.roots())
    assert sorted(found) == sorted([(onnx.resolve(), "onnx"), (gguf.resolve(), "gguf")])
    assert tui_artifacts.peek(onnx, "onnx").label == "glm4"
