"""Benchmark rows as table cells and plot points; the Pareto front is the report's own."""

from __future__ import annotations

from edgeglm.bench.report import BenchRow, pareto_front
from edgeglm.units import human_bytes

COLUMNS = (
    *("", "Artifact", "Backend", "Size", "bpw", "tok/s", "TTFT ms"),
    *("KL mean", "KL p99", "top-1", "PPL", "RSS"),
)


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


def cells(row: BenchRow, on_front: bool) -> tuple[str, ...]:
    return (
        "★" if on_front else "",
        row.label,
        row.backend,
        human_bytes(row.file_bytes),
        _f(row.bits_per_weight, ".2f"),
        _f(row.decode_tps.median, ".1f"),
        _f(row.ttft_s.median * 1000, ".0f"),
        "ref" if row.reference else _f(row.kl_mean, ".4f"),
        _f(row.kl_p99, ".3f"),
        _f(row.top1, ".3f"),
        _f(row.ppl, ".2f"),
        human_bytes(row.peak_rss_bytes),
    )
