"""The benchmark report as a Rich table for the terminal (``edgeglm bench``, the demo)."""

from __future__ import annotations

from typing import Any

from edgeglm.bench.report import BenchReport, Spread, pareto_front, quality_cells, vram_cell


def main_table(report: BenchReport) -> Any:
    """A rich Table: one row per artifact, notes (references, warnings) below."""
    from rich.table import Table

    front = {id(r) for r in pareto_front(report.rows)}
    t = Table(
        title="latency against quality" + ("" if report.complete else " (interrupted: partial)")
    )
    cols = ["artifact", "device", "MiB", "bpw", "load s", "TTFT ms", "prefill t/s"]
    cols += ["decode t/s", "IQR", "RSS MiB", "VRAM MiB (model / plan)", "mean KL", "p99 KL"]
    cols += ["top-1", "PPL", "roofline"]
    # the artifact's name whole (other columns wrap their headers first)
    width = max([len(r.label) + 2 for r in report.rows] + [8])
    t.add_column(cols[0], no_wrap=True, min_width=width)
    for col in cols[1:]:
        t.add_column(col, justify="right")
    for r in report.rows:
        t.add_row(
            r.label + (" *" if id(r) in front else ""),
            r.device + (f" ({r.provider.removesuffix('ExecutionProvider')})" if r.provider else ""),
            f"{r.file_bytes / 2**20:.1f}",
            "–" if r.bits_per_weight is None else f"{r.bits_per_weight:.2f}",
            f"{r.load_s:.2f}",
            f"{r.ttft_s.median * 1000:.0f}",
            f"{r.prefill_tps.median:.0f}",
            f"{r.decode_tps.median:.1f}",
            _iqr(r.decode_tps),
            f"{r.peak_rss_bytes / 2**20:.0f}",
            vram_cell(r),
            *quality_cells(r),
            f"{r.ppl:.2f}" if r.ppl else "–",
            f"{r.decode_efficiency * 100:.0f}%" if r.decode_efficiency else "–",
        )
    notes = report.notes(warnings=False)  # the CLI prints those on stderr
    if any((r.decode_efficiency or 0) > 1 for r in report.rows):
        notes.append(
            "roofline above 100%: the weights fit in CPU caches, so memory bandwidth "
            "is not what limits decode"
        )
    if any(r.decode_tps.noisy for r in report.rows):
        notes.append("! an interquartile range over a quarter of its median: a disturbed run")
    t.caption = "\n".join(notes) or None
    return t


def _iqr(s: Spread) -> str:
    """The interquartile range, ``!`` where it is over a quarter of the median."""
    iqr = s.iqr
    if iqr is None or len(s.runs) < 2:  # one run has no spread to speak of
        return "–"
    return f"{iqr:.1f}" + ("!" if s.noisy else "")
