"""What machine are we on: CPU, instruction sets, memory, GPUs, runtimes.

This is the probe the planner builds on. It reads the OS and the installed
runtimes directly (/proc/cpuinfo, sysctl, NVML, sysfs, libggml, ONNX Runtime)
rather than guessing, and every field it cannot measure stays None instead of
a made-up default.

The same dataclasses are the schema of a *hardware profile*: ``edgeglm doctor
--json`` writes one, ``--hardware PROFILE.json`` reads one, so a machine we do
not have can be described in a file and planned for. Bump ``SCHEMA_VERSION``
when a field changes meaning or disappears; adding an optional field does not.
"""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import psutil

SCHEMA_VERSION = 1

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
# Raw flag -> the family name people (and llama.cpp's build log) use. Order is
# display order; a family shows once however many of its flags are present.
_ISA_FAMILIES = (
    ("avx", "AVX"),
    ("avx2", "AVX2"),
    ("fma", "FMA"),
    ("f16c", "F16C"),
    ("avx_vnni", "AVX-VNNI"),
    ("avx512f", "AVX512"),
    ("avx512_vnni", "AVX512-VNNI"),
    ("avx512_bf16", "AVX512-BF16"),
    ("amx_tile", "AMX"),
    ("asimd", "NEON"),
    ("asimddp", "DOTPROD"),
    ("i8mm", "I8MM"),
    ("sve", "SVE"),
    ("sve2", "SVE2"),
)

DeviceType = Literal["cpu", "gpu", "igpu", "accel", "meta", "unknown"]


def isa_families(flags: list[str]) -> list[str]:
    have = set(flags)
    return [name for flag, name in _ISA_FAMILIES if flag in have]


@dataclass
class CPUInfo:
    model: str
    arch: str
    physical_cores: int | None
    logical_cores: int | None
    flags: list[str] = field(default_factory=list)
    # Friendly names derived from flags (AVX2, AVX512, AMX, NEON, SVE ...).
    isa: list[str] = field(default_factory=list)
    # Cores other programs kept busy while we probed (None: not measured, as in
    # a profile). Threads that wait for a busy core stall all the others.
    busy_cores: float | None = None

    def __post_init__(self) -> None:
        if not self.isa:
            self.isa = isa_families(self.flags)


@dataclass
class MemoryInfo:
    total_bytes: int
    available_bytes: int
    # Measured copy bandwidth (bytes read + written per second / 1e9), or a
    # profile's stated figure; None when neither exists.
    bandwidth_gbps: float | None = None
    bandwidth_source: str | None = None  # "measured", "cached", "profile", ...


@dataclass
class GPUInfo:
    vendor: Literal["nvidia", "amd", "apple", "intel", "other"]
    name: str
    memory_total_bytes: int | None = None
    memory_free_bytes: int | None = None
    # Apple Silicon and integrated GPUs share system RAM instead of owning VRAM.
    unified_memory: bool = False
    compute_capability: str | None = None  # NVIDIA "8.9"
    driver: str | None = None
    bandwidth_gbps: float | None = None
    bandwidth_source: str | None = None
    index: int | None = None


@dataclass
class LlamaCppDevice:
    name: str  # ggml's device name: "CPU", "CUDA0", "Metal", "Vulkan0"
    description: str
    type: DeviceType
    memory_total_bytes: int | None = None
    memory_free_bytes: int | None = None


@dataclass
class LlamaCppInfo:
    """What the installed llama.cpp was built with (not what the machine has)."""

    version: str | None = None
    gpu_offload: bool | None = None
    backends: list[str] = field(default_factory=list)
    devices: list[LlamaCppDevice] = field(default_factory=list)
    error: str | None = None


@dataclass
class OnnxRuntimeInfo:
    version: str | None = None
    # What the wheel lists (onnxruntime-gpu lists CUDA even without CUDA libraries) ...
    available_providers: list[str] = field(default_factory=list)
    # ... and what really initialized a session here.
    working_providers: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


@dataclass
class HardwareProfile:
    cpu: CPUInfo
    memory: MemoryInfo
    os: str
    gpus: list[GPUInfo] = field(default_factory=list)
    llama_cpp: LlamaCppInfo | None = None
    onnxruntime: OnnxRuntimeInfo | None = None
    schema_version: int = SCHEMA_VERSION
    source: str = "probe"  # "probe", or the profile file it was read from
    name: str | None = None

    def __post_init__(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {self.schema_version} is not supported (this EdgeGLM reads "
                f"version {SCHEMA_VERSION})"
            )

    @property
    def is_simulated(self) -> bool:
        return self.source != "probe"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        # schema_version first: readers check it before anything else.
        order = ("schema_version", "name", "source", "os", "cpu", "memory", "gpus")
        return {**{k: d.pop(k) for k in order}, **d}


# -- CPU and memory -------------------------------------------------------


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


# -- the whole machine ----------------------------------------------------


def probe(*, bandwidth: bool = True, accelerators: bool = True) -> HardwareProfile:
    """Probe this machine. ``bandwidth=False`` skips the ~1 s measurement when
    no cached figure exists; ``accelerators=False`` skips GPUs and runtimes."""
    # Imported here: the detailed probes pull in NVML, ctypes and ONNX Runtime,
    # which nothing that only needs CPU facts (the converter) should pay for.
    from edgeglm.planner import gpus, runtimes
    from edgeglm.planner.bandwidth import memory_bandwidth

    cpu = probe_cpu()
    cpu.busy_cores = busy_cores()  # before our own bandwidth test loads every core
    memory = probe_memory()
    if bandwidth:
        memory.bandwidth_gbps, memory.bandwidth_source = memory_bandwidth(cpu, memory)
    hw = HardwareProfile(cpu=cpu, memory=memory, os=f"{platform.system()} {platform.release()}")
    if accelerators:
        hw.gpus = gpus.probe_gpus(memory)
        hw.llama_cpp = runtimes.probe_llama_cpp()
        hw.onnxruntime = runtimes.probe_onnxruntime()
    return hw


def load_profile(path: Path) -> HardwareProfile:
    """A hardware profile file (the shape ``edgeglm doctor --json`` prints)."""
    from edgeglm.errors import UsageError
    from edgeglm.planner.schema import load_json_file

    hw = load_json_file(path, HardwareProfile, error=UsageError)
    if hw.source == "probe":
        hw.source = str(path)  # a probe saved to a file is a profile once read back
    return hw
