"""A hardware profile: what a machine has, as dataclasses that are also the file format.

Every field a probe cannot measure stays None instead of a made-up default.
The dataclasses are the schema of a *hardware profile*: ``edgeglm doctor
--json`` writes one, ``--hardware PROFILE.json`` reads one, so a machine we do
not have can be described in a file and planned for. Bump ``SCHEMA_VERSION``
when a field changes meaning or disappears; adding an optional field does not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from edgeglm.errors import UsageError
from edgeglm.hardware.isa import isa_families
from edgeglm.schema import load_json_file

SCHEMA_VERSION = 1

DeviceType = Literal["cpu", "gpu", "igpu", "accel", "meta", "unknown"]


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


def load_profile(path: Path) -> HardwareProfile:
    """A hardware profile file (the shape ``edgeglm doctor --json`` prints)."""
    hw = load_json_file(path, HardwareProfile, error=UsageError)
    if hw.source == "probe":
        hw.source = str(path)  # a probe saved to a file is a profile once read back
    return hw
