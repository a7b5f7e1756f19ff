"""Latency against KL divergence, Pareto front highlighted (plotext, through textual-plotext).

The axes are the exported SVG's (bench_view.plot_layout): round ticks from
edgeglm/bench/ticks.py, KL on a log scale, and the reference as a marker of
its own in a band under the log axis, never one of the compared points.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Container
from textual.widgets import Static
from textual_plotext import PlotextPlot

from edgeglm.bench.report import BenchRow

from .bench_view import Point, plot_layout

FRONT, OTHER, REFERENCE = "★", "x", "◆"


class Scatter(Container):
    DEFAULT_CSS = """
    Scatter { height: 1fr; }
    Scatter Static { color: $text-muted; padding: 0 1; height: auto; }
    """

    def compose(self) -> ComposeResult:
        yield PlotextPlot(id="plot")
        yield Static("Run a benchmark to see latency against quality.", id="caption")

    def show(self, rows: list[BenchRow]) -> None:
        widget = self.query_one("#plot", PlotextPlot)
        layout = plot_layout(rows)
        on_front = {id(p.row) for p in layout.front}
        refs = [p for p in layout.points if p.row.reference]
        rest = [p for p in layout.points if not p.row.reference and id(p.row) not in on_front]
        plt = widget.plt
        plt.clear_figure()
        plt.title("Latency vs quality: lower-left is better")
        plt.xlabel("ms per decoded token")
        plt.ylabel("mean KL vs reference (log)")
        plt.xticks(layout.x_ticks, layout.x_labels)
        plt.yticks(layout.y_ticks, layout.y_labels)
        # a little room past the outer ticks keeps edge markers off the frame
        xs, ys = layout.x_ticks, layout.y_ticks
        xpad, ypad = (xs[-1] - xs[0]) * 0.03, (ys[-1] - ys[0]) * 0.05
        plt.xlim(xs[0] - xpad, xs[-1] + xpad)
        plt.ylim(ys[0] - ypad, ys[-1] + ypad)

        def draw(points: list[Point], marker: str, color: str) -> None:
            if points:
                px, py = [p.x for p in points], [p.y for p in points]
                plt.scatter(px, py, marker=marker, color=color)

        if len(layout.front) > 1:
            xy = ([p.x for p in layout.front], [p.y for p in layout.front])
            plt.plot(*xy, marker="braille", color="red")
        draw(rest, OTHER, "blue")
        draw(layout.front, FRONT, "red")
        draw(refs, REFERENCE, "green")  # not "default": textual-plotext drops its leading spaces
        caption = _caption(layout.front, rest, refs, layout.unplaced)
        self.query_one("#caption", Static).update(Text(caption))
        widget.refresh()


def _caption(
    front: list[Point], rest: list[Point], refs: list[Point], unplaced: list[BenchRow]
) -> str:
    """In-plot text labels collide with markers at terminal resolution: name the points here."""
    parts = []
    if front:
        named = "; ".join(f"{p.row.quant} {p.x:.1f} ms, KL {p.row.kl_mean:.4f}" for p in front)
        parts.append(f"{FRONT} Pareto front: {named}")
    else:
        parts.append("No quality scores yet.")
    if rest:
        parts.append(f"{OTHER} dominated: " + ", ".join(p.row.quant for p in rest))
    if refs:
        named = "; ".join(f"{p.row.quant} {p.x:.1f} ms" for p in refs)
        parts.append(f"{REFERENCE} reference (KL 0): {named}")
    if unplaced:
        parts.append("not drawn (no quality figure): " + ", ".join(r.quant for r in unplaced))
    return "   ".join(parts)
