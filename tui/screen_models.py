"""Models screen: local GGUF files and ONNX folders with their metadata; convert, add,
delete; and the model store: pull from a hub, import a bundle, verify an entry.

The listing never waits for a header: rows appear at once with what is
known, and a worker fills in architecture and quant as it reads them (see
artifacts.py). Conversions go into the same cache folder as ``edgeglm run``'s
(a store model's into its entry, recorded in its manifest).

Pull, import and verify run one at a time in a thread worker, with the
progress row below the forms; Esc (or its Cancel button) stops them: a pull
keeps what it fetched for the next one, an import leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Input, Label, ProgressBar, Select, Static
from textual.widgets.data_table import ColumnKey

from edgeglm.errors import EdgeGLMError
from edgeglm.units import human_bytes

from . import artifacts
from .artifact_scan import scan_to
from .artifacts import ArtifactInfo, Kind
from .messages import (
    ArtifactRead,
    ArtifactsFound,
    ConvertEnded,
    ConvertProgress,
    StoreJobEnded,
    StoreListed,
    StoreProgress,
)
from .modal_confirm import ConfirmModal
from .modal_store import ImportModal, PullModal
from .services import Services
from .store_items import StoreItem, list_store, verify_items
from .widgets_common import TopBar, describe_error

COLUMNS = ("Name", "Format", "Quant", "Arch", "Size", "Path")
STORE_COLUMNS = ("Model", "Source", "Part", "Quant", "Size", "State")
JOB_VERBS = {"pull": "pulling", "import": "importing", "verify": "verifying"}
# shown until the header is read; short, since a column never narrows again
PENDING = Text("…", style="dim")


class ModelsScreen(Screen[None]):
    DEFAULT_CSS = """
    ModelsScreen DataTable { height: 1fr; border: round $primary; }
    ModelsScreen #cancel-job { display: none; margin-left: 1; }
    ModelsScreen.job #cancel-job { display: block; }
    ModelsScreen #forms { height: auto; border-top: solid $primary; padding: 0 1; }
    ModelsScreen Horizontal { height: 1; margin-bottom: 1; }
    ModelsScreen Horizontal Label { width: 10; }
    ModelsScreen Horizontal Input { width: 1fr; }
    ModelsScreen #format { width: 10; margin: 0 0 0 1; }
    ModelsScreen #quant { width: 14; margin: 0 1; }
    ModelsScreen #progress-row { margin-bottom: 0; }
    ModelsScreen #progress-row ProgressBar { width: 32; }
    ModelsScreen #status { width: 1fr; color: $text-muted; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "chat", "Chat with it", show=True),
        Binding("ctrl+r", "rescan", "Rescan"),
        Binding("ctrl+k", "convert", "Convert"),
        Binding("delete,ctrl+d", "delete", "Delete"),
        Binding("ctrl+g", "pull", "Pull"),
        Binding("ctrl+o", "import_bundle", "Import"),
        Binding("ctrl+t", "verify", "Verify"),
        Binding("escape", "cancel_job", "Cancel", show=False),
    ]

    def __init__(
        self,
        services: Services,
        open_in_chat: Callable[[str], None],
        in_use: Callable[[], Path | None] = lambda: None,
    ) -> None:
        super().__init__()
        self.services = services
        self.open_in_chat = open_in_chat
        self.in_use = in_use  # the loaded model's file or folder: not deleted under it
        self.found: dict[str, ArtifactInfo] = {}  # row key (the path) -> what is known
        self.converting = False
        self._columns: dict[str, ColumnKey] = {}
        self._select_after_scan: str | None = None
        self.stored: dict[str, StoreItem] = {}  # store row key -> the row
        # store row key -> problems a re-hash found this session (empty: verified)
        self.verified: dict[str, tuple[str, ...]] = {}
        self.job: str | None = None  # the pull, import or verify running, if any
        self._stop_job = threading.Event()

    def compose(self) -> ComposeResult:
        yield TopBar("models")
        yield DataTable(cursor_type="row", zebra_stripes=True, id="artifacts")
        yield DataTable(cursor_type="row", zebra_stripes=True, id="store")
        with Vertical(id="forms"):
            with Horizontal():
                yield Label("Add path")
                yield Input(
                    placeholder="a .gguf file, an ONNX folder or a folder of them, then Enter",
                    id="add",
                    compact=True,
                )
            with Horizontal():
                yield Label("Convert")
                yield Input(placeholder="HF folder or cached repo id", id="source", compact=True)
                yield Select(
                    [("GGUF", "gguf"), ("ONNX", "onnx")],
                    value="gguf",
                    allow_blank=False,
                    id="format",
                    compact=True,
                )
                yield Select(
                    self._quant_options("gguf"),
                    value=self._default_quant("gguf"),
                    allow_blank=False,
                    id="quant",
                    compact=True,
                )
                yield Button("Convert", id="convert", compact=True)
            with Horizontal(id="progress-row"):
                yield ProgressBar(total=1, id="progress", show_eta=False)
                yield Static("", id="status")
                yield Button("Cancel (Esc)", id="cancel-job", compact=True)
        yield Footer()

    def _quants(self, fmt: str) -> list[str]:
        return self.services.quants() if fmt == "gguf" else self.services.onnx_quants()

    def _quant_options(self, fmt: str) -> list[tuple[str, str]]:
        return [(q, q) for q in self._quants(fmt)]

    def _default_quant(self, fmt: str) -> str:
        quants = self._quants(fmt)
        for preferred in ("Q4_K_M", "int4"):
            if preferred in quants:
                return preferred
        return quants[0]

    def on_mount(self) -> None:
        table = self.query_one("#artifacts", DataTable)
        for name in COLUMNS:
            self._columns[name] = table.add_column(name, key=name)
        table.border_title = "Local models · Enter: chat · Del: delete"
        store = self.query_one("#store", DataTable)
        for name in STORE_COLUMNS:
            store.add_column(name, key=name)
        store.border_title = "Model store · ^G pull · ^O import · ^T verify"
        self._show(self._local(artifacts.recent()))  # the last listing, while this one runs
        self.action_refresh()
        table.focus()

    # -- the listing -------------------------------------------------------

    def action_refresh(self) -> None:
        self.scan()
        self.scan_store()

    def action_rescan(self) -> None:
        """Ctrl+R: list everything again, forgetting what was verified (files may
        have changed since; a listing only checks sizes)."""
        self.verified = {}
        self.action_refresh()

    @work(thread=True, exclusive=True, group="artifacts")
    def scan(self) -> None:
        scan_to(self)

    def on_artifacts_found(self, m: ArtifactsFound) -> None:
        if m.error is not None:
            self.notify(f"Could not scan for models: {m.error}", severity="error")
            return
        local = self._local(m.found)
        self._show(local)
        if self._select_after_scan in self.found:
            table = self.query_one("#artifacts", DataTable)
            table.move_cursor(row=table.get_row_index(self._select_after_scan))
        self._select_after_scan = None
        if not local and not self.converting and self.job is None:
            self.query_one("#status", Static).update(
                Text(f"No models yet in {artifacts.artifacts_dir()}: convert one below")
            )

    @staticmethod
    def _local(found: list[ArtifactInfo]) -> list[ArtifactInfo]:
        """The scan without the store's artifacts: the store table lists those."""
        return [info for info in found if artifacts.store_model(info.path) is None]

    def _show(self, found: list[ArtifactInfo]) -> None:
        table = self.query_one("#artifacts", DataTable)
        keep = table.cursor_row
        table.clear()
        self.found = {}
        for info in found:
            key = str(info.path)
            self.found[key] = info
            table.add_row(*self._cells(info), key=key)
        if found:
            table.move_cursor(row=min(keep, len(found) - 1))

    def on_artifact_read(self, m: ArtifactRead) -> None:
        key = str(m.info.path)
        if key not in self.found:
            return
        self.found[key] = m.info
        table = self.query_one("#artifacts", DataTable)
        for name, value in zip(COLUMNS, self._cells(m.info), strict=True):
            table.update_cell(key, self._columns[name], value, update_width=True)

    @staticmethod
    def _cells(a: ArtifactInfo) -> tuple[Text | str, ...]:
        if not a.known:
            arch: Text | str = PENDING
        elif a.error:
            arch = Text(a.error, style="red")
        else:
            arch = a.architecture or "?"
        return (
            Text(a.label),
            a.format,
            a.quant or ("" if not a.known else "?"),
            arch,
            human_bytes(a.size_bytes),
            Text(_short(a.path), style="dim"),
        )

    def _highlighted(self) -> ArtifactInfo | None:
        table = self.query_one("#artifacts", DataTable)
        if not self.found or table.cursor_row < 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self.found.get(key or "")

    # -- chat, add, delete -------------------------------------------------

    def action_chat(self) -> None:
        table = self.query_one("#artifacts", DataTable)
        info = self._highlighted()
        if table.has_focus and info is not None:
            self.open_in_chat(str(info.path))
        item = self._store_highlighted()
        if self.query_one("#store", DataTable).has_focus and item is not None:
            self.open_in_chat(item.key)

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        # a store row's key is its store name ("org/model", "org/model:Q4_K_M.gguf"),
        # an artifact row's its path: both are what `edgeglm run` takes
        if event.row_key.value:
            self.open_in_chat(event.row_key.value)

    @on(Input.Submitted, "#add")
    def _add_path(self, event: Input.Submitted) -> None:
        path = Path(event.value.strip()).expanduser()
        if not event.value.strip() or not path.exists():
            self.notify(f"{path}: no such file or folder", severity="error")
            return
        try:
            artifacts.add_user_path(path.resolve())
        except OSError as e:
            self.notify(f"Could not remember {path}: {e.strerror or e}", severity="error")
            return
        event.input.value = ""
        self.action_refresh()

    def action_delete(self) -> None:
        if self.query_one("#store", DataTable).has_focus:
            self._delete_stored()
            return
        info = self._highlighted()
        if info is None:
            return
        used = self.in_use()
        if used is not None and used.resolve() == info.path:
            self.notify("The chat is using it: load another model first", severity="warning")
            return
        if info.in_cache:
            question = f"Delete {info.label} ({info.format} {info.quant or ''})?".replace(" )", ")")
            detail = (
                f"{_short(info.path)} ({human_bytes(info.size_bytes)}) in EdgeGLM's "
                "conversion cache; converting the checkpoint again makes it again."
            )
            self.app.push_screen(
                ConfirmModal(question, detail), lambda yes: self._delete(info, yes)
            )
            return
        root = next((p for p in artifacts.user_paths() if info.path.is_relative_to(p)), None)
        if root is None:
            self.notify(f"{info.path} is not in EdgeGLM's cache", severity="warning")
            return
        question = f"Stop listing {root}?"
        detail = "You added it. Nothing is deleted: your files stay where they are."
        self.app.push_screen(
            ConfirmModal(question, detail, yes="Stop listing"), lambda yes: self._forget(root, yes)
        )

    def _delete(self, info: ArtifactInfo, yes: bool | None) -> None:
        if not yes:
            return
        try:
            artifacts.delete(info)
        except Exception as e:  # the UI boundary: a refusal or an OSError becomes a message
            self.notify(describe_error(e), title="Not deleted", severity="error")
            return
        self.notify(f"Deleted {info.path}")
        self.action_refresh()

    def _forget(self, root: Path, yes: bool | None) -> None:
        if not yes:
            return
        try:
            artifacts.forget_user_path(root)
        except OSError as e:
            self.notify(f"Could not update the list: {e.strerror or e}", severity="error")
            return
        self.notify(f"No longer listing {root}")
        self.action_refresh()

    # -- converting ----------------------------------------------------------

    @on(Select.Changed, "#format")
    def _format_changed(self, event: Select.Changed) -> None:
        fmt = str(event.value)
        quant = self.query_one("#quant", Select)
        quant.set_options(self._quant_options(fmt))
        quant.value = self._default_quant(fmt)

    @on(Input.Submitted, "#source")
    @on(Button.Pressed, "#convert")
    def action_convert(self) -> None:
        source = self.query_one("#source", Input).value.strip()
        fmt: Kind = "onnx" if self.query_one("#format", Select).value == "onnx" else "gguf"
        quant = str(self.query_one("#quant", Select).value)
        if self.converting:
            self.notify("A conversion is already running", severity="warning")
            return
        if self.job is not None:
            self.notify(f"Wait for the {self.job} to end, or cancel it (Esc)", severity="warning")
            return
        if not source:
            self.query_one("#source", Input).focus()
            self.notify("Type a Hugging Face folder or repo id to convert", severity="warning")
            return
        self.converting = True
        self.query_one("#progress", ProgressBar).update(total=1, progress=0)
        self.query_one("#status", Static).update(Text(f"converting {source} to {quant}…"))
        self.convert(source, fmt, quant)

    @work(thread=True, exclusive=True, group="convert")
    def convert(self, source: str, fmt: Kind, quant: str) -> None:
        def progress(tensor: str, i: int, n: int, done: int, total: int) -> None:
            self.post_message(ConvertProgress(tensor, i, n, done, total))

        try:
            checkpoint, out = artifacts.conversion_target(source, fmt, quant)
        except Exception as e:
            self.post_message(ConvertEnded(None, describe_error(e)))
            return
        if out.exists():
            self.post_message(ConvertEnded(str(out), existed=True))
            return
        made = not out.parent.exists()
        run = self.services.convert if fmt == "gguf" else self.services.convert_onnx
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            run(str(checkpoint), out, quant, progress)
            _record_in_store(checkpoint, out)
        except Exception as e:
            if made:  # as edgeglm.artifacts does: no empty folder left behind
                with contextlib.suppress(OSError):
                    out.parent.rmdir()
            self.post_message(ConvertEnded(None, describe_error(e)))
            return
        self.post_message(ConvertEnded(str(out)))

    def on_convert_progress(self, m: ConvertProgress) -> None:
        self.query_one("#progress", ProgressBar).update(total=m.total_bytes, progress=m.done_bytes)
        self.query_one("#status", Static).update(Text(f"{m.index}/{m.count} {m.tensor}"))

    def on_convert_ended(self, m: ConvertEnded) -> None:
        self.converting = False
        status = self.query_one("#status", Static)
        if m.error is not None:
            status.update(Text(f"conversion failed: {m.error}"))
            self.notify(m.error, title="Conversion failed", severity="error")
            return
        bar = self.query_one("#progress", ProgressBar)
        bar.update(total=bar.total or 1, progress=bar.total or 1)
        if m.existed:
            status.update(Text(f"already converted: {m.output}"))
            self.notify(f"Already converted: {m.output}")
        else:
            status.update(Text(f"wrote {m.output}"))
            self.notify(f"Converted: {m.output}")
        self._select_after_scan = m.output
        self.action_refresh()

    # -- the model store -----------------------------------------------------

    @work(thread=True, exclusive=True, group="store")
    def scan_store(self) -> None:
        try:
            items, damaged = list_store()
        except (EdgeGLMError, OSError) as e:
            self.post_message(StoreListed([], [], describe_error(e)))
            return
        self.post_message(StoreListed(items, damaged))

    def on_store_listed(self, m: StoreListed) -> None:
        if m.error is not None:
            self.notify(f"Could not list the model store: {m.error}", severity="error")
            return
        for line in m.damaged:
            self.notify(f"Damaged store entry: {line}", severity="warning")
        table = self.query_one("#store", DataTable)
        keep = table.cursor_row
        table.clear()
        self.stored = {}
        last = None
        for item in m.items:
            self.stored[item.key] = item
            table.add_row(*self._store_cells(item, first=item.model != last), key=item.key)
            last = item.model
        if m.items:
            table.move_cursor(row=min(keep, len(m.items) - 1))

    def _store_cells(self, item: StoreItem, *, first: bool) -> tuple[Text | str, ...]:
        verified = self.verified.get(item.key)
        if item.problems:
            state = Text(f"damaged ({len(item.problems)})", style="red")
        elif verified is None:
            state = Text("recorded", style="dim")
        elif verified:
            state = Text(f"FAILED ({len(verified)})", style="bold red")
        else:
            state = Text("verified", style="green")
        return (
            Text(item.model if first else ""),
            Text(item.origin if first else "", style="dim"),
            item.part,
            item.quant,
            human_bytes(item.size),
            state,
        )

    def _store_highlighted(self) -> StoreItem | None:
        table = self.query_one("#store", DataTable)
        if not self.stored or table.cursor_row < 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self.stored.get(key or "")

    def _delete_stored(self) -> None:
        item = self._store_highlighted()
        if item is None:
            return
        whole = item.part == "source"  # the checkpoint goes with its whole entry
        gone = item.path.parent if whole else item.path
        used = self.in_use()
        if used is not None and used.resolve().is_relative_to(gone.resolve()):
            self.notify("The chat is using it: load another model first", severity="warning")
            return
        if self.job is not None:
            self.notify(f"Wait for the {self.job} to end first", severity="warning")
            return
        question = f"Delete {item.model} from the store?" if whole else f"Delete {item.key}?"
        detail = (
            "Its checkpoint and every artifact converted from it."
            if whole
            else f"{item.kind.upper()} {item.quant} ({human_bytes(item.size)}); "
            "converting the checkpoint again makes it again."
        )
        self.app.push_screen(
            ConfirmModal(question, detail), lambda yes: self._remove(item, whole, yes)
        )

    def _remove(self, item: StoreItem, whole: bool, yes: bool | None) -> None:
        if not yes:
            return
        from edgeglm.store.layout import remove

        try:
            freed = remove(item.model, None if whole else item.part)
        except Exception as e:  # the UI boundary: a refusal or an OSError becomes a message
            self.notify(describe_error(e), title="Not deleted", severity="error")
            return
        self.notify(f"Deleted {item.model if whole else item.key} ({human_bytes(freed)} freed)")
        self.action_refresh()

    # pull, import, verify: one at a time, in a worker, with progress and cancel

    def _start_job(self, job: str, what: str) -> bool:
        if self.job is not None or self.converting:
            running = self.job or "conversion"
            self.notify(f"Wait for the {running} to end, or cancel it (Esc)", severity="warning")
            return False
        self.job = job
        self._stop_job.clear()
        self.add_class("job")
        self.query_one("#progress", ProgressBar).update(total=None, progress=0)
        self.query_one("#status", Static).update(Text(f"{JOB_VERBS[job]} {what}…"))
        return True

    def action_pull(self) -> None:
        self.app.push_screen(PullModal(), self._pull_asked)

    def _pull_asked(self, asked: tuple[str, str | None] | None) -> None:
        if asked is None:
            return
        repo, revision = asked
        if self._start_job("pull", repo + (f"@{revision}" if revision else "")):
            self.pull(repo, revision)

    @work(thread=True, exclusive=True, group="store-job")
    def pull(self, repo: str, revision: str | None) -> None:
        from edgeglm.store.pull import PullCancelled

        def progress(name: str, done: int, total: int) -> None:
            self.post_message(StoreProgress("pull", name, done, total))

        try:
            got = self.services.pull(repo, revision, progress, self._stop_job.is_set)
        except PullCancelled:
            self.post_message(
                StoreJobEnded("pull", repo, "pull cancelled; pulling again resumes", cancelled=True)
            )
            return
        except Exception as e:  # the UI boundary: shown as one line
            self.post_message(StoreJobEnded("pull", repo, error=describe_error(e)))
            return
        commit = (got.entry.manifest.source.revision or "")[:7]
        if got.fetched is None:
            text = f"{repo} is in the store already (at {commit})"
        else:
            files = len(got.fetched.digests)
            text = f"pulled {repo} at {commit}: {files} files, every one verified"
        self.post_message(StoreJobEnded("pull", got.entry.name, text))

    def action_import_bundle(self) -> None:
        self.app.push_screen(ImportModal(), self._import_asked)

    def _import_asked(self, path: Path | None) -> None:
        if path is not None and self._start_job("import", path.name):
            self.import_bundle(path)

    @work(thread=True, exclusive=True, group="store-job")
    def import_bundle(self, path: Path) -> None:
        def progress(done: int, total: int) -> None:
            if self._stop_job.is_set():
                raise _Stopped  # import_bundle removes its staging folder on the way out
            self.post_message(StoreProgress("import", path.name, done, total))

        try:
            got = self.services.import_bundle(path, progress)
        except _Stopped:
            self.post_message(
                StoreJobEnded("import", None, "import cancelled; nothing was added", cancelled=True)
            )
            return
        except Exception as e:  # the UI boundary: shown as one line
            self.post_message(StoreJobEnded("import", None, error=describe_error(e)))
            return
        name = got.entry.name
        if got.imported:
            text = f"imported {name}: {human_bytes(got.bytes)}, every file verified"
        elif got.repaired:
            text = f"{name} was in the store; {len(got.repaired)} damaged file(s) put back"
        else:
            text = f"{name} is in the store already with every file of the bundle"
        self.post_message(StoreJobEnded("import", name, text))

    def action_verify(self) -> None:
        item = self._store_highlighted()
        if item is None:
            self.notify("Choose a model in the store to verify", severity="warning")
            return
        if self._start_job("verify", item.model):
            self.verify(item.model)

    @work(thread=True, exclusive=True, group="store-job")
    def verify(self, name: str) -> None:
        from edgeglm.store.layout import open_entry

        def progress(file: str, done: int, total: int) -> None:
            self.post_message(StoreProgress("verify", file, done, total))

        try:
            found = verify_items(open_entry(name), progress, self._stop_job.is_set)
        except Exception as e:  # the UI boundary: shown as one line
            self.post_message(StoreJobEnded("verify", name, error=describe_error(e)))
            return
        if found is None:
            self.post_message(StoreJobEnded("verify", name, "verify cancelled", cancelled=True))
            return
        problems = sum(len(p) for p in found.values())
        text = f"{name}: verified" if not problems else f"{name}: {problems} problem(s)"
        self.post_message(StoreJobEnded("verify", name, text, verified=found))

    def action_cancel_job(self) -> None:
        if self.job is not None:
            self._stop_job.set()
            self.query_one("#status", Static).update(Text(f"stopping the {self.job}…"))

    @on(Button.Pressed, "#cancel-job")
    def _cancel_pressed(self) -> None:
        self.action_cancel_job()

    def on_store_progress(self, m: StoreProgress) -> None:
        if m.job != self.job:
            return
        self.query_one("#progress", ProgressBar).update(total=m.total or None, progress=m.done)
        what = f"{m.file} " if m.file else ""
        self.query_one("#status", Static).update(
            Text(f"{m.job}: {what}{human_bytes(m.done)}/{human_bytes(m.total)}")
        )

    def on_store_job_ended(self, m: StoreJobEnded) -> None:
        self.job = None
        self.remove_class("job")
        status = self.query_one("#status", Static)
        bar = self.query_one("#progress", ProgressBar)
        if m.error is not None:
            bar.update(total=1, progress=0)
            status.update(Text(f"{m.job} failed: {m.error}"))
            self.notify(m.error, title=f"{m.job.capitalize()} failed", severity="error")
            return
        status.update(Text(m.text or ""))
        if m.cancelled:
            self.notify(m.text or f"{m.job} cancelled", severity="warning")
            return
        bar.update(total=1, progress=1)
        if m.verified is not None:
            self.verified.update(m.verified)
            lines = [p for found in m.verified.values() for p in found]
            if lines:
                more = f"\n… and {len(lines) - 3} more" if len(lines) > 3 else ""
                self.notify(
                    "\n".join(lines[:3]) + more,
                    title=f"{m.name} does not verify",
                    severity="error",
                )
            else:
                self.notify(m.text or "verified")
        else:
            if m.name is not None:  # new or replaced files: what was verified before is not
                self.verified = {
                    k: v for k, v in self.verified.items() if k.partition(":")[0] != m.name
                }
            self.notify(m.text or "done")
        self.scan_store()


class _Stopped(Exception):
    """Raised from an import's progress callback to stop it (Esc)."""


def _record_in_store(checkpoint: Path, out: Path) -> None:
    """A conversion of a store model's checkpoint goes into its entry (cached_path);
    record it in the manifest, as ``edgeglm run`` does, so that it verifies."""
    from edgeglm.store.layout import add_artifact, store_entry_of

    entry = store_entry_of(checkpoint)
    if entry is not None:
        add_artifact(entry, out)


def _short(path: Path) -> str:
    """Artifacts in EdgeGLM's cache by their name in it; anything else in full."""
    try:
        return str(path.relative_to(artifacts.artifacts_dir().resolve()))
    except ValueError:
        return str(path)
