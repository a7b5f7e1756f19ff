"""Models screen: local GGUF files and ONNX folders with their metadata; convert, add, delete.

The listing never waits for a header: rows appear at once with what is
known, and a worker fills in architecture and quant as it reads them (see
artifacts.py). Conversions go into the same cache folder as ``edgeglm run``'s.
"""

from __future__ import annotations

import contextlib
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

from edgeglm.units import human_bytes

from . import artifacts
from .artifact_scan import scan_to
from .artifacts import ArtifactInfo, Kind
from .messages import ArtifactRead, ArtifactsFound, ConvertEnded, ConvertProgress
from .modal_confirm import ConfirmModal
from .services import Services
from .widgets_common import TopBar, describe_error

COLUMNS = ("Name", "Format", "Quant", "Arch", "Size", "Path")
# shown until the header is read; short, since a column never narrows again
PENDING = Text("…", style="dim")


class ModelsScreen(Screen[None]):
    DEFAULT_CSS = """
    ModelsScreen DataTable { height: 1fr; border: round $primary; }
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
        Binding("ctrl+r", "refresh", "Rescan"),
        Binding("ctrl+k", "convert", "Convert"),
        Binding("delete,ctrl+d", "delete", "Delete"),
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

    def compose(self) -> ComposeResult:
        yield TopBar("models")
        yield DataTable(cursor_type="row", zebra_stripes=True, id="artifacts")
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
        table = self.query_one(DataTable)
        for name in COLUMNS:
            self._columns[name] = table.add_column(name, key=name)
        table.border_title = "Local models · Enter: chat · Del: delete"
        self._show(artifacts.recent())  # the last listing, while this one runs
        self.action_refresh()
        table.focus()

    # -- the listing -------------------------------------------------------

    def action_refresh(self) -> None:
        self.scan()

    @work(thread=True, exclusive=True, group="artifacts")
    def scan(self) -> None:
        scan_to(self)

    def on_artifacts_found(self, m: ArtifactsFound) -> None:
        if m.error is not None:
            self.notify(f"Could not scan for models: {m.error}", severity="error")
            return
        self._show(m.found)
        if self._select_after_scan in self.found:
            table = self.query_one(DataTable)
            table.move_cursor(row=table.get_row_index(self._select_after_scan))
        self._select_after_scan = None
        if not m.found and not self.converting:
            self.query_one("#status", Static).update(
                Text(f"No models yet in {artifacts.artifacts_dir()}: convert one below")
            )

    def _show(self, found: list[ArtifactInfo]) -> None:
        table = self.query_one(DataTable)
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
        table = self.query_one(DataTable)
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
        table = self.query_one(DataTable)
        if not self.found or table.cursor_row < 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self.found.get(key or "")

    # -- chat, add, delete -------------------------------------------------

    def action_chat(self) -> None:
        table = self.query_one(DataTable)
        info = self._highlighted()
        if table.has_focus and info is not None:
            self.open_in_chat(str(info.path))

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
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


def _short(path: Path) -> str:
    """Artifacts in EdgeGLM's cache by their name in it; anything else in full."""
    try:
        return str(path.relative_to(artifacts.artifacts_dir().resolve()))
    except ValueError:
        return str(path)
