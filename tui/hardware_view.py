"""Readable renderings of ``edgeglm doctor`` facts and of a plan.

The doctor view is TUI-specific: key-value rows that stay readable in a
40- to 80-column pane (``edgeglm doctor``'s wide tables wrap badly there).
A real ``Plan`` renders with the planner's own ``render_plan`` (every
decision with its reason, as ``edgeglm plan`` prints it); any other plan
object renders generically, with fields named like ``reason``/``why`` set
apart so each choice still shows its reason.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from .artifacts import human_bytes

_REASON_KEYS = ("reason", "reasons", "why", "because", "notes", "explanation")


def _table(title: str) -> Table:
    t = Table(title=title, title_justify="left", title_style="bold", show_header=False, box=None)
    t.add_column(style="dim", no_wrap=True)
    t.add_column(overflow="fold")
    return t


def _gbps(v: float | None, source: str | None) -> str:
    if v is None:
        return "not measured"
    return f"{v:.1f} GB/s" + (f" ({source})" if source else "")


def doctor_view(hw: Any) -> RenderableType:
    cpu, mem = hw.cpu, hw.memory
    parts: list[RenderableType] = []
    t = _table("Machine")
    t.add_row(
        "OS", str(hw.os) + ("  (simulated profile)" if getattr(hw, "is_simulated", False) else "")
    )
    t.add_row("CPU", f"{cpu.model} ({cpu.arch})")
    t.add_row("Cores", f"{cpu.physical_cores or '?'} physical, {cpu.logical_cores or '?'} logical")
    t.add_row("ISA", ", ".join(cpu.isa) or "none that llama.cpp accelerates")
    t.add_row(
        "Memory",
        f"{human_bytes(mem.total_bytes)} total, {human_bytes(mem.available_bytes)} available",
    )
    t.add_row("Bandwidth", _gbps(mem.bandwidth_gbps, mem.bandwidth_source))
    parts.append(t)

    g = _table("GPUs")
    gpus = getattr(hw, "gpus", None) or []
    if not gpus:
        g.add_row("none", "no GPU found (NVML, sysfs and Metal were checked): CPU inference")
    for gpu in gpus:
        mem_text = (
            "shares system RAM" if gpu.unified_memory else human_bytes(gpu.memory_total_bytes)
        )
        detail = [f"{gpu.vendor}", mem_text, _gbps(gpu.bandwidth_gbps, gpu.bandwidth_source)]
        if gpu.compute_capability:
            detail.append(f"compute {gpu.compute_capability}")
        g.add_row(gpu.name, " · ".join(detail))
    parts.append(g)

    parts.append(_llama_view(getattr(hw, "llama_cpp", None)))
    parts.append(_ort_view(getattr(hw, "onnxruntime", None)))
    return Group(*(p for part in parts for p in (part, Text(""))))


def _llama_view(info: Any) -> RenderableType:
    t = _table("llama.cpp")
    if info is None:
        t.add_row("status", "not probed")
        return t
    if info.error:
        t.add_row("status", Text(f"unusable: {info.error}", style="red"))
    t.add_row("version", info.version or "unknown")
    offload = {True: "yes", False: "no: this build runs on the CPU only", None: "unknown"}
    t.add_row("GPU offload", offload[info.gpu_offload])
    t.add_row("backends", ", ".join(info.backends) or "–")
    for d in info.devices:
        mem = f" · {human_bytes(d.memory_total_bytes)}" if d.memory_total_bytes else ""
        t.add_row(f"device {d.name}", f"{d.description} ({d.type}){mem}")
    return t


def _ort_view(info: Any) -> RenderableType:
    t = _table("ONNX Runtime")
    if info is None:
        t.add_row("status", "not probed")
        return t
    t.add_row("version", info.version or "not installed")
    for p in info.available_providers:
        if p in info.working_providers:
            t.add_row(p, Text("works", style="green"))
        else:
            why = info.errors.get(p, "listed by the wheel but no session could start")
            t.add_row(p, Text(f"unusable: {why}", style="yellow"))
    return t


def plan_view(plan: Any) -> RenderableType:
    """The planner's own rendering (``edgeglm plan``) for its Plan; anything else as a tree."""
    try:
        from edgeglm.planner.explain import render_plan
        from edgeglm.planner.plan import Plan
    except ImportError:
        pass
    else:
        if isinstance(plan, Plan):
            return render_plan(plan)
    tree = Tree(Text("Plan", style="bold"))
    _add(tree, _plain(plan))
    return tree


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if hasattr(value, "to_dict"):
        return _plain(value.to_dict())
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _add(node: Tree, value: Any) -> None:
    if isinstance(value, dict):
        for key, v in value.items():
            if v is None or v == [] or v == {}:
                continue
            if key.lower() in _REASON_KEYS:
                for r in v if isinstance(v, list) else [v]:
                    node.add(Text(f"why: {r}", style="italic cyan"))
            elif isinstance(v, dict | list):
                _add(node.add(Text(key, style="bold")), v)
            else:
                node.add(Text.assemble((f"{key}: ", "dim"), str(v)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            if isinstance(v, dict | list):
                _add(node.add(Text(f"#{i + 1}", style="bold")), v)
            else:
                node.add(str(v))
    else:
        node.add(str(value))
