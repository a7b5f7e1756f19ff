"""Render a HardwareProfile for ``edgeglm doctor``: one table per concern.

Fields the probe could not measure print as "unknown", never as a guess.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from edgeglm.hardware.profile import HardwareProfile

GiB = 1 << 30
UNKNOWN = "unknown"


def _v(x: object) -> str:
    return UNKNOWN if x is None or x == "" else str(x)


def _gib(n: int | None) -> str:
    return UNKNOWN if n is None else f"{n / GiB:.1f} GiB"


def _gbps(x: float | None, source: str | None) -> str:
    return UNKNOWN if x is None else f"{x:.1f} GB/s ({source or 'source unknown'})"


def _kv(title: str, rows: list[tuple[str, str]]) -> Table:
    t = Table(title=title, title_justify="left", show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value", overflow="fold")
    for k, v in rows:
        t.add_row(k, v)
    return t


def render_doctor(hw: HardwareProfile) -> RenderableType:
    c, m = hw.cpu, hw.memory
    parts: list[RenderableType] = []
    if hw.is_simulated:
        parts.append(Text(f"profile {hw.name or ''} from {hw.source}", style="bold yellow"))
    parts.append(
        _kv(
            "CPU",
            [
                ("model", _v(c.model)),
                ("architecture", _v(c.arch)),
                ("cores", f"{_v(c.physical_cores)} physical, {_v(c.logical_cores)} logical"),
                ("instruction sets", " ".join(c.isa) or "none detected"),
                (
                    "busy with other programs",
                    UNKNOWN if c.busy_cores is None else f"{c.busy_cores:g} cores",
                ),
                ("os", _v(hw.os)),
            ],
        )
    )
    parts.append(
        _kv(
            "memory",
            [
                ("total", _gib(m.total_bytes)),
                ("available", _gib(m.available_bytes)),
                ("bandwidth", _gbps(m.bandwidth_gbps, m.bandwidth_source)),
            ],
        )
    )
    gpus = Table(title="GPUs", title_justify="left")
    for col in ("#", "vendor", "name", "memory", "free", "compute", "driver", "bandwidth"):
        gpus.add_column(col)
    for g in hw.gpus:
        mem = _gib(g.memory_total_bytes) + (" unified" if g.unified_memory else "")
        gpus.add_row(
            _v(g.index),
            g.vendor,
            g.name,
            mem,
            _gib(g.memory_free_bytes),
            _v(g.compute_capability),
            _v(g.driver),
            _gbps(g.bandwidth_gbps, g.bandwidth_source),
        )
    parts.append(gpus if hw.gpus else Text("GPUs: none found", style="bold"))
    lc = hw.llama_cpp
    if lc is not None:
        dev = Table(
            title=f"llama.cpp {_v(lc.version)} devices "
            f"(GPU offload: {_v(lc.gpu_offload)}; backends: {' '.join(lc.backends) or UNKNOWN})",
            title_justify="left",
        )
        for col in ("name", "type", "description", "memory", "free"):
            dev.add_column(col)
        for d in lc.devices:
            dev.add_row(
                d.name, d.type, d.description, _gib(d.memory_total_bytes), _gib(d.memory_free_bytes)
            )
        parts.append(dev)
        if lc.error:
            parts.append(Text(f"llama.cpp probe: {lc.error}", style="yellow"))
    ort = hw.onnxruntime
    if ort is not None:
        prov = Table(
            title=f"ONNX Runtime {_v(ort.version)} execution providers", title_justify="left"
        )
        for col in ("provider", "initializes", "why not"):
            prov.add_column(col)
        for p in ort.available_providers:
            ok = p in ort.working_providers
            prov.add_row(p, "yes" if ok else "no", "" if ok else ort.errors.get(p, UNKNOWN))
        parts.append(prov)
    return Group(*parts)
