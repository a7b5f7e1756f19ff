"""Latency against KL divergence, Pareto front highlighted (plotext, through textual-plotext)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Container
from textual.widgets import Static
from textual_plotext import PlotextPlot

from edgeglm.bench.report import BenchRow

from .bench_view import kl_of, latency_ms, pareto


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
        points: list[tuple[float, float, BenchRow]] = []
        for r in rows:
            x, y = latency_ms(r), kl_of(r)
            if x is not None and y is not None:
                points.append((x, y, r))
        points.sort(key=lambda p: p[0])
        front = {id(r) for r in pareto([r for _, _, r in points])}
        best = [(x, y) for x, y, r in points if id(r) in front]
        rest = [(x, y) for x, y, r in points if id(r) not in front]
        plt = widget.plt
        plt.clear_figure()
        plt.title("Latency vs quality: lower-left is better")
        plt.xlabel("ms per decoded token")
        plt.ylabel("mean KL vs reference")
        if rest:
            plt.scatter([p[0] for p in rest], [p[1] for p in rest], marker="x", color="blue")
        if best:
            plt.plot([p[0] for p in best], [p[1] for p in best], marker="braille", color="red")
            plt.scatter([p[0] for p in best], [p[1] for p in best], marker="★", color="red")
        if points:
            x0, x1 = points[0][0], points[-1][0]
            pad = (x1 - x0) * 0.05 or 1.0  # keep edge markers off the frame
            plt.xlim(x0 - pad, x1 + pad)
        # in-plot text labels collide with markers at terminal resolution: name points below
        names = [f"{r.quant} {x:.1f} ms, KL {y:.4f}" for x, y, r in points if id(r) in front]
        others = [r.quant for _, _, r in points if id(r) not in front]
        caption = "★ Pareto front: " + "; ".join(names) if names else "No quality scores yet."
        if others:
            caption += "   x dominated: " + ", ".join(others)
        self.query_one("#caption", Static).update(Text(caption))
        widget.refresh()
