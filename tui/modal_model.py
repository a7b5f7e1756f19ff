"""Model picker: which model to chat with, on which backend, with how much context.

Everything not chosen here comes from the planner: the runtime loads the model
with the plan's threads, flash attention and KV cache type for this machine,
and with the plan's context when the field is left empty (the F4 screen shows
that plan and why).

The list opens at once with the artifacts known so far; a worker lists the
cache and reads the headers not read before (artifacts.scan), updating the
entries as it goes: a folder of large GGUFs never freezes the picker."""

from __future__ import annotations

import contextlib
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Select, Static
from textual.widgets.option_list import Option, OptionDoesNotExist

from edgeglm.units import human_bytes

from . import artifacts
from .artifact_scan import scan_to
from .artifacts import ArtifactInfo
from .messages import ArtifactRead, ArtifactsFound
from .session import ModelChoice

BACKENDS = ("auto", "llama.cpp", "onnx")
DEMO = "\0demo"  # option id of the bundled demo model (None is not a valid option id)


class ModelPickerModal(ModalScreen[ModelChoice | None]):
    DEFAULT_CSS = """
    ModelPickerModal { align: center middle; }
    ModelPickerModal > Vertical {
        width: 76; max-width: 100%; height: auto; max-height: 100%;
        border: thick $accent; background: $surface; padding: 0 1;
    }
    ModelPickerModal OptionList { height: auto; max-height: 8; }
    ModelPickerModal Grid {
        grid-size: 4; grid-columns: 10 1fr 10 14; grid-rows: 1; grid-gutter: 0 1;
        height: 1; margin: 1 0;
    }
    ModelPickerModal #errors { color: $error; height: auto; }
    ModelPickerModal Horizontal { height: auto; align-horizontal: right; }
    ModelPickerModal Button { margin-left: 2; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, current: ModelChoice, known: list[ArtifactInfo] | None = None) -> None:
        super().__init__()
        self.current = current
        self.known = artifacts.recent() if known is None else known

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("[b]Choose a model[/]  (Enter loads it, Esc cancels)")
            yield OptionList(*self._options(self.known), id="models")
            yield Input(
                self.current.ref or "",
                placeholder="or a path: .gguf, ONNX folder, HF folder or cached repo id",
                id="ref",
            )
            with Grid():
                yield Label("Backend")
                yield Select(
                    [(b, b) for b in BACKENDS],
                    value=self.current.backend,
                    allow_blank=False,
                    id="backend",
                    compact=True,
                )
                yield Label("Context")
                yield Input(
                    "" if self.current.n_ctx is None else str(self.current.n_ctx),
                    placeholder="plan",
                    type="integer",
                    id="n_ctx",
                    compact=True,
                )
            yield Static("", id="errors")
            with Horizontal():
                yield Button("Cancel", id="cancel", compact=True)
                yield Button("Load", id="load", variant="primary", compact=True)

    def on_mount(self) -> None:
        self.scan()

    @staticmethod
    def _prompt(a: ArtifactInfo) -> Text:
        if not a.known:
            detail = f"{a.format} · reading… · {human_bytes(a.size_bytes)}"
        elif a.error:
            detail = f"{a.format} · unreadable: {a.error}"
        else:
            quant, arch = a.quant or "?", a.architecture or "?"
            detail = f"{a.format} {quant} · {arch} · {human_bytes(a.size_bytes)}"
        return Text.assemble(a.label, (f"  {detail}", "dim"))

    def _options(self, found: list[ArtifactInfo]) -> list[Option]:
        return [Option("Demo model (bundled)", id=DEMO)] + [
            Option(self._prompt(a), id=str(a.path)) for a in found
        ]

    @work(thread=True, exclusive=True, group="artifacts")
    def scan(self) -> None:
        scan_to(self)

    def on_artifacts_found(self, m: ArtifactsFound) -> None:
        if m.error is not None:
            self.notify(f"Could not list local models: {m.error}", severity="warning")
            return
        ol = self.query_one("#models", OptionList)
        highlighted = ol.highlighted_option.id if ol.highlighted_option is not None else None
        ol.clear_options()
        ol.add_options(self._options(m.found))
        if highlighted is not None:
            with contextlib.suppress(OptionDoesNotExist):
                ol.highlighted = ol.get_option_index(highlighted)

    def on_artifact_read(self, m: ArtifactRead) -> None:
        with contextlib.suppress(OptionDoesNotExist):
            self.query_one("#models", OptionList).replace_option_prompt(
                str(m.info.path), self._prompt(m.info)
            )

    @on(OptionList.OptionSelected, "#models")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        ref = event.option.id
        self.query_one("#ref", Input).value = "" if ref == DEMO or ref is None else ref
        self.action_load()

    @on(Input.Submitted)
    @on(Button.Pressed, "#load")
    def action_load(self) -> None:
        raw_ctx = self.query_one("#n_ctx", Input).value.strip()
        if raw_ctx and (not raw_ctx.isdigit() or int(raw_ctx) < 64):
            self.query_one("#errors", Static).update(
                "context must be a whole number ≥ 64, or empty for the plan's"
            )
            return
        ref = self.query_one("#ref", Input).value.strip() or None
        backend = self.query_one("#backend", Select).value
        self.dismiss(ModelChoice(ref, str(backend), int(raw_ctx) if raw_ctx else None))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
