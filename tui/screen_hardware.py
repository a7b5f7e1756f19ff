"""Hardware & plan screen: what this machine has, and what the planner recommends and why.

The plan is for the model the chat has loaded (or is loading): switching
models and coming back here re-plans, without probing the machine again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from edgeglm.hardware.doctor import render_doctor

from .messages import HardwareReady
from .services import Services
from .session import ModelChoice
from .widgets_common import TopBar, describe_error

if TYPE_CHECKING:
    from edgeglm.hardware import HardwareProfile


class HardwareScreen(Screen[None]):
    DEFAULT_CSS = """
    HardwareScreen #panes { height: 1fr; }
    HardwareScreen VerticalScroll { width: 1fr; padding: 0 1; border: round $primary; }
    HardwareScreen #plan-pane { border: round $accent; }
    HardwareScreen.-narrow #panes { layout: vertical; }
    HardwareScreen.-narrow #doctor-pane { height: 3fr; }
    HardwareScreen.-narrow #plan-pane { height: 2fr; }
    HardwareScreen .muted { color: $text-muted; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("ctrl+r", "refresh", "Re-probe")]
    # side by side only where both panes stay readable; stacked in an 80-column terminal
    # (no ClassVar: Textual declares it as ``ClassVar[...] | None``, an instance variable to mypy)
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]  # noqa: RUF012

    def __init__(self, services: Services, current: Callable[[], ModelChoice]) -> None:
        super().__init__()
        self.services = services
        self.current = current
        self.profile: HardwareProfile | None = None  # probed once; Ctrl+R probes again
        self.planned_for: ModelChoice | None = None

    def compose(self) -> ComposeResult:
        yield TopBar("hardware")
        with Horizontal(id="panes"):
            with VerticalScroll(id="doctor-pane") as v:
                v.border_title = "Doctor"
                yield Static("Probing this machine…", id="doctor", classes="muted")
            with VerticalScroll(id="plan-pane") as v:
                v.border_title = "Plan"
                yield Static("Waiting for the hardware probe…", id="plan", classes="muted")
        yield Footer()

    def on_mount(self) -> None:
        self.action_refresh()

    def on_screen_resume(self) -> None:
        if self.planned_for is not None and self.current() != self.planned_for:
            self._plan_for(self.current(), reprobe=False)

    def action_refresh(self) -> None:
        self._plan_for(self.current(), reprobe=True)

    def _plan_for(self, choice: ModelChoice, *, reprobe: bool) -> None:
        self.planned_for = choice
        pane = self.query_one("#plan-pane", VerticalScroll)
        pane.border_title = f"Plan · {choice.label}"
        if reprobe or self.profile is None:
            self.query_one("#doctor", Static).update("Probing this machine…")
        plan = self.query_one("#plan", Static)
        plan.add_class("muted")
        plan.update(Text(f"Planning {choice.label}…"))
        self.probe(choice, None if reprobe else self.profile)

    @work(thread=True, exclusive=True)
    def probe(self, choice: ModelChoice, known: HardwareProfile | None) -> None:
        try:
            profile = known or self.services.probe_hardware()
        except Exception as e:
            self.post_message(HardwareReady(None, None, error=describe_error(e)))
            return
        plan, plan_error = None, None
        try:
            plan = self.services.plan(choice.ref, profile)
        except Exception as e:
            plan_error = describe_error(e)
        self.post_message(HardwareReady(profile, plan, plan_error=plan_error))

    def on_hardware_ready(self, m: HardwareReady) -> None:
        doctor = self.query_one("#doctor", Static)
        plan = self.query_one("#plan", Static)
        self.profile = m.profile
        if m.profile is None:
            error = m.error or "no hardware profile"
            doctor.update(Text(f"Hardware probe failed: {error}"))
            plan.update("No plan without a hardware profile.")
            self.notify(error, title="Hardware probe failed", severity="error")
            return
        doctor.remove_class("muted")
        doctor.update(render_doctor(m.profile))
        if m.plan is not None:
            from edgeglm.planner.explain import render_plan  # the planner loads on first use

            plan.remove_class("muted")
            plan.update(render_plan(m.plan))
        else:
            plan.add_class("muted")
            plan.update(Text(f"Plan not available: {m.plan_error}"))
