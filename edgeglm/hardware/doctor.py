"""A HardwareProfile for people: what ``edgeglm doctor`` prints and the TUI's hardware pane shows.

Key-value rows per concern, so the same view stays readable in a 40-column
pane and a full terminal. What the probe could not measure says so; it is
never filled in with a guess.
"""

from __future__ import annotations

from collections.abc import Mapping

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from edgeglm.hardware.engine import rebuild_command
from edgeglm.hardware.profile import GPUInfo, HardwareProfile, LlamaCppInfo, OnnxRuntimeInfo
from edgeglm.rpc.endpoints import WorkerInfo
from edgeglm.units import human_bytes


def _table(title: str) -> Table:
    t = Table(title=title, title_justify="left", title_style="bold", show_header=False, box=None)
    t.add_column(style="dim", no_wrap=True)
    t.add_column(overflow="fold")
    return t


def _not_probed(t: Table) -> Table:
    t.add_row("status", "not probed")
    return t


def _gbps(v: float | None, source: str | None) -> str:
    if v is None:
        return "not measured"
    return f"{v:.1f} GB/s" + (f" ({source})" if source else "")


def render_doctor(
    hw: HardwareProfile,
    *,
    engine_here: bool | None = None,
    engine_build: Mapping[str, str] | None = None,
) -> RenderableType:
    """``engine_here``: hw.llama_cpp describes the llama.cpp installed here (default:
    when the profile was probed, not read from a file). ``engine_build``: how
    ``make engine`` built it (its cache key's parts; empty: not built by it;
    None: not shown)."""
    here = not hw.is_simulated if engine_here is None else engine_here
    parts = [_machine_view(hw), _gpus_view(hw.gpus), _llama_view(hw, here, engine_build)]
    parts.append(_ort_view(hw.onnxruntime))
    return Group(*(p for part in parts for p in (part, Text(""))))


def _machine_view(hw: HardwareProfile) -> RenderableType:
    cpu, mem = hw.cpu, hw.memory
    t = _table("Machine")
    os_text = str(hw.os)
    if hw.is_simulated:
        os_text += f"  (profile {hw.name + ' ' if hw.name else ''}from {hw.source})"
    t.add_row("OS", os_text)
    t.add_row("CPU", f"{cpu.model} ({cpu.arch})")
    t.add_row("Cores", f"{cpu.physical_cores or '?'} physical, {cpu.logical_cores or '?'} logical")
    if cpu.busy_cores is not None:
        t.add_row("Busy", f"{cpu.busy_cores:g} cores used by other programs")
    t.add_row("ISA", ", ".join(cpu.isa) or "none that llama.cpp accelerates")
    t.add_row(
        "Memory",
        f"{human_bytes(mem.total_bytes)} total, {human_bytes(mem.available_bytes)} available",
    )
    t.add_row("Bandwidth", _gbps(mem.bandwidth_gbps, mem.bandwidth_source))
    return t


def _gpus_view(gpus: list[GPUInfo]) -> RenderableType:
    g = _table("GPUs")
    if not gpus:
        g.add_row("none", "no GPU found (NVML, sysfs and Metal were checked): CPU inference")
    for gpu in gpus:
        mem_text = (
            "shares system RAM" if gpu.unified_memory else human_bytes(gpu.memory_total_bytes)
        )
        detail = [f"{gpu.vendor}", mem_text, _gbps(gpu.bandwidth_gbps, gpu.bandwidth_source)]
        if gpu.compute_capability:
            detail.append(f"compute {gpu.compute_capability}")
        if gpu.driver:
            detail.append(f"driver {gpu.driver}")
        g.add_row(gpu.name, " · ".join(detail))
    return g


# Per GPU vendor: the ggml backends (registry names) that can drive it, and
# the EDGEGLM_LLAMA_BACKEND value that builds the usual one.
_GPU_BACKENDS: dict[str, tuple[tuple[str, ...], str]] = {
    "nvidia": (("CUDA", "Vulkan"), "cuda"),
    "amd": (("ROCm", "HIP", "Vulkan"), "hip"),
    "apple": (("Metal", "MTL"), "metal"),
    "intel": (("Vulkan", "SYCL"), "vulkan"),
    "other": (("Vulkan",), "vulkan"),
}
_BACKEND_NAME = {"cuda": "CUDA", "hip": "ROCm/HIP", "metal": "Metal", "vulkan": "Vulkan"}


def unusable_gpus(gpus: list[GPUInfo], info: LlamaCppInfo) -> dict[str, list[GPUInfo]]:
    """The GPUs this llama.cpp build cannot use, by the backend that would use them."""
    if not info.backends and info.gpu_offload is not False:
        return {}  # nothing known about the build: no advice
    have = {b.lower() for b in info.backends}
    out: dict[str, list[GPUInfo]] = {}
    for gpu in gpus:
        usable, backend = _GPU_BACKENDS[gpu.vendor]
        if info.gpu_offload is False or not have & {b.lower() for b in usable}:
            out.setdefault(backend, []).append(gpu)
    return out


def _build_text(build: Mapping[str, str]) -> str:
    if not build:
        return f"not by `{rebuild_command()}` (a wheel pip built or downloaded)"
    return f"by `{rebuild_command()}`: {build.get('backend')}, CMAKE_ARGS {build.get('cmake_args')}"


def _llama_view(hw: HardwareProfile, here: bool, build: Mapping[str, str] | None) -> RenderableType:
    t = _table("llama.cpp")
    info = hw.llama_cpp
    if info is None:
        return _not_probed(t)
    # Say whose llama.cpp this is: a profile read from a file carries the
    # engine of the machine it describes, not the one installed here.
    profile = f"profile {hw.name}" if hw.name else f"the profile ({hw.source})"
    t.add_row("engine", "installed here" if here else f"as {profile} records it, not the one here")
    if build is not None:
        t.add_row("built", _build_text(build))
    if info.error:
        t.add_row("status", Text(f"unusable: {info.error}", style="red"))
    t.add_row("version", info.version or "unknown")
    offload = {True: "yes", False: "no: this build runs on the CPU only", None: "unknown"}
    t.add_row("GPU offload", offload[info.gpu_offload])
    t.add_row("backends", ", ".join(info.backends) or "–")
    if info.backends:
        rpc = "RPC" in info.backends
        t.add_row("RPC", "yes (GGML_RPC)" if rpc else "no: built without GGML_RPC")
    for d in info.devices:
        mem = f" · {human_bytes(d.memory_total_bytes)}" if d.memory_total_bytes else ""
        t.add_row(f"device {d.name}", f"{d.description} ({d.type}){mem}")
    for backend, gpus in unusable_gpus(hw.gpus, info).items():
        names = ", ".join(dict.fromkeys(g.name for g in gpus))
        whose = "this llama.cpp" if here else "the llama.cpp in this profile"
        where = "rebuild it" if here else "on that machine, rebuild it"
        them = "them" if len(gpus) > 1 else "it"
        advice = (
            f"{names}: {whose} cannot use {them} (no {_BACKEND_NAME[backend]} backend). "
            f"To use it, {where}: {rebuild_command(backend)}"
        )
        t.add_row("GPU unused", Text(advice, style="yellow"))
    return t


def _ort_view(info: OnnxRuntimeInfo | None) -> RenderableType:
    t = _table("ONNX Runtime")
    if info is None:
        return _not_probed(t)
    t.add_row("version", info.version or "not installed")
    for p in info.available_providers:
        if p in info.working_providers:
            t.add_row(p, Text("works", style="green"))
        else:
            why = info.errors.get(p, "listed by the wheel but no session could start")
            t.add_row(p, Text(f"unusable: {why}", style="yellow"))
    return t


def render_workers(workers: list[WorkerInfo]) -> RenderableType:
    """``doctor --rpc``: each worker's devices and memory, and the measured link to it."""
    views: list[RenderableType] = []
    for w in workers:
        t = _table(f"Worker {w.endpoint}")
        for d in w.devices:
            t.add_row(d.name, f"{human_bytes(d.free)} free of {human_bytes(d.total)}")
        t.add_row(
            "round trip", f"{w.rtt_s * 1e3:.2f} ms" if w.rtt_s is not None else "not measured"
        )
        bw = w.bandwidth
        t.add_row("bandwidth", f"{bw * 8 / 1e9:.2f} Gbit/s to it" if bw else "not measured")
        views.append(t)
    return Group(*views)


def workers_dict(workers: list[WorkerInfo]) -> list[dict[str, object]]:
    """``doctor --rpc --json``: the same, as data."""
    return [
        {
            "endpoint": w.endpoint,
            "devices": [vars(d) for d in w.devices],
            "rtt_s": w.rtt_s,
            "bandwidth_bytes_per_s": w.bandwidth,
        }
        for w in workers
    ]
