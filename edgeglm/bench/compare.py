"""``edgeglm bench compare``: reports from several devices side by side.

Rows are matched by artifact label; each device gets decode/prefill speed and
mean KL columns, and every device after the first gets its decode speed as a
ratio to the first (the noise-robust way to compare machines).
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
                "prefill_tps": row.prefill_tps.median,
                "ttft_ms": row.ttft_s.median * 1000,
                "kl_mean": row.kl_mean,
                "peak_rss_mib": row.peak_rss_bytes / 2**20,
            }
            if base is None:
                base = row.decode_tps.median
            elif base:
                d["decode_vs_first"] = row.decode_tps.median / base
            entry[name] = d
        table.append(entry)
    devices = {
        n: {"cpu": r.fingerprint.get("cpu"), "gpus": r.fingerprint.get("gpus")}
        for n, r in zip(names, reports, strict=True)
    }
    return {"devices": devices, "rows": table}


def to_rich(result: dict[str, Any]) -> Any:
    from rich.table import Table

    names = list(result["devices"])
    t = Table(title="bench compare")
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
            cells += [
                d["device"],
                f"{d['decode_tps']:.1f}{ratio}",
                "ref" if d["kl_mean"] is None else f"{d['kl_mean']:.5f}",
            ]
        t.add_row(*cells)
    return t
