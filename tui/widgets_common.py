"""Widgets every screen shares: the top bar that names the screens and their keys."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

# mode name -> (key, title); the order is the bar's
SCREENS = {
    "chat": ("F1", "Chat"),
    "models": ("F2", "Models"),
    "bench": ("F3", "Bench"),
    "hardware": ("F4", "Hardware & plan"),
}


class TopBar(Static):
    DEFAULT_CSS = """
    TopBar { height: 1; background: $panel; }
    """

    def __init__(self, active: str) -> None:
        super().__init__()
        self.active = active

    def render(self) -> Text:
        text = Text.assemble((" EdgeGLM ", "bold reverse"), " ")
        for mode, (key, title) in SCREENS.items():
            style = "bold reverse" if mode == self.active else ""
            text.append(f" {key} ", "dim")
            text.append(f"{title} ", style)
        return text


def describe_error(e: BaseException) -> str:
    """One line for the user. EdgeGLM errors are written for people; others get their type."""
    from edgeglm.errors import EdgeGLMError

    if isinstance(e, EdgeGLMError):
        return str(e)
    return f"{type(e).__name__}: {e}"
