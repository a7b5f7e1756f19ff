"""The message editor: multi-line, Enter sends, as in Elia, oterm and Posting.

Enter sends; Shift+Enter (terminals that report it), Ctrl+J (every terminal:
it is the newline character) and Alt+Enter start a new line; a paste keeps
its newlines (Textual enables bracketed paste, so pasted lines never arrive
as Enter presses). Up in an empty editor asks to edit the last message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual import events
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import TextArea


class PromptEditor(TextArea):
    DEFAULT_CSS = """
    PromptEditor { height: auto; min-height: 3; max-height: 12; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("shift+enter,ctrl+j,alt+enter", "newline", "New line", show=False),
    ]

    @dataclass
    class Submitted(Message):
        editor: PromptEditor
        text: str

        @property
        def control(self) -> PromptEditor:
            return self.editor

    @dataclass
    class EditLast(Message):
        """Up in an empty editor: bring the last message back to edit."""

        editor: PromptEditor

        @property
        def control(self) -> PromptEditor:
            return self.editor

    def __init__(self, *, placeholder: str = "", id: str | None = None) -> None:
        super().__init__(
            id=id,
            placeholder=placeholder,
            soft_wrap=True,
            show_line_numbers=False,
            highlight_cursor_line=False,
            tab_behavior="focus",
        )

    async def _on_key(self, event: events.Key) -> None:
        # Runs before TextArea's own handler, which would insert a newline.
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self.post_message(self.Submitted(self, self.text))

    def action_newline(self) -> None:
        start, end = self.selection
        result = self.replace("\n", start, end)
        self.move_cursor(result.end_location)

    def action_cursor_up(self, select: bool = False) -> None:
        if not self.text and not select:
            self.post_message(self.EditLast(self))
            return
        super().action_cursor_up(select)

    def set_text(self, text: str) -> None:
        """Replace the contents and put the cursor at the end."""
        self.text = text
        self.move_cursor(self.document.end)
