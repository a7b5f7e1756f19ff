"""GPU discovery: NVIDIA through NVML, AMD and Intel through sysfs, Apple through sysctl.

Each vendor probe returns what it can read and nothing it cannot: a missing
driver, library or sysfs file means "no such GPU here", never an error, and a
value the OS does not expose stays None. No CUDA toolkit, ROCm or Metal SDK is
needed: NVML ships with the NVIDIA driver, sysfs with the kernel.
"""

from __future__ import annotations

import importlib
import json
import platform
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeglm.hardware.cpu import sysctl
from edgeglm.hardware.profile import GPUInfo, MemoryInfo

# PCI vendor ids in /sys/class/drm/card*/device/vendor.
_AMD = "0x1002"
_INTEL = "0x8086"
# Intel discrete GPUs report local memory ("lmem") here, by kernel driver; an
# Intel device with none of these files is an integrated GPU sharing RAM.
_INTEL_LMEM_TOTAL = (
    "device/tile0/vram0/physical_vram_size_bytes",  # xe driver
    "lmem_total_bytes",  # i915
)
_CARD = re.compile(r"^card\d+$")


def probe_gpus(memory: MemoryInfo, sysfs: Path = Path("/sys")) -> list[GPUInfo]:
    found: list[GPUInfo] = []
    probes: tuple[Callable[[], list[GPUInfo]], ...] = (
        probe_nvidia,
        lambda: probe_sysfs(sysfs),
        lambda: probe_apple(memory),
    )
    for p in probes:
        found.extend(p())
    for i, gpu in enumerate(found):
        if gpu.index is None:
            gpu.index = i
    return found


# -- NVIDIA ---------------------------------------------------------------


def _nvml() -> Any | None:
    try:
        # pynvml (nvidia-ml-py) has no type information; treat it as Any.
        return importlib.import_module("pynvml")
    except ImportError:
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def probe_nvidia() -> list[GPUInfo]:
    nvml = _nvml()
    if nvml is None:
        return []
    try:
        nvml.nvmlInit()
    except nvml.NVMLError:
        return []  # no NVIDIA driver loaded: no NVIDIA GPU to use
    try:
        driver = _try(lambda: _text(nvml.nvmlSystemGetDriverVersion()))
        gpus = []
        for i in range(nvml.nvmlDeviceGetCount()):
            gpus.append(_nvidia_gpu(nvml, i, driver))
        return gpus
    except nvml.NVMLError:
        return []
    finally:
        _try(nvml.nvmlShutdown)


def _nvidia_gpu(nvml: Any, i: int, driver: str | None) -> GPUInfo:
    h = nvml.nvmlDeviceGetHandleByIndex(i)
    mem = _try(lambda: nvml.nvmlDeviceGetMemoryInfo(h))
    cc = _try(lambda: nvml.nvmlDeviceGetCudaComputeCapability(h))
    bandwidth = _nvml_bandwidth(nvml, h)
    return GPUInfo(
        vendor="nvidia",
        name=_try(lambda: _text(nvml.nvmlDeviceGetName(h))) or "NVIDIA GPU",
        memory_total_bytes=int(mem.total) if mem is not None else None,
        memory_free_bytes=int(mem.free) if mem is not None else None,
        compute_capability=f"{cc[0]}.{cc[1]}" if cc is not None else None,
        driver=driver,
        bandwidth_gbps=bandwidth,
        bandwidth_source=None
        if bandwidth is None
        else "nvml (bus width x max memory clock, theoretical)",
        index=i,
    )


def _nvml_bandwidth(nvml: Any, handle: Any) -> float | None:
    """Peak from what the board reports: bus bits / 8 x memory clock x 2 (double data rate)."""
    bus = _try(lambda: nvml.nvmlDeviceGetMemoryBusWidth(handle))
    mhz = _try(lambda: nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_MEM))
    if not bus or not mhz:
        return None
    return round(float(bus) / 8 * float(mhz) * 1e6 * 2 / 1e9, 1)


def _try(fn: Callable[[], Any]) -> Any:
    """NVML raises NVMLError_NotSupported for fields some boards lack: unknown, not fatal."""
    try:
        return fn()
    except Exception:
        return None


# -- AMD and Intel through sysfs -------------------------------------------


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    try:
        return int(text, 0) if text else None
    except ValueError:
        return None


def probe_sysfs(sysfs: Path = Path("/sys")) -> list[GPUInfo]:
    drm = sysfs / "class" / "drm"
    try:
        cards = sorted(p for p in drm.iterdir() if _CARD.match(p.name))
    except OSError:
        return []
    gpus = []
    for card in cards:
        vendor = _read(card / "device" / "vendor")
        if vendor == _AMD:
            gpus.append(_amd(card))
        elif vendor == _INTEL:
            gpus.append(_intel(card))
    return gpus


def _amd(card: Path) -> GPUInfo:
    dev = card / "device"
    total = _read_int(dev / "mem_info_vram_total")
    used = _read_int(dev / "mem_info_vram_used")
    name = (
        _read(dev / "product_name")
        or _rocm_smi_name(card.name)
        or (f"AMD GPU (PCI device {_read(dev / 'device') or 'unknown'})")
    )
    return GPUInfo(
        vendor="amd",
        name=name,
        memory_total_bytes=total,
        memory_free_bytes=total - used if total is not None and used is not None else None,
        driver=_read(dev / "driver" / "module" / "version"),
    )


def _rocm_smi_name(card: str) -> str | None:
    """rocm-smi knows marketing names sysfs lacks; used only if it is installed."""
    exe = shutil.which("rocm-smi")
    if exe is None:
        return None
    try:
        r = subprocess.run(
            [exe, "--showproductname", "--json"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        info = json.loads(r.stdout).get(card, {})
    except (OSError, subprocess.SubprocessError, json.JSONDecodeError, AttributeError):
        return None
    name = info.get("Card Series") or info.get("Card series")
    return str(name) if name else None


def _intel(card: Path) -> GPUInfo:
    total = next((v for rel in _INTEL_LMEM_TOTAL if (v := _read_int(card / rel)) is not None), None)
    dev_id = _read(card / "device" / "device") or "unknown"
    return GPUInfo(
        vendor="intel",
        name=f"Intel GPU (PCI device {dev_id})",
        memory_total_bytes=total,
        unified_memory=total is None,
    )


# -- Apple Silicon -----------------------------------------------------------


def probe_apple(memory: MemoryInfo) -> list[GPUInfo]:
    """M-series GPUs share the machine's RAM: their memory *is* system memory."""
    if platform.system() != "Darwin" or platform.machine() != "arm64":
        return []
    total = sysctl("hw.memsize")
    return [
        GPUInfo(
            vendor="apple",
            name=sysctl("machdep.cpu.brand_string") or "Apple Silicon GPU",
            memory_total_bytes=int(total) if total and total.isdigit() else memory.total_bytes,
            memory_free_bytes=memory.available_bytes,
            unified_memory=True,
        )
    ]
