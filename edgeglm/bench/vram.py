"""GPU memory of a benchmark row: what NVML measured, and what the plan estimated.

Measured: the measurement child reads NVML twice: while the model is loaded
(after the timed runs), and after freeing it. Its
own memory is ``usedGpuMemory`` of the entries for its pid in
``nvmlDeviceGetComputeRunningProcesses``, summed over GPUs. The model's part
is "loaded" minus "freed": what stays after the model is gone (the CUDA
context, the kernels the libraries loaded) is the process's, not the
model's, and the planner leaves room for it in its per-GPU margin instead.

A process in its own PID namespace (most containers) is listed by NVML under
the host's pid, so it is not found. Then the process figure is not measured
(None), and the model's part falls back to the change in the GPUs' used
memory when the model was freed, which another program's allocations at that
moment would also change; the note says so. No NVML, no NVIDIA GPU, or an
NVML error: nothing measured, None, never a made-up number.

Planned: the planner's own layout (planner/placement.py ``lay_out``) for
the spec that ran: its GPU layers, tensor split, context, KV types and
batch, with the spec's tensor overrides as the planner's "experts in RAM".
"""

from __future__ import annotations

import contextlib
import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeglm.hardware.profile import HardwareProfile
    from edgeglm.planner.launch import LaunchSpec

MiB = 1 << 20
# The GPUs' used memory must drop by at least this when the model is freed
# for the fallback to say this process held it (smaller: noise, or nothing).
DEVICE_DELTA_MIN = 8 * MiB


@dataclass(frozen=True)
class NvmlReading:
    """One look at NVML from the measuring process."""

    process_bytes: int | None  # its pid's usedGpuMemory, summed; None: not listed anywhere
    device_used_bytes: int  # every GPU's used memory, summed (all processes)


def nvml_reading(pid: int) -> NvmlReading | None:
    """None where NVML cannot say: no nvidia-ml-py, no driver, no GPU, an NVML error."""
    try:
        nvml: Any = importlib.import_module("pynvml")  # nvidia-ml-py: untyped
    except ImportError:
        return None
    try:
        nvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound / DriverNotLoaded: no NVIDIA GPU here
        return None
    try:
        count = int(nvml.nvmlDeviceGetCount())
        if count == 0:
            return None
        listed, own, used = False, 0, 0
        for i in range(count):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            used += int(nvml.nvmlDeviceGetMemoryInfo(handle).used)
            for proc in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid != pid:
                    continue
                if proc.usedGpuMemory is None:  # NVML_VALUE_NOT_AVAILABLE (WDDM, MIG)
                    return None
                listed, own = True, own + int(proc.usedGpuMemory)
        return NvmlReading(own if listed else None, used)
    except Exception:  # NVMLError_NotSupported and friends: not measured
        return None
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()


@dataclass(frozen=True)
class VramMeasured:
    process_bytes: int | None  # the measuring process while the model was loaded
    model_bytes: int | None  # the model's part: loaded minus after freeing it
    note: str  # how it was measured, or why it was not


def vram_measured(loaded: NvmlReading | None, freed: NvmlReading | None) -> VramMeasured:
    """The row's VRAM from the two readings (see the module docstring)."""
    if loaded is None or freed is None:
        return VramMeasured(None, None, "not measured: no NVIDIA GPU or NVML here")
    if loaded.process_bytes is not None:
        after = freed.process_bytes or 0  # not listed once freed: it holds nothing now
        return VramMeasured(
            loaded.process_bytes,
            max(loaded.process_bytes - after, 0),
            "NVML, this process; the model's part is what freeing it released",
        )
    released = loaded.device_used_bytes - freed.device_used_bytes
    if released >= DEVICE_DELTA_MIN:
        return VramMeasured(
            None,
            released,
            "not measured for this process: NVML does not list its pid (a PID namespace?); "
            "the model's part is the drop in the GPUs' used memory when it was freed",
        )
    return VramMeasured(0, 0, "NVML lists no GPU memory for this process")


# -- the plan's estimate --------------------------------------------------------


def _cpu_expert_layers(spec: LaunchSpec, names: list[str]) -> set[int] | None:
    """The spec's tensor overrides as the planner's "routed experts of these
    blocks stay in RAM"; None where they say anything else (the planner has no
    estimate for that): another weight moved, experts sent to another device,
    or only some of a block's experts kept back."""
    from edgeglm.bench.roofline import on_cpu_device
    from edgeglm.planner.placement import EXPERT_PATTERN

    in_ram: dict[int, list[bool]] = {}
    for name in names:
        first = next((o for o in spec.tensor_overrides if re.search(o.pattern, name)), None)
        m = re.match(rf"blk\.(\d+)\.{EXPERT_PATTERN}$", name)
        if first is not None and (m is None or not on_cpu_device(first.device)):
            return None
        if m is not None:
            in_ram.setdefault(int(m.group(1)), []).append(first is not None)
    if any(any(v) and not all(v) for v in in_ram.values()):
        return None
    return {block for block, v in in_ram.items() if all(v)}


def planned_vram(gguf: Path, spec: LaunchSpec, hw: HardwareProfile) -> tuple[int | None, str]:
    """The planner's GPU memory (all GPUs) for ``spec`` on ``hw``, or None and why."""
    from edgeglm.planner.machine import budget
    from edgeglm.planner.placement import Placement, lay_out
    from edgeglm.planner.sources import open_model

    b = budget(hw)
    if b.unified:
        return None, "unified memory: the GPU's memory is RAM"
    if not b.gpus:
        if spec.n_gpu_layers == 0 and not spec.tensor_overrides:
            return 0, "nothing planned on a GPU"
        return None, "no GPU the planner can use here"
    facts = open_model(str(gguf)).facts()
    names = [t.name for t in facts.tensors]
    cpu_experts = _cpu_expert_layers(spec, names)
    if cpu_experts is None:
        return None, "the planner has no estimate for these tensor overrides"
    placement = Placement(
        "bench",
        spec.n_gpu_layers,
        cpu_expert_layers=tuple(sorted(cpu_experts)),
        tensor_split=spec.tensor_split,
    )
    layout = lay_out(facts, placement, spec.settings(), b)
    return sum(d.total for d in layout.devices[1:]), "planner: weights + KV cache + compute"
