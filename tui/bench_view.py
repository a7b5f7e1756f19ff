"""Benchmark rows as table cells and plot points, and the Pareto front.

Rows come from ``edgeglm.bench.report``; speed fields there are ``Spread``
objects (median, min, max) while a plain float is accepted too, so the
screen does not care which it gets.
"""

from __future__ import annotations

from typing import Any

from .artifacts import human_bytes

COLUMNS = (
    *("", "Artifact", "Backend", "Size", "bpw", "tok/s", "TTFT ms"),
    *("KL mean", "KL p99", "top-1", "PPL", "RSS"),
)


def num(v: Any) -> float | None:
    if v is None:
        return None
    if hasattr(v, "median"):
        return float(v.median)
    return float(v)


def kl_of(row: Any) -> float | None:
    """KL against the reference; the reference itself is 0 by definition."""
    if getattr(row, "reference", False):
        return 0.0
    return num(row.kl_mean)


def latency_ms(row: Any) -> float | None:
    """Milliseconds per decoded token: the latency axis."""
    tps = num(row.decode_tps)
    return 1000.0 / tps if tps else None


def pareto(rows: list[Any]) -> list[Any]:
    """Rows no other row beats on both latency and KL (the report's own rule when present)."""
    try:
        from edgeglm.bench.report import pareto_front

        return list(pareto_front(rows))
    except (ImportError, AttributeError, TypeError):
        pass
    scored = [r for r in rows if kl_of(r) is not None and latency_ms(r) is not None]

    def beats(o: Any, r: Any) -> bool:
        lo, lr, ko, kr = latency_ms(o), latency_ms(r), kl_of(o), kl_of(r)
        assert lo is not None and lr is not None and ko is not None and kr is not None
        return lo <= lr and ko <= kr and (lo < lr or ko < kr)

    return [r for r in scored if not any(beats(o, r) for o in scored)]


def _f(v: float | None, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def cells(row: Any, on_front: bool) -> tuple[str, ...]:
    ttft = num(row.ttft_s)
    return (
        "★" if on_front else "",
        str(row.label),
        str(row.backend),
        human_bytes(row.file_bytes),
        _f(num(row.bits_per_weight), ".2f"),
        _f(num(row.decode_tps), ".1f"),
        _f(ttft * 1000 if ttft is not None else None, ".0f"),
        "ref" if getattr(row, "reference", False) else _f(num(row.kl_mean), ".4f"),
        _f(num(row.kl_p99), ".3f"),
        _f(num(row.top1), ".3f"),
        _f(num(row.ppl), ".2f"),
        human_bytes(row.peak_rss_bytes),
    )
