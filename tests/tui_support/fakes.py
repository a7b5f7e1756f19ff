"""Fake hardware, plan, benchmark and converter for app tests (fixed numbers: stable snapshots)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgeglm.bench.report import BenchReport, BenchRow, Spread
from edgeglm.bench.run import BenchRequest
from edgeglm.hardware import (
    CPUInfo,
    GPUInfo,
    HardwareProfile,
    LlamaCppDevice,
    LlamaCppInfo,
    MemoryInfo,
    OnnxRuntimeInfo,
)
from edgeglm.planner.memory import DeviceMemory
from edgeglm.planner.placement import Placement, Settings
from edgeglm.planner.plan import Candidate, Decision, Plan
from edgeglm.tui.app import EdgeGLMApp
from edgeglm.tui.services import ConvertProgressFn, Services

# The conftest fixtures' types, for annotating test parameters.
MakeApp = Callable[..., EdgeGLMApp]
SnapCompare = Callable[..., bool]  # pytest-textual-snapshot's snap_compare


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


def fake_plan(model: str | None, hw: HardwareProfile) -> Plan:
    """A fixed plan for ``hardware()``: the real Plan type, with the keys the planner
    writes into its ``model`` and ``hardware`` dicts (the real planner reads this
    machine's cores and paths, which snapshots must not depend on)."""
    gib = 2**30
    return Plan(
        model={
            "name": model or "glm-demo",
            "source": "hf",
            "path": "demo_model",
            "architecture": "glm4",
            "hf_architecture": "Glm4ForCausalLM",
            "quant": None,
            "parameters": 1_300_000_000,
            "n_layer": 24,
            "n_ctx_train": 8192,
            "n_vocab": 151552,
            "moe": False,
            "n_expert": 0,
            "n_expert_used": 0,
            "mla": False,
        },
        hardware={
            "name": None,
            "source": "probed",
            "class": "cpu-desktop",
            "cpu": hw.cpu.model,
            "threads": 8,
            "ram_usable_bytes": 18 * gib,
            "cpu_bandwidth_gbps": 48.5,
            "gpus": [],
        },
        fits=True,
        backend="llama.cpp",
        quant="Q4_K_M",
        convert=True,
        placement=Placement("cpu", 0),
        settings=Settings(n_ctx=8192),
        n_threads=8,
        devices=[DeviceMemory("cpu", weights=int(0.8 * gib), kv_cache=int(0.4 * gib))],
        decode_ceiling_tps=60.6,
        decisions=[
            Decision("backend", "llama.cpp", "this build has no GPU offload"),
            Decision("quant", "Q4_K_M", "fits in 20 GiB available RAM with room for 8k"),
            Decision("threads", "8", "8 physical cores"),
        ],
        candidates=[
            Candidate("Q8_0", int(1.4 * gib), "cpu", 8192, 34.6),
            Candidate("Q4_K_M", int(0.8 * gib), "cpu", 8192, 60.6),
        ],
    )


def bench_report(stopped: bool = False) -> BenchReport:
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

    def __init__(self, steps: int = 4, wait: Callable[[], object] | None = None) -> None:
        self.steps = steps
        self.wait = wait
        self.calls: list[BenchRequest] = []

    def __call__(
        self,
        request: BenchRequest,
        progress: Callable[[str, float], None] | None,
        should_stop: Callable[[], bool] | None,
    ) -> BenchReport:
        self.calls.append(request)
        for i in range(self.steps):
            if should_stop and should_stop():
                return bench_report(stopped=True)
            if progress:
                progress(f"step {i + 1}/{self.steps}", (i + 1) / self.steps)
            if self.wait:
                self.wait()
        return bench_report()


def fake_convert(src: str, out: Path, quant: str, progress: ConvertProgressFn) -> Path:
    for i in range(3):
        progress(f"blk.{i}.attn_q.weight", i + 1, 3, (i + 1) * 100, 300)
    return write_gguf(out, "glm4", 15, Path(src).name)


def fake_services(**overrides: object) -> Services:
    base: dict[str, object] = {
        "probe_hardware": hardware,
        "plan": fake_plan,
        "run_bench": FakeBench(),
        "convert": fake_convert,
        "quants": lambda: ["F16", "Q8_0", "Q6_K", "Q4_K_M", "Q4_0"],
        "onnx_quants": lambda: ["fp32", "fp16", "int8", "int4"],
    }
    return Services(**{**base, **overrides})  # type: ignore[arg-type]
