"""Probe the whole machine: CPU, memory and its bandwidth, GPUs, and what the runtimes can use."""

from __future__ import annotations

import platform

from edgeglm.hardware import gpus, runtimes
from edgeglm.hardware.bandwidth import memory_bandwidth
from edgeglm.hardware.cpu import busy_cores, probe_cpu, probe_memory
from edgeglm.hardware.profile import HardwareProfile


def probe(*, bandwidth: bool = True, accelerators: bool = True) -> HardwareProfile:
    """Probe this machine. ``bandwidth=False`` skips the ~1 s measurement when
    no cached figure exists; ``accelerators=False`` skips GPUs and runtimes."""
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
