"""GPU discovery without GPUs: fake sysfs trees and a fake NVML."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import pytest

from edgeglm.hardware import MemoryInfo, gpus

GiB = 1 << 30


def _card(root: Path, n: int, files: dict[str, str]) -> None:
    card = root / "class" / "drm" / f"card{n}"
    for rel, text in files.items():
        (card / rel).parent.mkdir(parents=True, exist_ok=True)
        (card / rel).write_text(text)
    (root / "class" / "drm" / f"card{n}-DP-1").mkdir()  # connectors are not cards


def test_amd_and_intel_from_sysfs(tmp_path: Path) -> None:
    _card(
        tmp_path,
        0,
        {
            "device/vendor": "0x1002\n",
            "device/device": "0x744c\n",
            "device/mem_info_vram_total": str(24 * GiB),
            "device/mem_info_vram_used": str(1 * GiB),
            "device/product_name": "Radeon RX 7900 XTX\n",
        },
    )
    _card(
        tmp_path,
        1,
        {
            "device/vendor": "0x8086\n",
            "device/device": "0x56a0\n",
            "device/tile0/vram0/physical_vram_size_bytes": str(16 * GiB),
        },
    )
    _card(tmp_path, 2, {"device/vendor": "0x8086\n", "device/device": "0x46a6\n"})
    amd, arc, igpu = gpus.probe_sysfs(tmp_path)
    assert (amd.vendor, amd.name, amd.memory_total_bytes, amd.memory_free_bytes) == (
        "amd",
        "Radeon RX 7900 XTX",
        24 * GiB,
        23 * GiB,
    )
    assert arc.vendor == "intel" and arc.memory_total_bytes == 16 * GiB and not arc.unified_memory
    assert igpu.unified_memory and igpu.memory_total_bytes is None  # unknown, not guessed


def test_no_sysfs_means_no_gpus(tmp_path: Path) -> None:
    assert gpus.probe_sysfs(tmp_path / "absent") == []


class _NVMLError(Exception):
    pass


class _FakeNVML:
    NVMLError = _NVMLError
    NVML_CLOCK_MEM = 2

    def __init__(self, *, driver: bool = True) -> None:
        self.driver = driver

    def nvmlInit(self) -> None:
        if not self.driver:
            raise _NVMLError("Driver Not Loaded")

    def nvmlShutdown(self) -> None: ...
    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.14"

    def nvmlDeviceGetCount(self) -> int:
        return 1

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> bytes:
        return b"NVIDIA GeForce RTX 4090"

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        class M:
            total, free = 24 * GiB, 23 * GiB

        return M()

    def nvmlDeviceGetCudaComputeCapability(self, h: int) -> tuple[int, int]:
        return (8, 9)

    def nvmlDeviceGetMemoryBusWidth(self, h: int) -> int:
        return 384

    def nvmlDeviceGetMaxClockInfo(self, h: int, clock: int) -> int:
        raise _NVMLError("Not Supported")


def test_nvml_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpus, "_nvml", lambda: _FakeNVML())
    (g,) = gpus.probe_nvidia()
    assert (g.name, g.compute_capability, g.driver) == (
        "NVIDIA GeForce RTX 4090",
        "8.9",
        "550.54.14",
    )
    assert g.memory_free_bytes == 23 * GiB
    assert g.bandwidth_gbps is None and g.bandwidth_source is None  # clock unknown: no figure


def test_absent_driver_is_no_gpu_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpus, "_nvml", lambda: _FakeNVML(driver=False))
    assert gpus.probe_nvidia() == []
    monkeypatch.setattr(gpus, "_nvml", lambda: None)
    assert gpus.probe_nvidia() == []


def test_apple_only_on_apple(monkeypatch: pytest.MonkeyPatch) -> None:
    mem = MemoryInfo(total_bytes=16 * GiB, available_bytes=10 * GiB)
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    monkeypatch.setattr(gpus, "sysctl", lambda name: {"hw.memsize": str(16 * GiB)}.get(name))
    (g,) = gpus.probe_apple(mem)
    assert g.unified_memory and g.memory_total_bytes == 16 * GiB and g.name == "Apple Silicon GPU"
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    assert gpus.probe_apple(mem) == []
