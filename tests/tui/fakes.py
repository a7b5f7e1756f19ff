"""Fake hardware, plan, benchmark and converter for app tests (fixed numbers: stable snapshots)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeglm.hardware import (
    CPUInfo,
    GPUInfo,
    HardwareProfile,
    LlamaCppDevice,
    LlamaCppInfo,
    MemoryInfo,
    OnnxRuntimeInfo,
)
from edgeglm.tui.services import FeatureUnavailable, Services


def write_gguf(path: Path, arch: str, file_type: int, name: str) -> Path:
    import gguf

    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(path), arch=arch)
    w.add_name(name)
    w.add_file_type(file_type)
    w.add_tensor("token_embd.weight", np.zeros((8, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def hardware() -> HardwareProfile:
    return HardwareProfile(
        cpu=CPUInfo("Test CPU 8-core", "x86_64", 8, 16, flags=["avx", "avx2", "fma"]),
        memory=MemoryInfo(32 * 2**30, 20 * 2**30, 48.5, "measured"),
        os="Linux 6.1",
        gpus=[GPUInfo("nvidia", "Test GPU 12GB", 12 * 2**30, 11 * 2**30, bandwidth_gbps=360.0)],
        llama_cpp=LlamaCppInfo(
            "0.3.36", False, ["CPU"], [LlamaCppDevice("CPU", "Test CPU", "cpu")]
        ),
        onnxruntime=OnnxRuntimeInfo(
            "1.22.0",
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
            ["CPUExecutionProvider"],
            {"CUDAExecutionProvider": "libcudnn.so.9: cannot open shared object file"},
        ),
    )


@dataclass
class FakePlan:
    model: str
    backend: str = "llama.cpp"
    quant: str = "Q4_K_M"
    n_ctx: int = 8192
    reasons: list[str] = field(
        default_factory=lambda: [
            "Q4_K_M fits in 20 GiB available RAM with room for an 8k context",
            "llama.cpp: this build has no GPU offload",
        ]
    )


def fake_plan(model: str | None, hw: Any) -> FakePlan:
    return FakePlan(model or "demo model")


def no_plan(model: str | None, hw: Any) -> FakePlan:
    raise FeatureUnavailable("the planner is not available in this build (edgeglm.planner.plan)")


def bench_report(stopped: bool = False) -> Any:
    from edgeglm.bench.report import BenchReport, BenchRow, Spread

    def row(quant: str, size: int, tps: float, kl: float | None, ref: bool = False) -> BenchRow:
        return BenchRow(
            label=f"glm4-tiny {quant}",
            model="glm4-tiny",
            quant=quant,
            backend="llama.cpp",
            device="cpu",
            file_bytes=size,
            bits_per_weight=size * 8 / 1e6,
            load_s=0.1,
            ttft_s=Spread.of([0.02]),
            prefill_tps=Spread.of([900.0]),
            decode_tps=Spread.of([tps]),
            peak_rss_bytes=200 * 2**20,
            kl_mean=kl,
            kl_p99=None if kl is None else kl * 8,
            top1=None if kl is None else 1 - kl,
            ppl=12.0 + (kl or 0) * 10,
            reference=ref,
        )

    rows = [
        row("F16", 2_000_000, 40.0, None, ref=True),
        row("Q8_0", 1_060_000, 70.0, 0.0012),
        row("Q6_K", 820_000, 75.0, 0.0030),
        row("Q4_K_M", 600_000, 95.0, 0.0150),
        row("Q4_0", 560_000, 90.0, 0.0400),  # dominated by Q4_K_M
    ]
    return BenchReport({"cpu": "Test CPU"}, {"repeat": 1}, rows, complete=not stopped)


class FakeBench:
    """Reports progress per step; honours should_stop like the real benchmark."""

    def __init__(self, steps: int = 4, wait: Callable[[], None] | None = None) -> None:
        self.steps = steps
        self.wait = wait
        self.calls: list[tuple[Any, ...]] = []

    def __call__(
        self,
        models: list[str | None],
        quants: list[str],
        backends: list[str],
        text: Path | None,
        repeat: int,
        progress: Callable[[str, float], None] | None,
        should_stop: Callable[[], bool] | None,
    ) -> Any:
        self.calls.append((models, quants, backends, text, repeat))
        for i in range(self.steps):
            if should_stop and should_stop():
                return bench_report(stopped=True)
            if progress:
                progress(f"step {i + 1}/{self.steps}", (i + 1) / self.steps)
            if self.wait:
                self.wait()
        return bench_report()


def fake_convert(src: str, out: Path, quant: str, progress: Any) -> Path:
    for i in range(3):
        progress(f"blk.{i}.attn_q.weight", i + 1, 3, (i + 1) * 100, 300)
    return write_gguf(out, "glm4", 15, Path(src).name)


def fake_services(**overrides: Any) -> Services:
    base = {
        "probe_hardware": hardware,
        "plan": fake_plan,
        "run_bench": FakeBench(),
        "convert": fake_convert,
        "quants": lambda: ["F16", "Q8_0", "Q6_K", "Q4_K_M", "Q4_0"],
    }
    return Services(**{**base, **overrides})
