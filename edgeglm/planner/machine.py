"""What a plan may spend: usable RAM, usable VRAM per GPU, and the machine's class.

A hardware profile says what the machine *has*; this says what a model may
*use* of it, after the margins in policy.py, and only counting GPUs the
installed llama.cpp can drive (a CUDA card is no use to a CPU-only build).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources

from edgeglm.errors import HardwareError
from edgeglm.hardware import GPUInfo, HardwareProfile, usable_threads
from edgeglm.planner import policy
from edgeglm.schema import build

GiB = 1 << 30


@dataclass(frozen=True)
class GPUBudget:
    name: str
    usable_bytes: int
    bandwidth_gbps: float | None
    unified: bool = False


@dataclass
class Budget:
    ram_usable: int
    cpu_bandwidth_gbps: float | None
    threads: int | None  # physical cores this plan may use
    busy_cores: float | None = None  # taken by other programs at probe time
    gpus: list[GPUBudget] = field(default_factory=list)
    unified: bool = False  # Apple Silicon: the GPU works in RAM
    # Why a GPU in the profile is not usable, when it is not.
    gpu_notes: list[str] = field(default_factory=list)
    hardware_class: str = "unknown"

    @property
    def vram_usable(self) -> int:
        return sum(g.usable_bytes for g in self.gpus)


def _ram_usable(hw: HardwareProfile) -> int:
    margin = max(
        policy.RAM_MARGIN_MIN_BYTES, int(hw.memory.total_bytes * policy.RAM_MARGIN_FRACTION)
    )
    return max(0, hw.memory.available_bytes - margin)


def _apple_working_set(total: int) -> int:
    frac = next(f for limit, f in policy.APPLE_WORKING_SET if total <= limit)
    return int(total * frac)


def _gpu_budget(gpu: GPUInfo, ram_usable: int) -> GPUBudget | None:
    if gpu.unified_memory:
        if gpu.vendor != "apple" or gpu.memory_total_bytes is None:
            return None  # integrated GPUs: llama.cpp's CPU path is as fast, and simpler
        usable = min(_apple_working_set(gpu.memory_total_bytes), ram_usable)
        return GPUBudget(gpu.name, usable, gpu.bandwidth_gbps, unified=True)
    have = gpu.memory_free_bytes if gpu.memory_free_bytes is not None else gpu.memory_total_bytes
    if have is None:
        return None
    return GPUBudget(gpu.name, max(0, have - policy.GPU_MARGIN_BYTES), gpu.bandwidth_gbps)


def budget(hw: HardwareProfile) -> Budget:
    ram = _ram_usable(hw)
    cores = hw.cpu.physical_cores or hw.cpu.logical_cores
    if cores is not None and not hw.is_simulated:
        cores = min(cores, usable_threads())  # taskset/cgroup limits on this machine
    b = Budget(
        ram_usable=ram,
        cpu_bandwidth_gbps=hw.memory.bandwidth_gbps,
        threads=cores,
        busy_cores=hw.cpu.busy_cores,
    )
    offload = hw.llama_cpp.gpu_offload if hw.llama_cpp is not None else None
    for gpu in hw.gpus:
        g = _gpu_budget(gpu, ram)
        if g is None:
            b.gpu_notes.append(f"{gpu.name}: memory unknown or integrated; not planned on")
        elif not offload:
            b.gpu_notes.append(
                f"{gpu.name}: the installed llama.cpp has no GPU device for it "
                "(built for the CPU); edgeglm doctor gives the command that rebuilds it"
            )
        else:
            b.gpus.append(g)
    b.unified = any(g.unified for g in b.gpus)
    if b.unified:
        b.gpus = [g for g in b.gpus if g.unified][:1]
    b.hardware_class = classify(hw, b)
    return b


# -- hardware classes (data: edgeglm/planner/hardware_classes.json) ----------


@dataclass(frozen=True)
class HardwareClass:
    name: str
    description: str
    gpu: bool | None = None  # needs a usable GPU (True) or none (False)
    unified: bool | None = None
    min_gpus: int = 0
    min_vram_gb: float = 0.0
    max_vram_gb: float | None = None
    min_ram_gb: float = 0.0
    max_ram_gb: float | None = None

    def matches(self, b: Budget, ram_total_gb: float) -> bool:
        vram = max((g.usable_bytes for g in b.gpus), default=0) / GiB
        total_vram = b.vram_usable / GiB
        checks = (
            self.gpu is None or self.gpu == bool(b.gpus),
            self.unified is None or self.unified == b.unified,
            len(b.gpus) >= self.min_gpus,
            (total_vram if self.min_gpus > 1 else vram) >= self.min_vram_gb,
            self.max_vram_gb is None or vram <= self.max_vram_gb,
            ram_total_gb >= self.min_ram_gb,
            self.max_ram_gb is None or ram_total_gb <= self.max_ram_gb,
        )
        return all(checks)


@dataclass(frozen=True)
class HardwareClasses:
    classes: list[HardwareClass]


def hardware_classes() -> list[HardwareClass]:
    text = resources.files("edgeglm.planner").joinpath("hardware_classes.json").read_text()
    return build(
        HardwareClasses, json.loads(text), where="hardware_classes.json", error=HardwareError
    ).classes


def classify(hw: HardwareProfile, b: Budget) -> str:
    """First class in hardware_classes.json whose bounds the machine meets."""
    ram_gb = hw.memory.total_bytes / GiB
    for c in hardware_classes():
        if c.matches(b, ram_gb):
            return c.name
    return "unknown"
