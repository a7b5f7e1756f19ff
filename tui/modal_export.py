"""Where to save a benchmark: a path prompt, filled in with a default under the current folder."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

SUFFIXES = (".json", ".svg", ".csv", ".md")


def targets(stem: Path) -> list[Path]:
    """The files an export writes for ``stem`` (its suffix, if any, is replaced)."""
    base = stem.with_suffix("") if stem.suffix.lower() in SUFFIXES else stem
    return [base.with_name(base.name + s) for s in SUFFIXES]


def problem(stem: Path) -> str | None:
    """Why ``stem`` cannot be exported to (None when it can)."""
    if not stem.name or stem.name in (".", ".."):
        return "give a file name (without suffix)"
    if not stem.parent.is_dir():
        return f"{stem.parent}: no such folder"
    taken = [p.name for p in targets(stem) if p.exists()]
    if taken:
        return f"{', '.join(taken)} exist already in {stem.parent}: choose another name"
    return None


class ExportModal(ModalScreen[Path | None]):
    """Returns the stem to write (``.json``, ``.svg``, ``.csv``, ``.md`` are added)."""

    DEFAULT_CSS = """
    ExportModal { align: center middle; }
    ExportModal > Vertical {
        width: 80; max-width: 100%; height: auto; max-height: 100%;
        border: thick $accent; background: $surface; padding: 0 1;
    }
    ExportModal Input { margin: 1 0 0 0; }
    ExportModal #errors { color: $error; height: auto; }
    ExportModal .muted { color: $text-muted; }
    ExportModal Horizontal { height: auto; align-horizontal: right; margin-top: 1; }
    ExportModal Button { margin-left: 2; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, default: Path) -> None:
        super().__init__()
        self.default = default

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("[b]Export the benchmark[/]  (Enter saves, Esc cancels)")
            yield Static(
                "Writes the report (.json), the latency/quality plot (.svg), .csv and .md.",
                classes="muted",
            )
            yield Input(str(self.default), id="path")
            yield Static("", id="errors")
            with Horizontal():
                yield Button("Cancel", id="cancel", compact=True)
                yield Button("Save", id="save", variant="primary", compact=True)

    @on(Input.Submitted)
    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        raw = self.query_one("#path", Input).value.strip()
        stem = Path(raw).expanduser() if raw else Path()
        why = problem(stem) if raw else "give a path"
        if why is not None:
            self.query_one("#errors", Static).update(why)
            return
        self.dismiss(stem)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
