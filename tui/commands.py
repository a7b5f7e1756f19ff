"""Command palette entries (Ctrl+P): jump to a screen or run a chat action by name."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider

from .widgets_common import SCREENS

if TYPE_CHECKING:
    from .app import EdgeGLMApp

# (title, help, action run on the app) -- the app routes chat actions to the chat screen
_ACTIONS = [
    ("Chat: new conversation", "Start an empty chat", "chat_action('new_chat')"),
    ("Chat: open a saved conversation", "Resume a conversation", "chat_action('history')"),
    ("Chat: settings", "System prompt and sampling", "chat_action('settings')"),
    ("Chat: choose model", "Model, backend and context size", "chat_action('pick_model')"),
    ("Chat: regenerate last reply", "Ask again", "chat_action('regenerate')"),
    ("Chat: edit last message", "Edit and resend", "chat_action('edit_last')"),
    ("Quit", "Leave EdgeGLM", "quit"),
]


class EdgeGLMCommands(Provider):
    def _commands(self) -> list[tuple[str, str, Callable[[], object]]]:
        app: EdgeGLMApp = self.app  # type: ignore[assignment]
        out: list[tuple[str, str, Callable[[], object]]] = [
            (f"Go to {title}", f"{key}: the {title} screen", partial(app.switch_mode, mode))
            for mode, (key, title) in SCREENS.items()
        ]
        out += [
            (title, help_text, partial(app.run_action, action))
            for title, help_text, action in _ACTIONS
        ]
        return out

    async def discover(self) -> Hits:
        for title, help_text, run in self._commands():
            yield DiscoveryHit(title, run, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, run in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), run, help=help_text)
