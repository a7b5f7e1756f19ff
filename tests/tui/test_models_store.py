"""The Models screen's model store: listing, pull (a real hub on 127.0.0.1) with
cancel and resume, import of real bundles, verify, delete, conversion into an entry.

The store is real: each test has its own ``EDGEGLM_MODELS`` (conftest), filled
through the store's API from a committed fixture checkpoint.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import HF_FIXTURES
from hub_server import Fault, HubServer, hub_server, online, padded_repo
from textual.widgets import DataTable, Input, ProgressBar, Select, Static
from tui_support.fake_backend import FakeBackend, FakeFactory
from tui_support.fakes import MakeApp
from tui_support.polling import until

from edgeglm.paths import store_dir
from edgeglm.store.bundle import write_bundle
from edgeglm.store.importer import verify
from edgeglm.store.layout import Entry, entries, find, load_entry
from edgeglm.store.pull import PARTIAL_DIR, pull_staging
from edgeglm.tui.modal_confirm import ConfirmModal
from edgeglm.tui.modal_store import ImportModal, PullModal
from edgeglm.tui.screen_models import ModelsScreen

pytestmark = pytest.mark.anyio  # Pilot tests run on asyncio (see conftest)
NAME = "test/glm4"  # the conftest's store entry
REPO = "zai-org/glm-tiny"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    with hub_server() as server:
        online(monkeypatch, server.url)
        yield server


async def settle(pilot: Any) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def store_rows(app: Any) -> list[list[str]]:
    table = app.screen.query_one("#store", DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def messages(app: Any) -> list[str]:
    return [n.message for n in app._notifications]


def staged() -> list[str]:
    """What the store's staging area holds (work folders of pulls and imports)."""
    base = store_dir() / ".staging"
    return sorted(p.name for p in base.iterdir()) if base.is_dir() else []


async def open_store(pilot: Any) -> ModelsScreen:
    await pilot.press("f2")
    await settle(pilot)
    screen = pilot.app.screen
    assert isinstance(screen, ModelsScreen)
    screen.query_one("#store", DataTable).focus()
    await pilot.pause()
    return screen


async def ask(pilot: Any, key: str, modal: type, **fields: str) -> None:
    """Open a store modal with ``key``, fill in its inputs, press Enter."""
    await pilot.press(key)
    await until(pilot, lambda: isinstance(pilot.app.screen, modal), f"the {modal.__name__}")
    for name, value in fields.items():
        pilot.app.screen.query_one(f"#{name}", Input).value = value
    pilot.app.screen.query_one(Input).focus()
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(pilot.app.screen, ModelsScreen), "the modal to close")


async def test_the_store_is_listed_beside_the_local_files(
    make_app: MakeApp, entry: Entry, artifacts: list[Path]
) -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await open_store(pilot)
        gguf = entry.artifact("Q4_K_M")
        assert gguf is not None
        assert store_rows(app) == [
            [NAME, f"{NAME}@0000000", "source", "", store_size(entry, "source"), "recorded"],
            ["", "", "Q4_K_M.gguf", "Q4_K_M", store_size(entry, "Q4_K_M.gguf"), "recorded"],
        ]
        # what the screen listed before is still there
        assert app.screen.query_one("#artifacts", DataTable).row_count == len(artifacts)


async def test_the_model_picker_offers_a_store_models_artifacts(
    make_app: MakeApp, entry: Entry
) -> None:
    from textual.widgets import OptionList

    from edgeglm.tui.modal_model import ModelPickerModal

    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+t")
        await until(pilot, lambda: isinstance(app.screen, ModelPickerModal), "the picker")
        await settle(pilot)
        ol = app.screen.query_one("#models", OptionList)
        listed = [str(ol.get_option_at_index(i).prompt) for i in range(ol.option_count)]
        assert any(f"{NAME}:Q4_K_M" in p for p in listed), listed
        await pilot.press("escape")
        await settle(pilot)
        screen = await open_store(pilot)
        # on the Models screen it is listed once, in the store table only
        local = screen.query_one("#artifacts", DataTable)
        gguf = entry.artifact("Q4_K_M")
        assert gguf is not None and str(gguf.path) not in [str(k.value) for k in local.rows]


def store_size(entry: Entry, part: str) -> str:
    from edgeglm.units import human_bytes

    if part == "source":
        return human_bytes(sum(f.size for f in entry.source_files))
    found = entry.artifact(part)
    assert found is not None
    return human_bytes(found.size)


async def test_verify_names_a_flipped_byte_and_passes_an_intact_entry(
    make_app: MakeApp, entry: Entry
) -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await open_store(pilot)
        await pilot.press("ctrl+t")
        await settle(pilot)
        assert [r[5] for r in store_rows(app)] == ["verified", "verified"]
        assert messages(app)[-1] == f"{NAME}: verified"

        weights = entry.source_dir / "model.safetensors"
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0x01  # same size: only a re-hash sees it
        weights.write_bytes(data)
        await pilot.press("ctrl+r")
        await settle(pilot)
        # a rescan forgets what was verified, and a size check cannot see it
        assert [r[5] for r in store_rows(app)] == ["recorded", "recorded"]
        await pilot.press("ctrl+t")
        await settle(pilot)
        assert [r[5] for r in store_rows(app)] == ["FAILED (1)", "verified"]
        last = list(app._notifications)[-1]
        assert last.severity == "error"
        assert last.message == f"{weights}: sha256 differs from the manifest (changed or corrupted)"


async def test_a_pull_is_cancelled_then_resumed(
    make_app: MakeApp, hub: HubServer, cache: Path
) -> None:
    files = padded_repo(HF_FIXTURES / "glm", 24 << 20)
    hub.add_repo(REPO, files)
    # the transfer holds after 16 MiB: a partial file is on disk while we press Esc
    hub.fault(REPO, "padding.safetensors", Fault("stall", after=16 << 20))
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_store(pilot)
        await ask(pilot, "ctrl+g", PullModal, repo=REPO)
        assert screen.job == "pull"
        await until(pilot, hub.stalled.is_set, "the transfer to stall")
        # huggingface_hub writes 10 MiB at a time: wait until the bar shows one written
        bar = screen.query_one("#progress", ProgressBar)
        await until(pilot, lambda: (bar.progress or 0) >= 10 << 20, "10 MiB on the bar")
        assert "padding.safetensors" in str(screen.query_one("#status", Static).render())
        assert screen.has_class("job")  # the Cancel button is shown
        await pilot.press("escape")
        hub.release.set()  # the held connection ends; the pull sees the cancel
        await settle(pilot)
        assert screen.job is None
        assert messages(app)[-1] == "pull cancelled; pulling again resumes"
        assert entries() == []
        [partial] = (pull_staging(REPO, None) / PARTIAL_DIR).iterdir()
        have = partial.stat().st_size
        assert 0 < have < len(files["padding.safetensors"])

        hub.clear_faults()
        await ask(pilot, "ctrl+g", PullModal, repo=REPO)
        await settle(pilot)
        assert messages(app)[-1].startswith(f"pulled {REPO} at ")
        ranges = [r.headers.get("range") for r in hub.got("GET", "/padding.safetensors")]
        assert ranges[-1] == f"bytes={have}-"  # resumed, not fetched again
        [row] = store_rows(app)
        assert row[:3] == [REPO, f"{REPO}@{entries()[0].manifest.source.revision[:7]}", "source"]
        assert verify(entries()[0]) == []
        assert not pull_staging(REPO, None).exists()


async def test_pull_offline_is_one_line(make_app: MakeApp) -> None:
    app = make_app()  # the suite runs with HF_HUB_OFFLINE=1
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_store(pilot)
        await ask(pilot, "ctrl+g", PullModal, repo=REPO)
        await settle(pilot)
        assert screen.job is None
        last = list(app._notifications)[-1]
        assert last.severity == "error"
        assert last.message == f"{REPO}: not available offline (HF_HUB_OFFLINE=1)"
        assert store_rows(app) == [] and staged() == []  # not even a lock file


async def test_the_pull_modal_refuses_what_is_not_a_repo_id(make_app: MakeApp) -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_store(pilot)
        await pilot.press("ctrl+g")
        await until(pilot, lambda: isinstance(app.screen, PullModal), "the modal")
        app.screen.query_one("#repo", Input).value = "../etc"
        app.screen.query_one("#repo", Input).focus()
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, PullModal) and screen.job is None
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen, "the modal to close")
        assert screen.job is None


@pytest.mark.parametrize("form", ["tar", "folder"])
async def test_a_bundle_is_imported_and_verified(
    make_app: MakeApp, template: Path, tmp_path: Path, form: str
) -> None:
    bundle = write_bundle(load_entry(template), tmp_path / "glm4.tar").output
    if form == "folder":
        unpacked = tmp_path / "unpacked"
        with tarfile.open(bundle) as tar:
            tar.extractall(unpacked, filter="data")
        bundle = unpacked
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await open_store(pilot)
        await ask(pilot, "ctrl+o", ImportModal, path=str(bundle))
        await settle(pilot)
        assert messages(app)[-1].startswith(f"imported {NAME}: ")
        assert [r[2] for r in store_rows(app)] == ["source", "Q4_K_M.gguf"]
        assert verify(entries()[0]) == [] and staged() == []
        # a second import finds every file there already
        await ask(pilot, "ctrl+o", ImportModal, path=str(bundle))
        await settle(pilot)
        assert messages(app)[-1] == f"{NAME} is in the store already with every file of the bundle"


async def test_a_corrupted_bundle_is_one_line_and_leaves_nothing(
    make_app: MakeApp, template: Path, tmp_path: Path
) -> None:
    bundle = write_bundle(load_entry(template), tmp_path / "glm4.tar").output
    with tarfile.open(bundle) as tar:
        member = tar.getmember("source/model.safetensors")
    data = bytearray(bundle.read_bytes())
    data[member.offset_data + member.size // 2] ^= 0x01
    bundle.write_bytes(data)
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_store(pilot)
        await ask(pilot, "ctrl+o", ImportModal, path=str(bundle))
        await settle(pilot)
        assert screen.job is None
        last = list(app._notifications)[-1]
        assert last.severity == "error"
        assert "\n" not in last.message
        assert last.message.startswith(f"{bundle}: source/model.safetensors: sha256 ")
        assert store_rows(app) == [] and entries() == [] and staged() == []


async def test_the_import_modal_wants_an_existing_path(make_app: MakeApp, tmp_path: Path) -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_store(pilot)
        await pilot.press("ctrl+o")
        await until(pilot, lambda: isinstance(app.screen, ImportModal), "the modal")
        app.screen.query_one("#path", Input).value = str(tmp_path / "nowhere.tar")
        app.screen.query_one("#path", Input).focus()
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ImportModal) and screen.job is None
        await pilot.press("escape")


async def test_delete_removes_an_artifact_then_the_model(make_app: MakeApp, entry: Entry) -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await open_store(pilot)
        await pilot.press("down", "delete")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal), "the question")
        await pilot.press("y")
        await settle(pilot)
        assert [r[2] for r in store_rows(app)] == ["source"]
        fresh = find(NAME)
        assert fresh is not None and fresh.artifacts() == [] and verify(fresh) == []
        await pilot.press("delete")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal), "the question")
        await pilot.press("y")
        await settle(pilot)
        assert store_rows(app) == [] and find(NAME) is None


async def test_converting_a_store_model_records_it_in_the_entry(
    make_app: MakeApp, entry: Entry
) -> None:
    app = make_app()  # the fake converter writes a small real GGUF
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_store(pilot)
        screen.query_one("#source", Input).value = NAME
        screen.query_one("#quant", Select).value = "Q8_0"
        await pilot.press("ctrl+k")
        await settle(pilot)
        fresh = find(NAME)
        assert fresh is not None and fresh.artifact("Q8_0") is not None
        assert verify(fresh) == []  # recorded, not an extra file
        assert [r[2] for r in store_rows(app)] == ["source", "Q4_K_M.gguf", "Q8_0.gguf"]


async def test_the_loaded_store_model_is_not_deleted(make_app: MakeApp, entry: Entry) -> None:
    gguf = entry.artifact("Q4_K_M")
    assert gguf is not None
    backend = FakeBackend()
    backend.path = gguf.path  # the chat runs the entry's GGUF
    app = make_app(factory=FakeFactory(backend))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await open_store(pilot)
        await pilot.press("delete")  # the source row: the whole entry, its GGUF with it
        await pilot.pause()
        assert isinstance(app.screen, ModelsScreen)
        assert "load another model first" in messages(app)[-1]
    assert verify(entry) == []
