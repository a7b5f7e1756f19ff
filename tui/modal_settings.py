"""Chat settings modal: the system prompt and sampling (llama.cpp's names and meanings).

Each value starts as the model's own default (or llama.cpp's); what is
changed here is marked as set in the settings and kept across model switches.
"""

from __future__ import annotations

from dataclasses import fields
from typing import ClassVar, Literal

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static, TextArea

from .settings import ChatSettings

# field -> (label, input type); the order is the form's
_FIELDS: dict[str, tuple[str, Literal["integer", "number"]]] = {
    "temperature": ("Temperature", "number"),
    "top_p": ("Top-p", "number"),
    "top_k": ("Top-k (0 = off)", "integer"),
    "min_p": ("Min-p (0 = off)", "number"),
    "repeat_penalty": ("Repeat penalty", "number"),
    "max_tokens": ("Max tokens (-1=∞)", "integer"),
    "seed": ("Seed", "integer"),
}


class SettingsModal(ModalScreen[ChatSettings | None]):
    DEFAULT_CSS = """
    SettingsModal { align: center middle; }
    SettingsModal > Vertical {
        width: 72; max-width: 100%; height: auto; max-height: 100%;
        border: thick $accent; background: $surface; padding: 0 1;
    }
    SettingsModal TextArea { height: 4; }
    SettingsModal Grid {
        grid-size: 4; grid-columns: 18 1fr 18 1fr; grid-rows: 1; grid-gutter: 1 1;
        height: auto; margin: 1 0;
    }
    SettingsModal #errors { color: $error; height: auto; }
    SettingsModal Horizontal { height: auto; align-horizontal: right; }
    SettingsModal Button { margin-left: 2; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "save", "Save", priority=True),
    ]

    def __init__(self, settings: ChatSettings) -> None:
        super().__init__()
        self.settings = settings

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("[b]Chat settings[/]  (Ctrl+S save, Esc cancel)")
            yield Label("System prompt")
            yield TextArea(self.settings.system, id="system", show_line_numbers=False)
            with Grid():
                for name, (label, kind) in _FIELDS.items():
                    yield Label(label)
                    yield Input(str(getattr(self.settings, name)), type=kind, id=name, compact=True)
            yield Static("", id="errors")
            with Horizontal():
                yield Button("Cancel", id="cancel", compact=True)
                yield Button("Save", id="save", variant="primary", compact=True)

    def _read(self) -> tuple[ChatSettings | None, list[str]]:
        values: dict[str, object] = {"system": self.query_one("#system", TextArea).text}
        types = {f.name: f.type for f in fields(ChatSettings)}
        problems = []
        for name, (label, _) in _FIELDS.items():
            raw = self.query_one(f"#{name}", Input).value.strip()
            try:
                values[name] = float(raw) if types[name] == "float" else int(raw)
            except ValueError:
                problems.append(f"{label}: {raw!r} is not a number")
        if problems:
            return None, problems
        settings = self.settings.edited(**values)
        return settings, settings.problems()

    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        settings, problems = self._read()
        if problems or settings is None:
            self.query_one("#errors", Static).update("\n".join(problems))
            return
        self.dismiss(settings)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
