"""What machine are we on: CPU, instruction sets, memory.

This is the probe the planner builds on. It reads the OS directly
(/proc/cpuinfo, sysctl) rather than guessing, and every field it cannot
measure stays None instead of a made-up default.
"""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

# ISA features that matter to llama.cpp / ONNX Runtime kernels, as Linux names
# them in /proc/cpuinfo "flags" (x86) or "Features" (Arm).
_ISA_FLAGS = (
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimd",
    "asimddp",
    "sve",
    "sve2",
    "i8mm",
    "bf16",
)


@dataclass
class CPUInfo:
    model: str
    arch: str
    physical_cores: int | None
    logical_cores: int | None
    flags: list[str] = field(default_factory=list)


@dataclass
class MemoryInfo:
    total_bytes: int
    available_bytes: int


@dataclass
class HardwareProfile:
    cpu: CPUInfo
    memory: MemoryInfo
    os: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def _cpu_model(fields: dict[str, str]) -> str:
    for key in ("model name", "Model", "Hardware", "cpu model"):
        if fields.get(key):
            return fields[key]
    if platform.system() == "Darwin":
        try:
            r = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
            if r.stdout.strip():
                return r.stdout.strip()
        except OSError:
            pass
    return platform.processor() or platform.machine()


def probe_cpu() -> CPUInfo:
    fields = _cpuinfo_fields()
    raw = (fields.get("flags") or fields.get("Features") or "").split()
    flags = sorted(f for f in set(raw) if f in _ISA_FLAGS)
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


def usable_threads() -> int:
    """Cores this process may run on (respects taskset/cgroup affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def probe() -> HardwareProfile:
    return HardwareProfile(
        cpu=probe_cpu(),
        memory=probe_memory(),
        os=f"{platform.system()} {platform.release()}",
    )
