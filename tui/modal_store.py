"""What to pull from a hub, or which bundle to import: two small prompts for the Models screen.

They only ask; the screen runs the pull or import in a worker with its own
progress bar and cancel, so the user can go on browsing while bytes arrive.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from edgeglm.store.manifest import valid_name

_CSS = """
{name} {{ align: center middle; }}
{name} > Vertical {{
    width: 72; max-width: 100%; height: auto; max-height: 100%;
    border: thick $accent; background: $surface; padding: 0 1;
}}
{name} .muted {{ color: $text-muted; }}
{name} Input {{ margin: 1 0 0 0; }}
{name} #errors {{ color: $error; height: auto; }}
{name} Horizontal {{ height: auto; align-horizontal: right; margin-top: 1; }}
{name} Button {{ margin-left: 2; }}
"""


class PullModal(ModalScreen[tuple[str, str | None] | None]):
    """Returns (repo id, revision or None), or None when cancelled."""

    DEFAULT_CSS = _CSS.format(name="PullModal")
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("[b]Pull a model[/]  (Enter pulls, Esc cancels)")
            yield Static(
                "Safetensors, config and tokenizer from HF_ENDPOINT, each file verified; "
                "an interrupted pull resumes.",
                classes="muted",
            )
            yield Input(placeholder="repo id, e.g. zai-org/GLM-4-9B-0414", id="repo", compact=True)
            yield Input(
                placeholder="revision: branch, tag or commit (default main)", id="rev", compact=True
            )
            yield Static("", id="errors")
            with Horizontal():
                yield Button("Cancel", id="cancel", compact=True)
                yield Button("Pull", id="pull", variant="primary", compact=True)

    @on(Input.Submitted)
    @on(Button.Pressed, "#pull")
    def action_pull(self) -> None:
        repo = self.query_one("#repo", Input).value.strip()
        rev = self.query_one("#rev", Input).value.strip() or None
        if not valid_name(repo):
            why = "give a repo id (ORG/NAME)" if not repo else f"{repo!r} is not a repo id"
            self.query_one("#errors", Static).update(why)
            self.query_one("#repo", Input).focus()
            return
        self.dismiss((repo, rev))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class ImportModal(ModalScreen[Path | None]):
    """Returns the bundle to import (a .tar file or an unpacked folder), or None."""

    DEFAULT_CSS = _CSS.format(name="ImportModal")
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("[b]Import a bundle[/]  (Enter imports, Esc cancels)")
            yield Static(
                "Every file is checked against the bundle's manifest before it enters the store.",
                classes="muted",
            )
            yield Input(
                placeholder="a bundle .tar file or its unpacked folder", id="path", compact=True
            )
            yield Static("", id="errors")
            with Horizontal():
                yield Button("Cancel", id="cancel", compact=True)
                yield Button("Import", id="import", variant="primary", compact=True)

    @on(Input.Submitted)
    @on(Button.Pressed, "#import")
    def action_import(self) -> None:
        raw = self.query_one("#path", Input).value.strip()
        path = Path(raw).expanduser()
        if not raw:
            self.query_one("#errors", Static).update("give a path")
        elif not path.exists():
            self.query_one("#errors", Static).update(f"{path}: no such file or folder")
        else:
            self.dismiss(path)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
