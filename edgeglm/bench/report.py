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
# 4: every spread carries its quartiles (q1, q3: the interquartile range is
# the noise figure; min/max stay); rows name the reference they are compared
# with (reference_label) or why they have no quality figures (quality_note);
# ONNX rows have bits per weight; the report carries its warnings (a
# disturbed measurement). Older reports still load: quartiles come from
# their runs, other new fields are None.
SCHEMA_VERSION = 4
READABLE_SCHEMAS = (1, 2, 3, 4)
# A spread whose interquartile range is more than this share of its median
# was disturbed (another program took the cores): the report warns.
NOISY_IQR = 0.25


def _quantile(s: list[float], q: float) -> float:
    """numpy's default (linear) quantile of sorted values."""
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass
class Spread:
    """Repeated runs: the median, the quartiles (the interquartile range is the
    noise figure: one disturbed run moves it little), min and max."""

    median: float
    min: float
    max: float
    runs: list[float] = field(default_factory=list)
    q1: float | None = None
    q3: float | None = None

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        s = sorted(values)
        return cls(
            _quantile(s, 0.5), s[0], s[-1], list(values), _quantile(s, 0.25), _quantile(s, 0.75)
        )

    @classmethod
    def load(cls, d: dict[str, Any]) -> Spread:
        """A spread from any readable schema: quartiles from the runs where missing."""
        spread = cls(**d)
        if spread.q1 is None and spread.runs:
            runs = sorted(spread.runs)
            spread.q1, spread.q3 = _quantile(runs, 0.25), _quantile(runs, 0.75)
        return spread

    @property
    def iqr(self) -> float | None:
        return None if self.q1 is None or self.q3 is None else self.q3 - self.q1

    @property
    def noisy(self) -> bool:
        iqr = self.iqr
        return iqr is not None and self.median > 0 and iqr > NOISY_IQR * self.median


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
    reference_label: str | None = None  # the artifact the quality figures compare with
    quality_note: str | None = None  # why there are no quality figures, where there are none

    def flat(self) -> dict[str, Any]:
        """One level of keys, for CSV and tables."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Spread):
                out[f.name] = v.median
                out[f"{f.name}_q1"] = v.q1
                out[f"{f.name}_q3"] = v.q3
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
    warnings: list[str] = field(default_factory=list)  # a disturbed measurement, ...

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
        cols = ["artifact", "backend", "size MiB", "bpw", "decode tok/s (IQR)", "prefill tok/s"]
        cols += ["TTFT ms", "peak RSS MiB", "VRAM MiB (model / planned)", "mean KL", "p99 KL"]
        cols += ["top-1", "PPL"]
        cols += ["roofline", "launch"]
        lines = []
        if not self.complete:
            lines += ["**Partial report: the run was interrupted; rows hold what finished.**", ""]
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in self.rows:
            cells = [
                r.label,
                f"{r.backend} ({r.device}{', ' + r.provider if r.provider else ''})",
                f"{r.file_bytes / 2**20:.1f}",
                _f(r.bits_per_weight, 2),
                spread_cell(r.decode_tps),
                f"{r.prefill_tps.median:.0f}",
                f"{r.ttft_s.median * 1000:.0f}",
                f"{r.peak_rss_bytes / 2**20:.0f}",
                vram_cell(r),
                *quality_cells(r),
                _f(r.ppl, 2),
                _pct(r.decode_efficiency),
                _launch(r.launch),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        fp = self.fingerprint
        lines.append("")
        notes = self.notes()
        lines += [f"- {note}" for note in notes] + ([""] if notes else [])
        lines.append(
            f"CPU: {fp.get('cpu')}; llama-cpp-python {fp.get('llama_cpp_python')}; "
            f"edgeglm {fp.get('edgeglm')}; report schema {self.schema_version}"
        )
        return "\n".join(lines) + "\n"

    def notes(self, warnings: bool = True) -> list[str]:
        """What the table needs said: each reference, rows without quality, warnings."""
        text = self.settings.get("text")
        out = [f"held-out text: {Path(text).name}"] if isinstance(text, str) else []
        for ref in (r for r in self.rows if r.reference):
            compared = [r.label for r in self.rows if r.reference_label == ref.label]
            if compared:
                out.append(f"quality of {', '.join(compared)} against {ref.label} (ref)")
        out += [f"{r.label}: {r.quality_note}" for r in self.rows if r.quality_note]
        return out + [f"warning: {w}" for w in self.warnings if warnings]

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
                    r[k] = Spread.load(r[k])
                rows.append(BenchRow(**{k: v for k, v in r.items() if k in known}))
            return cls(
                data["fingerprint"],
                data["settings"],
                rows,
                data.get("complete", True),
                version,
                list(data.get("warnings", [])),
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


def spread_cell(s: Spread, digits: int = 1) -> str:
    """The median, then the interquartile range (``87.6 (IQR 3.1)``; ``!`` when noisy)."""
    iqr = s.iqr
    if iqr is None or len(s.runs) < 2:  # one run has no spread to speak of
        return f"{s.median:.{digits}f}"
    return f"{s.median:.{digits}f} (IQR {iqr:.{digits}f}{'!' if s.noisy else ''})"


def quality_cells(r: BenchRow) -> list[str]:
    """mean KL, p99 KL, top-1: "ref" for the reference, "–" where not compared."""
    if r.reference:
        return ["ref", "", ""]
    return [_f(r.kl_mean, 5), _f(r.kl_p99, 4), _f(r.top1, 3)]


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
