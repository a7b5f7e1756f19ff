"""Axis ticks people read at a glance: round numbers at even steps.

A linear axis steps by 1, 2 or 5 times a power of ten (0, 20, 40, 60; never
0.0, 0.2, 0.5, 0.7); a log axis ticks every decade, every few decades when
there are many, and at 1, 2 and 5 times each power of ten when the range is
under two decades. Anything that plots bench results (the SVG here, the
chat app's plot) can use them.
"""

from __future__ import annotations

import math

_STEPS = (1.0, 2.0, 5.0, 10.0)


def nice_step(span: float, max_ticks: int = 6) -> float:
    """The smallest 1-2-5 step that covers ``span`` in at most ``max_ticks`` - 1 steps."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / max(max_ticks - 1, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in _STEPS if m * power >= raw * (1 - 1e-9))


def linear_ticks(lo: float, hi: float, max_ticks: int = 6) -> list[float]:
    """Round ticks from at or below ``lo`` to at or above ``hi``, evenly stepped."""
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        hi = lo + 1.0
    step = nice_step(hi - lo, max_ticks)
    # the fewest evenly stepped ticks that enclose [lo, hi]; widen the step if too many
    while True:
        first = math.floor(lo / step + 1e-9)
        last = math.ceil(hi / step - 1e-9)
        if last - first + 1 <= max_ticks + 1:
            break
        step = nice_step(step * (max_ticks + 1), max_ticks)
    return [_clean((first + i) * step, step) for i in range(last - first + 1)]


def log_ticks(lo: float, hi: float, max_ticks: int = 6) -> list[float]:
    """Ticks for a log axis over [lo, hi] (both > 0), enclosing the range."""
    if lo <= 0 or hi <= 0:
        raise ValueError("a log axis needs positive bounds")
    if hi < lo:
        lo, hi = hi, lo
    e0, e1 = math.floor(math.log10(lo) + 1e-9), math.ceil(math.log10(hi) - 1e-9)
    if e1 - e0 < 2:  # under two decades: 1, 2, 5 of each decade, trimmed to the range
        marks = [m * 10.0**e for e in range(e0, max(e1, e0 + 1) + 1) for m in (1, 2, 5)]
        below = [m for m in marks if m <= lo * (1 + 1e-9)]
        above = [m for m in marks if m >= hi * (1 - 1e-9)]
        start, end = marks.index(below[-1]), marks.index(above[0])
        return marks[start : end + 1]
    every = max(1, math.ceil((e1 - e0) / max(max_ticks - 1, 1)))
    e0 = every * math.floor(e0 / every)
    e1 = every * math.ceil(e1 / every)
    return [10.0**e for e in range(e0, e1 + 1, every)]


def _clean(v: float, step: float) -> float:
    """``v`` rounded to the step's decimals (no 0.30000000000000004)."""
    return round(v, max(0, -math.floor(math.log10(step))) + 1) if step < 1 else round(v, 6)


def linear_labels(ticks: list[float]) -> list[str]:
    """Texts for evenly stepped ticks: no more decimals than the step needs."""
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    digits = max(0, -math.floor(math.log10(step) + 1e-9))
    return [f"{v:.{digits}f}" for v in ticks]


def log_labels(ticks: list[float]) -> list[str]:
    """Texts for log ticks, one form per axis: plain numbers where all are
    between 0.01 and 1000, otherwise powers of ten (``1e-4``, ``2e-4``)."""
    if all(0.01 <= v <= 1000 for v in ticks):
        return [f"{v:g}" for v in ticks]
    out = []
    for v in ticks:
        e = math.floor(math.log10(v) + 1e-9)
        m = round(v / 10.0**e)
        out.append(f"1e{e}" if m == 1 else f"{m}e{e}")
    return out
