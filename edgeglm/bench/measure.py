"""What runs inside the child process for one artifact: speed, memory, logits.

A fresh process per artifact gives an honest peak resident memory (nothing
left over from the previous model) and keeps a llama.cpp crash contained.
Decode is timed the way llama-bench does it: greedy tokens fed back one at a
time, a fixed count, no early stop at end-of-text.

GPU memory is read through NVML while the model is loaded and after freeing
it (vram.py). A row measured ``--device cpu`` hides the GPUs
from CUDA and ROCm in its child before llama.cpp loads: with zero GPU layers
llama.cpp still reserves a GPU compute buffer and runs prompt batches there.
"""

from __future__ import annotations

import gc
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from edgeglm.backends.base import Backend, Completion
    from edgeglm.bench.vram import NvmlReading, VramMeasured
    from edgeglm.planner.launch import LaunchSpec

PROMPT_TOKENS = 512
DECODE_TOKENS = 128


@dataclass(frozen=True)
class Measurement:
    """One artifact's figures, sent back from the child process (it pickles: plain fields)."""

    device: str
    load_s: float
    ttft_s: list[float]  # one per timed run
    prefill_tps: list[float]
    decode_tps: list[float]
    peak_rss_bytes: int
    vram_bytes: int | None
    logits: npt.NDArray[np.float32]  # next-token logits at every position of the eval text
    launch: dict[str, Any] | None = None  # the llama.cpp launch spec the speed rows ran with
    vram_model_bytes: int | None = None  # the model's part of vram_bytes (vram.py)
    vram_note: str = ""  # how the VRAM was measured, or why it was not
    provider: str | None = None  # ONNX Runtime: the execution provider the session ran

    @classmethod
    def of(
        cls,
        device: str,
        load_s: float,
        runs: TimedRuns,
        peak_rss_bytes: int,
        vram: VramMeasured,
        logits: npt.NDArray[np.float32],
        *,
        launch: dict[str, Any] | None = None,
        provider: str | None = None,
    ) -> Measurement:
        """The figures of either backend's measurement, in one shape."""
        return cls(
            device,
            load_s,
            runs.ttft_s,
            runs.prefill_tps,
            runs.decode_tps,
            peak_rss_bytes,
            vram.process_bytes,
            logits,
            launch,
            vram.model_bytes,
            vram.note,
            provider,
        )


@dataclass
class TimedRuns:
    """The timed runs' figures, one of each per run."""

    ttft_s: list[float] = field(default_factory=list)
    prefill_tps: list[float] = field(default_factory=list)
    decode_tps: list[float] = field(default_factory=list)

    def add(self, ttft_s: float, prefill_tps: float, decode_tps: float) -> None:
        self.ttft_s.append(ttft_s)
        self.prefill_tps.append(prefill_tps)
        self.decode_tps.append(decode_tps)


def peak_rss_bytes() -> int:
    """This process's peak resident memory.

    Linux: VmHWM, which starts afresh at exec. (ru_maxrss survives execve, so
    a spawned child would report its parent's peak if that was larger.)
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # macOS: bytes


def nvml_now() -> NvmlReading | None:
    """This process's reading of NVML (vram.py)."""
    from edgeglm.bench.vram import nvml_reading

    return nvml_reading(os.getpid())


# What CUDA and ROCm read at initialization: none of the GPUs is visible.
HIDDEN_GPUS = {"CUDA_VISIBLE_DEVICES": "", "HIP_VISIBLE_DEVICES": ""}


def hide_gpus() -> None:
    """Hide the GPUs from llama.cpp in this (child) process. ggml enumerates its
    devices when the library loads, so this must come before the first import."""
    from edgeglm.errors import BackendError

    if "llama_cpp" in sys.modules:
        raise BackendError("--device cpu: llama.cpp was loaded before the GPUs could be hidden")
    os.environ.update(HIDDEN_GPUS)


def greedy_next(llm: Any) -> int:
    """Argmax of the last output row, read in place (no copy of the logits)."""
    import llama_cpp

    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return int(np.argmax(np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),))))


def measure_llamacpp(
    path: str,
    prompt: list[int],
    eval_tokens: list[int],
    repeat: int,
    threads: int | None,
    decode_tokens: int = DECODE_TOKENS,
    spec: LaunchSpec | None = None,
    cpu_only: bool = False,
) -> Measurement:
    """``spec``: the launch spec to measure (its context is sized here); None:
    llama-cpp-python's defaults on the CPU with ``threads``. ``cpu_only``: the
    GPUs hidden (``--device cpu``; in a fresh child, before llama.cpp loads)."""
    if cpu_only:
        hide_gpus()
    from edgeglm.backends.llamacpp import LlamaCppModel
    from edgeglm.bench.vram import vram_measured
    from edgeglm.planner.launch import LaunchSpec

    if spec is None:
        spec = LaunchSpec(artifact=path, n_threads=threads, flash_attn=False)
    n_ctx = len(prompt) + decode_tokens + 8
    t0 = time.perf_counter()
    m = LlamaCppModel.from_spec(spec.with_(artifact=path, n_ctx=n_ctx))
    load_s = time.perf_counter() - t0
    llm = m.llm
    # warm-up: first calls allocate buffers and page the weights in
    llm.reset()  # type: ignore[no-untyped-call]
    llm.eval(prompt[:32])
    llm.eval([greedy_next(llm)])
    runs = TimedRuns()
    for _ in range(repeat):
        llm.reset()  # type: ignore[no-untyped-call]
        t = time.perf_counter()
        llm.eval(prompt)
        t_prefill = time.perf_counter() - t
        tok = greedy_next(llm)
        ttft = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(decode_tokens):
            llm.eval([tok])
            tok = greedy_next(llm)
        runs.add(ttft, len(prompt) / t_prefill, decode_tokens / (time.perf_counter() - t))
    device = m.capabilities.device
    vram_loaded = nvml_now()  # while the model is still loaded
    m.close()
    vram = vram_measured(vram_loaded, nvml_now())
    # The peak of load + inference, taken before scoring allocates its
    # all-positions logits buffer.
    peak = peak_rss_bytes()
    launch = dict(m.settings)
    scorer = LlamaCppModel.from_spec(
        spec.with_(artifact=path, n_ctx=len(eval_tokens) + 8), logits_all=True
    )
    logits = scorer.score(eval_tokens)
    scorer.close()
    return Measurement.of(device, load_s, runs, peak, vram, logits, launch=launch)


def measure_onnx(
    path: str,
    prompt: list[int],
    eval_tokens: list[int],
    repeat: int,
    threads: int | None,
    decode_tokens: int = DECODE_TOKENS,
    provider: str | None = None,
) -> Measurement:
    """The same measurements through the ONNX Runtime backend's own generate
    loop. ``provider``: the execution provider to run on, or refused (None:
    the backend's preference)."""
    from edgeglm.backends.onnx import OnnxModel
    from edgeglm.bench.vram import vram_measured
    from edgeglm.errors import BackendError

    t0 = time.perf_counter()
    # n_ctx only caps lengths here: the KV cache is sized per call.
    n_ctx = max(len(prompt) + decode_tokens, len(eval_tokens)) + 8
    providers = None if provider is None else [provider]
    m = OnnxModel(Path(path), providers=providers, n_threads=threads, n_ctx=n_ctx)
    load_s = time.perf_counter() - t0
    ran = m.capabilities.device  # the session's first provider: what really runs
    if provider is not None and ran != provider:
        m.close()
        raise BackendError(f"{path}: ONNX Runtime ran {ran}, not {provider} as asked")
    m.eos_ids = set()  # a fixed token count, as llama-bench does: no early stop

    run_onnx(m, prompt[:32], 2)  # warm-up
    runs = TimedRuns()
    for _ in range(repeat):
        t = run_onnx(m, prompt, decode_tokens + 1).timings  # the first token comes from prefill
        runs.add(t.time_to_first_token, t.prefill_tokens_per_second, t.decode_tokens_per_second)
    peak = peak_rss_bytes()
    vram_loaded = nvml_now()
    logits = m.score(eval_tokens)
    device = "cpu" if ran == "CPUExecutionProvider" else "gpu"
    m.close()
    del m  # the KV cache buffers go with the model: freed before the last reading
    gc.collect()
    vram = vram_measured(vram_loaded, nvml_now())
    return Measurement.of(device, load_s, runs, peak, vram, logits, provider=ran)


def run_onnx(m: Backend, prompt: list[int], n: int) -> Completion:
    """``n`` tokens after ``prompt`` through the backend's own generate loop."""
    from edgeglm.backends.base import SamplingParams

    gen = m.generate(prompt, SamplingParams(max_tokens=n))
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            done: Completion = stop.value
            return done
