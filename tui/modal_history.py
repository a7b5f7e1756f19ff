"""Saved conversations: pick one to resume, or delete it."""

from __future__ import annotations

import time
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from .store import Conversation, ConversationStore


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


class HistoryModal(ModalScreen[str | None]):
    """Returns the id of the conversation to resume."""

    DEFAULT_CSS = """
    HistoryModal { align: center middle; }
    HistoryModal > Vertical {
        width: 76; max-width: 100%; height: auto; max-height: 90%;
        border: thick $accent; background: $surface; padding: 0 1;
    }
    HistoryModal OptionList { height: auto; max-height: 16; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("delete,ctrl+d", "delete", "Delete"),
    ]

    def __init__(self, store: ConversationStore) -> None:
        super().__init__()
        self.store = store

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("[b]Conversations[/]  (Enter resume, Del delete, Esc close)")
            yield OptionList(*self._options(self.store.list()), id="conversations")

    @staticmethod
    def _options(convs: list[Conversation]) -> list[Option]:
        if not convs:
            return [Option("No saved conversations yet", disabled=True)]
        return [
            Option(
                Text.assemble(c.title, (f"  {_when(c.updated)} · {len(c.turns)} msgs", "dim")),
                id=c.id,
            )
            for c in convs
        ]

    @on(OptionList.OptionSelected)
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_delete(self) -> None:
        ol = self.query_one(OptionList)
        if ol.highlighted is None:
            return
        conv_id = ol.get_option_at_index(ol.highlighted).id
        if conv_id:
            self.store.delete(conv_id)
            ol.clear_options()
            ol.add_options(self._options(self.store.list()))
            self.notify("Conversation deleted")

    def action_cancel(self) -> None:
        self.dismiss(None)
