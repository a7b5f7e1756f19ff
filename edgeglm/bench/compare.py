"""``edgeglm bench compare``: reports from several devices side by side.

Rows are matched by artifact label; each device gets decode/prefill speed
(median, and the interquartile range of decode) and mean KL columns, and every
device after the first gets its decode speed as a ratio to the first (the
noise-robust way to compare machines). Reports of every readable schema
(report.py) compare: quartiles of an older report come from its runs.
"""

from __future__ import annotations

from typing import Any

from edgeglm.bench.report import BenchReport


def compare(reports: list[BenchReport], names: list[str]) -> dict[str, Any]:
    labels: list[str] = []
    for rep in reports:
        for r in rep.rows:
            if r.label not in labels:
                labels.append(r.label)
    table = []
    for label in labels:
        entry: dict[str, Any] = {"artifact": label}
        base = None
        for name, rep in zip(names, reports, strict=True):
            row = next((r for r in rep.rows if r.label == label), None)
            if row is None:
                entry[name] = None
                continue
            d = {
                "device": row.device,  # llama.cpp: cpu, gpu or split (where weights were read)
                "decode_tps": row.decode_tps.median,
                "decode_iqr": row.decode_tps.iqr,
                "decode_noisy": row.decode_tps.noisy,
                "prefill_tps": row.prefill_tps.median,
                "ttft_ms": row.ttft_s.median * 1000,
                "kl_mean": row.kl_mean,
                "reference": row.reference,
                "reference_label": row.reference_label,
                "peak_rss_mib": row.peak_rss_bytes / 2**20,
            }
            if base is None:
                base = row.decode_tps.median
            elif base:
                d["decode_vs_first"] = row.decode_tps.median / base
            entry[name] = d
        table.append(entry)
    devices = {
        n: {
            "cpu": r.fingerprint.get("cpu"),
            "gpus": r.fingerprint.get("gpus"),
            "schema_version": r.schema_version,
            "complete": r.complete,
        }
        for n, r in zip(names, reports, strict=True)
    }
    return {"devices": devices, "rows": table}


def to_rich(result: dict[str, Any]) -> Any:
    from rich.table import Table

    names = list(result["devices"])
    t = Table(title="bench compare")
    partial = [n for n, d in result["devices"].items() if not d["complete"]]
    if partial:
        t.caption = f"partial (interrupted) reports: {', '.join(partial)}"
    t.add_column("artifact")
    for n in names:
        t.add_column(f"{n}\ndevice")
        t.add_column(f"{n}\ndecode t/s", justify="right")
        t.add_column(f"{n}\nmean KL", justify="right")
    for entry in result["rows"]:
        cells = [entry["artifact"]]
        for n in names:
            d = entry.get(n)
            if d is None:
                cells += ["–", "–", "–"]
                continue
            ratio = f" ({d['decode_vs_first']:.2f}x)" if "decode_vs_first" in d else ""
            iqr = "" if d["decode_iqr"] is None else f" (IQR {d['decode_iqr']:.1f})"
            kl = "–" if d["kl_mean"] is None else f"{d['kl_mean']:.5f}"
            speed = f"{d['decode_tps']:.1f}{iqr}{ratio}"
            cells += [d["device"], speed, "ref" if d["reference"] else kl]
        t.add_row(*cells)
    return t
