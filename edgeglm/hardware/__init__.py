"""What machine are we on: CPU, instruction sets, memory, GPUs, and what the runtimes can use.

The probes read the OS and the installed runtimes directly (/proc/cpuinfo,
sysctl, NVML, sysfs, libggml, ONNX Runtime) rather than guessing. The planner,
bench and TUI build on this package; it depends on none of them.

Modules: ``profile`` (the dataclasses, which are also the profile file format),
``cpu`` (CPU and memory), ``isa``, ``gpus``, ``runtimes`` (llama.cpp devices,
ONNX Runtime providers), ``bandwidth`` (measured, cached), ``detect`` (the
whole machine) and ``doctor`` (the rendering ``edgeglm doctor`` and the TUI show).
"""

from __future__ import annotations

from edgeglm.hardware.cpu import busy_cores, probe_cpu, probe_memory, sysctl, usable_threads
from edgeglm.hardware.detect import probe
from edgeglm.hardware.isa import isa_families
from edgeglm.hardware.profile import (
    SCHEMA_VERSION,
    CPUInfo,
    DeviceType,
    GPUInfo,
    HardwareProfile,
    LlamaCppDevice,
    LlamaCppInfo,
    MemoryInfo,
    OnnxRuntimeInfo,
    load_profile,
)

__all__ = [
    "SCHEMA_VERSION",
    "CPUInfo",
    "DeviceType",
    "GPUInfo",
    "HardwareProfile",
    "LlamaCppDevice",
    "LlamaCppInfo",
    "MemoryInfo",
    "OnnxRuntimeInfo",
    "busy_cores",
    "isa_families",
    "load_profile",
    "probe",
    "probe_cpu",
    "probe_memory",
    "sysctl",
    "usable_threads",
]
