"""Bench screen: pick models x quants x backends, run, read the table and the latency/KL plot.

The run happens in a worker thread; Esc asks the benchmark to stop after the
current measurement (``should_stop``: the benchmark looks between
artifacts), and the partial report is kept. The screen answers at once
meanwhile. Ctrl+S exports the report and its plot where the user says.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import (
    DataTable,
    Footer,
    Input,
    Label,
    ProgressBar,
    SelectionList,
    Static,
    TabbedContent,
    TabPane,
)

from edgeglm.bench.report import BenchReport
from edgeglm.bench.run import BenchRequest
from edgeglm.errors import EdgeGLMError, UsageError
from edgeglm.fileio import atomic_output

from .bench_view import COLUMNS, cells, detail, pareto
from .messages import BenchEnded, BenchProgress
from .modal_export import ExportModal, targets
from .services import Services
from .widget_scatter import Scatter
from .widgets_common import TopBar, describe_error

DEFAULT_QUANTS = ("Q8_0", "Q4_K_M")


class BenchScreen(Screen[None]):
    DEFAULT_CSS = """
    BenchScreen TabbedContent { height: 1fr; }
    BenchScreen #setup { layout: horizontal; }
    BenchScreen #quants { width: 24; height: 1fr; }
    BenchScreen #side { width: 1fr; padding: 0 1; }
    BenchScreen #side Label { margin: 0; color: $text-muted; }
    BenchScreen #backends { height: auto; max-height: 4; }
    BenchScreen #progress-row { height: 1; padding: 0 1; }
    BenchScreen .hint { color: $text-muted; margin-top: 1; }
    BenchScreen #progress-row ProgressBar { width: 36; }
    BenchScreen #status { width: 1fr; color: $text-muted; }
    BenchScreen #results { layout: vertical; }
    BenchScreen #table { height: 1fr; }
    BenchScreen #detail { height: auto; max-height: 3; color: $text-muted; padding: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+r", "run", "Run"),
        Binding("escape", "stop", "Stop"),
        Binding("ctrl+s", "export", "Export"),
    ]

    def __init__(self, services: Services, model: str | None) -> None:
        super().__init__()
        self.services = services
        self.model = model
        self.report: BenchReport | None = None
        self.running = False
        self._stop = threading.Event()
        self._current = ""  # what the benchmark is measuring now

    def compose(self) -> ComposeResult:
        quants = self.services.quants()
        yield TopBar("bench")
        with TabbedContent(id="tabs"):
            with TabPane("Setup", id="setup"):
                yield SelectionList[str](
                    *((q, q, q in DEFAULT_QUANTS) for q in quants), id="quants"
                )
                with Vertical(id="side"):
                    yield Label("Models (comma-separated; empty = demo model)")
                    yield Input(self.model or "", id="models", compact=True)
                    yield Label("Backends")
                    yield SelectionList[str](
                        *((b, b, i == 0) for i, b in enumerate(self.services.backends)),
                        id="backends",
                    )
                    yield Label("Quality text (empty = built-in sample)")
                    yield Input(placeholder="path to a UTF-8 .txt", id="text", compact=True)
                    yield Label("Repeats per measurement")
                    yield Input("3", type="integer", id="repeat", compact=True)
                    yield Static(
                        "Quants (left): none ticked = defaults; GGUF/ONNX files keep their own\n"
                        "Ctrl+R runs · Esc stops · Ctrl+S exports",
                        classes="hint",
                    )
            with TabPane("Results", id="results"):
                yield DataTable(zebra_stripes=True, cursor_type="row", id="table")
                yield Static("", id="detail")
            with TabPane("Plot", id="plot-tab"):
                yield Scatter()
        with Horizontal(id="progress-row"):
            yield ProgressBar(total=1.0, show_eta=False, show_percentage=False, id="progress")
            yield Static("idle", id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#table", DataTable).add_columns(*COLUMNS)

    def _status(self, text: str) -> None:
        self.query_one("#status", Static).update(Text(text))

    def action_run(self) -> None:
        if self.running:
            self.notify("A benchmark is already running (Esc stops it)", severity="warning")
            return
        models: list[str | None] = [
            m.strip() for m in self.query_one("#models", Input).value.split(",") if m.strip()
        ] or [None]
        quants = list(self.query_one("#quants", SelectionList).selected)
        backends = list(self.query_one("#backends", SelectionList).selected)
        text_raw = self.query_one("#text", Input).value.strip()
        repeat_raw = self.query_one("#repeat", Input).value.strip()
        problems = []
        if not backends:
            problems.append("choose at least one backend")
        if not repeat_raw.isdigit() or int(repeat_raw) < 1:
            problems.append("repeats must be a whole number ≥ 1")
        text = Path(text_raw).expanduser() if text_raw else None
        if text is not None and not text.is_file():
            problems.append(f"{text}: no such text file")
        if problems:
            self.notify("; ".join(problems), title="Cannot run", severity="error")
            return
        try:  # the bounds every benchmark is held to (BenchRequest checks them)
            request = BenchRequest(
                models=tuple(models),
                # none chosen is "not given" (None), as the CLI without --quants:
                # a checkpoint's default quants, and GGUF files and ONNX folders,
                # which have their own quant and refuse any named
                quants=tuple(quants) or None,
                backends=tuple(backends),
                text=text,
                repeat=int(repeat_raw),
            )
        except UsageError as e:
            self.notify(str(e), title="Cannot run", severity="error")
            return
        self.running = True
        self._stop.clear()
        self.query_one("#progress", ProgressBar).update(total=1.0, progress=0.0)
        self._status("starting…")
        self.run_bench(request)

    @work(thread=True, exclusive=True)
    def run_bench(self, request: BenchRequest) -> None:
        def progress(what: str, fraction: float) -> None:
            self.post_message(BenchProgress(what, fraction))

        try:
            report = self.services.run_bench(request, progress, self._stop.is_set)
        except Exception as e:
            self.post_message(BenchEnded(None, describe_error(e)))
            return
        self.post_message(BenchEnded(report, stopped=self._stop.is_set()))

    def on_bench_progress(self, m: BenchProgress) -> None:
        fraction = max(0.0, min(1.0, m.fraction))
        self._current = m.text
        self.query_one("#progress", ProgressBar).update(progress=fraction)
        if self._stop.is_set():
            self._status(f"stopping: {m.text} is the last measurement…")
        else:
            self._status(f"{fraction:4.0%} {m.text}")

    def on_bench_ended(self, m: BenchEnded) -> None:
        self.running = False
        if m.error is not None:
            self._status(f"failed: {m.error}")
            self.notify(m.error, title="Benchmark failed", severity="error")
            return
        self.report = m.report
        rows = m.report.rows if m.report is not None else []
        front = {id(r) for r in pareto(rows)}
        table = self.query_one("#table", DataTable)
        table.clear()
        for r in rows:
            table.add_row(*cells(r, id(r) in front))
        self._show_detail(0)
        self.query_one(Scatter).show(rows)
        self.query_one("#progress", ProgressBar).update(progress=1.0)
        self._status(f"{'stopped' if m.stopped else 'done'}: {len(rows)} rows · ★ Pareto front")
        self.query_one(TabbedContent).active = "results"

    @on(DataTable.RowHighlighted, "#table")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_detail(event.cursor_row)

    def _show_detail(self, index: int) -> None:
        rows = self.report.rows if self.report is not None else []
        text = detail(rows[index]) if 0 <= index < len(rows) else ""
        self.query_one("#detail", Static).update(Text(text))

    def action_stop(self) -> None:
        if self.running and not self._stop.is_set():
            self._stop.set()
            # the benchmark looks at the flag between artifacts: say what it finishes first
            what = f"{self._current} is the last measurement" if self._current else "starting"
            self._status(f"stopping: {what}…")
            self.notify("The results so far are kept.", title="Stopping the benchmark")

    def action_export(self) -> None:
        if self.report is None:
            self.notify("Nothing to export yet: run a benchmark first", severity="warning")
            return
        default = Path.cwd() / time.strftime("edgeglm-bench-%Y%m%d-%H%M%S")
        self.app.push_screen(ExportModal(default), self._export)

    def _export(self, stem: Path | None) -> None:
        if stem is None or self.report is None:
            return
        from edgeglm.bench.plot import to_svg

        report = self.report
        # typed: mypy otherwise joins the lambda's type in as untyped, depending on its cache
        renders: tuple[Callable[[], str], ...] = (
            report.to_json,
            lambda: to_svg(report),
            report.to_csv,
            report.to_markdown,
        )
        written: list[Path] = []
        try:
            for path, render in zip(targets(stem), renders, strict=True):
                # never a half-written file at the final name (a full disk, a crash)
                with atomic_output(path) as tmp:
                    tmp.write_text(render(), encoding="utf-8")
                written.append(path)
        except (OSError, EdgeGLMError) as e:
            self.notify(f"Export failed: {e}", severity="error")
            return
        names = ", ".join(p.name for p in written)
        self.notify(f"Saved {names} in {written[0].parent}", title="Exported")

    @on(TabbedContent.TabActivated)
    def _tab(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "plot-tab" and self.report is not None:
            self.query_one(Scatter).show(list(self.report.rows))
