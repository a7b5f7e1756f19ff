"""Benchmark reports: one row per artifact, a fingerprint, and the exports.

The JSON form is the source of truth (``schema_version`` bumps on any
incompatible change); CSV, Markdown and the terminal table are views of it.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edgeglm.errors import UsageError

# 2: rows carry the launch spec that ran, where the weights were read from
# (device "cpu", "gpu" or "split") and the roofline's inputs.
# 3: ONNX rows' device is "cpu" or "gpu" (it was the provider's name), and
# the provider the session ran has a field of its own; rows carry the VRAM
# the model took (NVML) beside the plan's estimate for the spec that ran.
# Older reports still load: their new fields are None.
SCHEMA_VERSION = 3
READABLE_SCHEMAS = (1, 2, 3)


@dataclass
class Spread:
    """Median of repeated runs with min and max, so noise is visible."""

    median: float
    min: float
    max: float
    runs: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        s = sorted(values)
        mid = len(s) // 2
        median = s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
        return cls(median, s[0], s[-1], list(values))


@dataclass
class BenchRow:
    label: str  # e.g. "glm-demo Q4_K_M"
    model: str
    quant: str
    backend: str
    device: str  # where the weights were read from: "cpu", "gpu", "split" (llama.cpp)
    file_bytes: int
    bits_per_weight: float | None
    load_s: float
    ttft_s: Spread
    prefill_tps: Spread
    decode_tps: Spread
    peak_rss_bytes: int
    # NVML, the measuring process while the model was loaded (None: not measured)
    vram_bytes: int | None = None
    # quality against the highest-precision artifact (None for the reference itself)
    kl_mean: float | None = None
    kl_p99: float | None = None
    top1: float | None = None
    ppl: float | None = None
    # roofline: the fastest a decode step could be, reading its weights at the
    # bandwidth of the memory each is in, over the measured step
    bytes_per_token: int | None = None
    decode_efficiency: float | None = None
    reference: bool = False
    launch: dict[str, Any] | None = None  # the launch spec the measurement ran with
    bytes_per_token_cpu: int | None = None
    bytes_per_token_gpu: int | None = None
    bandwidth_cpu_gbps: float | None = None
    bandwidth_gpu_gbps: float | None = None
    roofline_note: str | None = None  # what the roofline used, or why there is none
    provider: str | None = None  # ONNX Runtime: the execution provider the session ran
    vram_model_bytes: int | None = None  # the model's part of vram_bytes (freeing it released)
    vram_planned_bytes: int | None = None  # the planner's GPU estimate for the spec that ran
    vram_note: str | None = None  # how VRAM was measured and estimated, or why not

    def flat(self) -> dict[str, Any]:
        """One level of keys, for CSV and tables."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Spread):
                out[f.name] = v.median
                out[f"{f.name}_min"] = v.min
                out[f"{f.name}_max"] = v.max
            elif isinstance(v, dict):
                out[f.name] = json.dumps(v, sort_keys=True)
            else:
                out[f.name] = v
        return out


@dataclass
class BenchReport:
    fingerprint: dict[str, Any]
    settings: dict[str, Any]
    rows: list[BenchRow] = field(default_factory=list)
    complete: bool = True  # False when interrupted: rows hold what finished
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_csv(self) -> str:
        buf = io.StringIO()
        flat = [r.flat() for r in self.rows]
        keys = list(flat[0]) if flat else [f.name for f in fields(BenchRow)]
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(flat)
        return buf.getvalue()

    def to_markdown(self) -> str:
        cols = ["artifact", "backend", "size MiB", "bpw", "decode tok/s", "prefill tok/s"]
        cols += ["TTFT ms", "peak RSS MiB", "VRAM MiB (model / planned)", "mean KL", "p99 KL"]
        cols += ["top-1", "PPL"]
        cols += ["roofline", "launch"]
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in self.rows:
            cells = [
                r.label,
                f"{r.backend} ({r.device}{', ' + r.provider if r.provider else ''})",
                f"{r.file_bytes / 2**20:.1f}",
                _f(r.bits_per_weight, 2),
                f"{r.decode_tps.median:.1f}",
                f"{r.prefill_tps.median:.0f}",
                f"{r.ttft_s.median * 1000:.0f}",
                f"{r.peak_rss_bytes / 2**20:.0f}",
                vram_cell(r),
                _f(r.kl_mean, 5),
                _f(r.kl_p99, 4),
                _f(r.top1, 3),
                _f(r.ppl, 2),
                _pct(r.decode_efficiency),
                _launch(r.launch),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        fp = self.fingerprint
        lines.append("")
        lines.append(
            f"CPU: {fp.get('cpu')}; llama-cpp-python {fp.get('llama_cpp_python')}; "
            f"edgeglm {fp.get('edgeglm')}; report schema {self.schema_version}"
        )
        return "\n".join(lines) + "\n"

    @classmethod
    def load(cls, path: Path) -> BenchReport:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UsageError(f"{path}: not a readable benchmark report ({e})") from e
        version = data.get("schema_version") if isinstance(data, dict) else None
        if version not in READABLE_SCHEMAS:
            raise UsageError(
                f"{path}: report schema {version}, this EdgeGLM reads "
                + ", ".join(map(str, READABLE_SCHEMAS))
            )
        known = {f.name for f in fields(BenchRow)}
        try:
            rows = []
            for r in data["rows"]:
                for k in ("ttft_s", "prefill_tps", "decode_tps"):
                    r[k] = Spread(**r[k])
                rows.append(BenchRow(**{k: v for k, v in r.items() if k in known}))
            return cls(
                data["fingerprint"], data["settings"], rows, data.get("complete", True), version
            )
        except (KeyError, TypeError) as e:
            raise UsageError(f"{path}: not a benchmark report of schema {version} ({e})") from e


def _mib(v: int | None) -> str:
    return "–" if v is None else f"{v / 2**20:.0f}"


def vram_cell(r: BenchRow) -> str:
    """The process's VRAM, then the model's part against the plan's: ``1650 (1120 / 1080)``."""
    if r.vram_bytes is None and r.vram_model_bytes is None and r.vram_planned_bytes is None:
        return "–"
    return f"{_mib(r.vram_bytes)} ({_mib(r.vram_model_bytes)} / {_mib(r.vram_planned_bytes)})"


def _f(v: float | None, digits: int) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.0f}%"


def _launch(launch: dict[str, Any] | None) -> str:
    """The spec that ran, as llama.cpp flags (Markdown-safe)."""
    if launch is None:
        return "–"
    from edgeglm.planner.launch import LaunchSpec

    args = " ".join(LaunchSpec.from_dict(launch).llama_cpp_args())
    return "`" + args.replace("|", "\\|") + "`"


def pareto_front(rows: list[BenchRow]) -> list[BenchRow]:
    """Rows no other row beats on both decode speed and KL divergence."""
    scored = [r for r in rows if r.kl_mean is not None or r.reference]

    def kl(r: BenchRow) -> float:
        return 0.0 if r.reference else float(r.kl_mean or 0.0)

    front = []
    for r in scored:
        dominated = any(
            (o.decode_tps.median >= r.decode_tps.median and kl(o) <= kl(r))
            and (o.decode_tps.median > r.decode_tps.median or kl(o) < kl(r))
            for o in scored
        )
        if not dominated:
            front.append(r)
    return sorted(front, key=lambda r: r.decode_tps.median)
