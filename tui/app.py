"""The EdgeGLM app: four screens (chat, models, bench, hardware & plan) as Textual modes.

``create_app`` is the one factory: the CLI (through ``run_app``) and the
tests build the app the same way, tests only swapping ``Services`` for fakes.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from textual import events
from textual.app import App
from textual.binding import Binding, BindingType
from textual.widgets import Input, TextArea

from .commands import EdgeGLMCommands
from .screen_bench import BenchScreen
from .screen_chat import ChatScreen
from .screen_hardware import HardwareScreen
from .screen_models import ModelsScreen
from .services import BackendFactory, Services, open_backend
from .session import ModelChoice, ModelSession
from .store import ConversationStore


class EdgeGLMApp(App[None]):
    TITLE = "EdgeGLM"
    COMMANDS = App.COMMANDS | {EdgeGLMCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1", "switch_mode('chat')", "Chat", show=False),
        Binding("f2", "switch_mode('models')", "Models", show=False),
        Binding("f3", "switch_mode('bench')", "Bench", show=False),
        Binding("f4", "switch_mode('hardware')", "Hardware", show=False),
        # Textual's own Ctrl+Q, shown: the way out should be on screen
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(self, model: str | None, services: Services, *, cursor_blink: bool = True) -> None:
        super().__init__()
        self.services = services
        self.session = ModelSession(services.open_backend, ModelChoice(model))
        self.store = ConversationStore()
        # snapshots freeze the blink: a blinking cursor makes every screenshot differ
        self.cursor_blink = cursor_blink
        self.add_mode("chat", lambda: ChatScreen(self.session, self.store))
        self.add_mode("models", lambda: ModelsScreen(services, self.open_in_chat, self.model_path))
        self.add_mode("bench", lambda: BenchScreen(services, model))
        self.add_mode("hardware", lambda: HardwareScreen(services, lambda: self.session.choice))

    def on_mount(self) -> None:
        self.switch_mode("chat")

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        if not self.cursor_blink and isinstance(event.control, (Input, TextArea)):
            event.control.cursor_blink = False

    def action_chat_action(self, name: str) -> None:
        """Run a chat action from anywhere (the command palette): go to chat first."""
        self.switch_mode("chat")
        self.call_after_refresh(self.screen.run_action, name)

    def model_path(self) -> Path | None:
        """The loaded model's file (GGUF) or folder (ONNX), if one is loaded."""
        backend = self.session.backend
        where = getattr(backend, "path", None) or getattr(backend, "folder", None)
        return Path(where) if isinstance(where, (str, Path)) else None

    def open_in_chat(self, ref: str) -> None:
        self.switch_mode("chat")

        async def load() -> None:
            screen = self.screen
            if isinstance(screen, ChatScreen):
                await screen.open_model(replace(self.session.choice, ref=ref))

        self.call_after_refresh(load)

    def on_unmount(self) -> None:
        self.session.close()


def create_app(
    model: str | None,
    backend_factory: BackendFactory = open_backend,
    *,
    services: Services | None = None,
    cursor_blink: bool = True,
) -> EdgeGLMApp:
    """The app the CLI runs; tests pass fakes through ``backend_factory``/``services``."""
    base = services or Services()
    if backend_factory is not open_backend:
        base = replace(base, open_backend=backend_factory)
    return EdgeGLMApp(model, base, cursor_blink=cursor_blink)


def run_app(model: str | None, *, use_plan: bool = True) -> None:
    """Entry point for ``edgeglm chat [MODEL]`` and ``edgeglm tui``
    (``use_plan=False``: ``--no-plan``, models load with the backend's defaults)."""
    # Models are first loaded in a spawned child (edgeglm.backends.isolated).
    # Spawning starts multiprocessing's resource tracker, which passes on
    # sys.stderr's file descriptor; under Textual, sys.stderr is a capture
    # object whose fileno() is -1 and the spawn fails. Start it while the real
    # stderr is still in place.
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    factory = open_backend if use_plan else functools.partial(open_backend, use_plan=False)
    create_app(model, factory).run()
