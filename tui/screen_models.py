"""Models screen: local GGUF artifacts with their metadata, and conversion with progress."""

from __future__ import annotations

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

from edgeglm.units import human_bytes

from . import artifacts
from .artifacts import ArtifactInfo
from .messages import ConvertEnded, ConvertProgress
from .services import Services
from .widgets_common import TopBar, describe_error


class ModelsScreen(Screen[None]):
    DEFAULT_CSS = """
    ModelsScreen DataTable { height: 1fr; border: round $primary; }
    ModelsScreen #forms { height: auto; border-top: solid $primary; padding: 0 1; }
    ModelsScreen Horizontal { height: 1; margin-bottom: 1; }
    ModelsScreen Horizontal Label { width: 10; }
    ModelsScreen Horizontal Input { width: 1fr; }
    ModelsScreen #quant { width: 14; margin: 0 1; }
    ModelsScreen #progress-row { margin-bottom: 0; }
    ModelsScreen #progress-row ProgressBar { width: 32; }
    ModelsScreen #status { width: 1fr; color: $text-muted; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "chat", "Chat with it", show=True),
        Binding("ctrl+r", "refresh", "Rescan"),
        Binding("ctrl+k", "convert", "Convert"),
    ]

    def __init__(self, services: Services, open_in_chat: Callable[[str], None]) -> None:
        super().__init__()
        self.services = services
        self.open_in_chat = open_in_chat
        self.found: list[ArtifactInfo] = []
        self.converting = False

    def compose(self) -> ComposeResult:
        yield TopBar("models")
        yield DataTable(cursor_type="row", zebra_stripes=True, id="artifacts")
        with Vertical(id="forms"):
            with Horizontal():
                yield Label("Add path")
                yield Input(
                    placeholder="a .gguf file or a folder of them, then Enter",
                    id="add",
                    compact=True,
                )
            with Horizontal():
                yield Label("Convert")
                yield Input(placeholder="HF folder or cached repo id", id="source", compact=True)
                quants = self.services.quants()
                default = "Q4_K_M" if "Q4_K_M" in quants else quants[0]
                yield Select(
                    [(q, q) for q in quants],
                    value=default,
                    allow_blank=False,
                    id="quant",
                    compact=True,
                )
                yield Button("Convert", id="convert", compact=True)
            with Horizontal(id="progress-row"):
                yield ProgressBar(total=1, id="progress", show_eta=False)
                yield Static("", id="status")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("Name", "Quant", "Arch", "Size", "Path")
        table.border_title = "Local models · Enter: chat with it"
        self.action_refresh()
        table.focus()

    def action_refresh(self) -> None:
        try:
            self.found = artifacts.scan()
        except OSError as e:
            self.notify(f"Could not scan for models: {e}", severity="error")
            return
        table = self.query_one(DataTable)
        table.clear()
        for a in self.found:
            table.add_row(
                Text(a.label),
                a.quant or "?",
                a.architecture or Text(a.error or "?", style="red"),
                human_bytes(a.size_bytes),
                Text(_short(a.path), style="dim"),
                key=str(a.path),
            )
        if not self.found:
            self.query_one("#status", Static).update(
                Text(f"No GGUF files yet in {artifacts.artifacts_dir()}: convert one below")
            )

    def action_chat(self) -> None:
        table = self.query_one(DataTable)
        if not table.has_focus or not self.found:
            return
        self.open_in_chat(str(self.found[table.cursor_row].path))

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value:
            self.open_in_chat(event.row_key.value)

    @on(Input.Submitted, "#add")
    def _add_path(self, event: Input.Submitted) -> None:
        path = Path(event.value.strip()).expanduser()
        if not path.exists():
            self.notify(f"{path}: no such file or folder", severity="error")
            return
        artifacts.add_user_path(path.resolve())
        event.input.value = ""
        self.action_refresh()

    @on(Input.Submitted, "#source")
    @on(Button.Pressed, "#convert")
    def action_convert(self) -> None:
        source = self.query_one("#source", Input).value.strip()
        quant = str(self.query_one("#quant", Select).value)
        if self.converting:
            self.notify("A conversion is already running", severity="warning")
            return
        if not source:
            self.query_one("#source", Input).focus()
            self.notify("Type a Hugging Face folder or repo id to convert", severity="warning")
            return
        name = Path(source).name or source.replace("/", "--")
        out = artifacts.artifacts_dir() / name / f"{quant}.gguf"
        if out.exists():
            self.notify(f"{out} exists already: delete it to convert again", severity="warning")
            return
        self.converting = True
        self.query_one("#progress", ProgressBar).update(total=1, progress=0)
        self.query_one("#status", Static).update(Text(f"converting {name} to {quant}…"))
        self.convert(source, out, quant)

    @work(thread=True, exclusive=True)
    def convert(self, source: str, out: Path, quant: str) -> None:
        def progress(tensor: str, i: int, n: int, done: int, total: int) -> None:
            self.post_message(ConvertProgress(tensor, i, n, done, total))

        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            self.services.convert(source, out, quant, progress)
        except Exception as e:
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
        status.update(Text(f"wrote {m.output}"))
        self.notify(f"Converted: {m.output}")
        self.action_refresh()


def _short(path: Path) -> str:
    """Artifacts in EdgeGLM's cache by their name in it; anything else in full."""
    try:
        return str(path.relative_to(artifacts.artifacts_dir().resolve()))
    except ValueError:
        return str(path)
