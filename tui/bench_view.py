"""Benchmark rows as table cells, a detail line and plot points.

The Pareto front is the report's own.

The table holds what compares artifacts at a glance and fits a 100-column
terminal; the rest of a row (KL p99, memory, prefill, load time, where the
weights were) is the detail line under the table, for the highlighted row.
"""

from __future__ import annotations

from edgeglm.bench.report import BenchRow, pareto_front
from edgeglm.units import human_bytes

COLUMNS = ("", "Artifact", "Backend", "Size", "bpw", "tok/s", "TTFT ms", "KL", "top-1", "PPL")
LABEL_CHARS = 24  # longer labels end in "…" (the detail line has the whole label)


def kl_of(row: BenchRow) -> float | None:
    """KL against the reference; the reference itself is 0 by definition."""
    return 0.0 if row.reference else row.kl_mean


def latency_ms(row: BenchRow) -> float | None:
    """Milliseconds per decoded token: the latency axis."""
    tps = row.decode_tps.median
    return 1000.0 / tps if tps else None


def pareto(rows: list[BenchRow]) -> list[BenchRow]:
    """Rows no other row beats on both decode speed and KL."""
    return pareto_front(rows)


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
