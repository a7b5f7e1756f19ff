"""Benchmark rows as table cells, a detail line and plot points.

The Pareto front is the report's own; the plot's axes are laid out as the
exported SVG's (edgeglm/bench/plot.py), with the same ticks (ticks.py).

The table holds what compares artifacts at a glance and fits a 100-column
terminal; the rest of a row (KL p99, memory, prefill, load time, where the
weights were) is the detail line under the table, for the highlighted row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgeglm.bench.report import BenchRow, pareto_front
from edgeglm.bench.ticks import linear_labels, linear_ticks, log_labels, log_ticks
from edgeglm.units import human_bytes

COLUMNS = ("", "Artifact", "Backend", "Size", "bpw", "tok/s", "TTFT ms", "KL", "top-1", "PPL")
LABEL_CHARS = 24  # longer labels end in "…" (the detail line has the whole label)


def latency_ms(row: BenchRow) -> float | None:
    """Milliseconds per decoded token: the latency axis."""
    tps = row.decode_tps.median
    return 1000.0 / tps if tps else None


def pareto(rows: list[BenchRow]) -> list[BenchRow]:
    """Rows no other row beats on both decode speed and KL."""
    return pareto_front(rows)


REFERENCE_TICK = "0 (ref)"


@dataclass(frozen=True)
class Point:
    row: BenchRow
    x: float  # ms per decoded token
    y: float  # log10 of the mean KL; the reference band's height for KL 0


@dataclass(frozen=True)
class PlotLayout:
    """Where the plot puts each row, and its axes (y in log10 KL units)."""

    points: list[Point]  # rows with a latency and a quality figure, by latency
    unplaced: list[BenchRow]  # timed rows without a quality figure: named, not drawn
    x_ticks: list[float]
    x_labels: list[str]
    y_ticks: list[float]  # the reference band's tick first
    y_labels: list[str]
    front: list[Point]  # the Pareto front less the reference (drawn as its own marker)


def plot_layout(rows: list[BenchRow]) -> PlotLayout:
    """KL spans orders of magnitude, so y is log10 KL; KL 0 (the reference, or a
    quant that matches it exactly) has no place on a log axis and gets a band of
    its own under it, ticked "0 (ref)", as in the exported SVG."""
    timed = [(latency_ms(r), r) for r in rows]
    placed = sorted(
        ((x, r) for x, r in timed if x is not None and (r.reference or r.kl_mean is not None)),
        key=lambda p: p[0],
    )
    unplaced = [r for x, r in timed if x is not None and not r.reference and r.kl_mean is None]
    kls = [r.kl_mean for _, r in placed if not r.reference and r.kl_mean]
    kt = log_ticks(min(kls), max(kls)) if kls else [1e-4, 1e-3, 1e-2, 1e-1]
    lo, hi = math.log10(kt[0]), math.log10(kt[-1])
    band = lo - max(hi - lo, 1.0) * 0.2  # a gap under the lowest tick, never a tick's height
    xt = linear_ticks(0.0, max([x for x, _ in placed] or [1.0]))

    def y_of(r: BenchRow) -> float:
        return math.log10(r.kl_mean) if not r.reference and r.kl_mean else band

    points = [Point(r, x, y_of(r)) for x, r in placed]
    on_front = {id(r) for r in pareto_front([p.row for p in points]) if not r.reference}
    front = [p for p in points if id(p.row) in on_front]
    return PlotLayout(
        points=points,
        unplaced=unplaced,
        x_ticks=xt,
        x_labels=linear_labels(xt),
        y_ticks=[band, *(math.log10(v) for v in kt)],
        y_labels=[REFERENCE_TICK, *log_labels(kt)],
        front=front,
    )


def _f(v: float | None, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def _label(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def cells(row: BenchRow, on_front: bool) -> tuple[str, ...]:
    return (
        "★" if on_front else "",
        _label(row.label),
        row.backend,
        human_bytes(row.file_bytes),
        _f(row.bits_per_weight, ".2f"),
        _f(row.decode_tps.median, ".1f"),
        _f(row.ttft_s.median * 1000, ".0f"),
        "ref" if row.reference else _f(row.kl_mean, ".4f"),
        _f(row.top1, ".3f"),
        _f(row.ppl, ".2f"),
    )


def detail(row: BenchRow) -> str:
    """Everything about ``row`` the table leaves out, on one line."""
    parts = [
        row.label,
        f"{row.backend} on {row.device}",
        f"decode {row.decode_tps.median:.1f} tok/s "
        f"(runs {row.decode_tps.min:.1f}–{row.decode_tps.max:.1f})",
        f"prefill {row.prefill_tps.median:.0f} tok/s",
        f"load {row.load_s:.2f} s",
        f"peak RSS {human_bytes(row.peak_rss_bytes)}",
    ]
    if row.vram_bytes:
        parts.append(f"VRAM {human_bytes(row.vram_bytes)}")
    if row.kl_p99 is not None:
        parts.append(f"KL p99 {row.kl_p99:.3f}")
    if row.decode_efficiency is not None:
        parts.append(f"{row.decode_efficiency:.0%} of the roofline")
    return " · ".join(parts)
