"""CPU and memory, read from the OS (/proc/cpuinfo, sysctl, psutil) rather than guessed."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import psutil

from edgeglm.hardware.isa import ISA_FLAGS
from edgeglm.hardware.profile import CPUInfo, MemoryInfo


def _cpuinfo_fields() -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        if not line.strip():
            if out:
                break  # the first processor's block is enough
            continue
        key, _, value = line.partition(":")
        out.setdefault(key.strip(), value.strip())
    return out


def sysctl(name: str) -> str | None:
    """One macOS/BSD sysctl value, or None where there is no sysctl or no such key."""
    try:
        r = subprocess.run(
            ["sysctl", "-n", name], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    value = r.stdout.strip()
    return value if r.returncode == 0 and value else None


def _cpu_model(fields: dict[str, str]) -> str:
    for key in ("model name", "Model", "Hardware", "cpu model"):
        if fields.get(key):
            return fields[key]
    if platform.system() == "Darwin":
        brand = sysctl("machdep.cpu.brand_string")
        if brand:
            return brand
    return platform.processor() or platform.machine()


def probe_cpu() -> CPUInfo:
    fields = _cpuinfo_fields()
    raw = (fields.get("flags") or fields.get("Features") or "").split()
    flags = sorted(f for f in set(raw) if f in ISA_FLAGS)
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        flags = ["asimd", "asimddp", "bf16", "i8mm"]  # every Apple M-series core has these
    return CPUInfo(
        model=_cpu_model(fields),
        arch=platform.machine(),
        physical_cores=psutil.cpu_count(logical=False),
        logical_cores=psutil.cpu_count(logical=True),
        flags=flags,
    )


def probe_memory() -> MemoryInfo:
    vm = psutil.virtual_memory()
    return MemoryInfo(total_bytes=int(vm.total), available_bytes=int(vm.available))


def busy_cores(window_s: float = 0.25) -> float | None:
    """CPU time other processes use right now, in cores (we sleep while sampling)."""
    try:
        pct = float(psutil.cpu_percent(interval=window_s))
    except (OSError, RuntimeError):
        return None
    return round(pct / 100 * (psutil.cpu_count(logical=True) or 1), 2)


def usable_threads() -> int:
    """Cores this process may run on (respects taskset/cgroup affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
