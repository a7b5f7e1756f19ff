"""Plans for ONNX folders (``edgeglm convert --format onnx``): provider, threads,
context, and what ONNX Runtime will hold in memory.

The memory model was measured on this repo's own exports (demo model at fp32,
int8 and int4; the synthetic 1.3 B model at int4) against VmHWM peaks of a
full-context prefill:

- ONNX Runtime keeps about half as much again as the model files next to the
  session's tensors (the parsed initializers and MatMulNBits' prepacked
  weights): runtime = 19 MiB + 0.47 x file bytes;
- a prefill returns logits for every position, held twice (ORT's output and
  the backend's copy); where the graph takes logits_to_keep (EdgeGLM's exports
  since it) generate() gets the last row only, and one copy of every
  position's stays in the estimate for score(), which also covers
  generate()'s prefill activations (the table's second block);
- the KV cache is the backend's own buffer, sized to the context.

Estimated vs measured, full-context prefill:

| export | estimate | measured |
|---|---|---|
| demo int4, 2040 tokens | 142.9 MiB | 155.5 MiB |
| demo fp32, 1016 tokens | 123.6 MiB | 119.6 MiB |
| synthetic 1.3 B int4, 1016 tokens | 1841 MiB | 1842 MiB |
| with logits_to_keep: demo int4, 2040 tokens | 93.6 MiB | 95.5 MiB |
| with logits_to_keep: demo fp32, 1016 tokens | 99.6 MiB | 91.1 MiB |
| with logits_to_keep: synthetic 1.3 B int4, 1016 tokens | 1404 MiB | 1230 MiB |
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgeglm.errors import CheckpointError, UsageError
from edgeglm.fileio import contained
from edgeglm.hardware import HardwareProfile, usable_threads

MiB = 1 << 20
RUNTIME_BASE = 19 * MiB  # an InferenceSession with nothing loaded, measured
RUNTIME_PER_WEIGHT_BYTE = 0.47  # parsed initializers + prepacked weights, measured
FIXED = 6 * MiB  # tokenizer, sampler and small buffers, measured
SCHEMA_VERSION = 1
# The execution providers EdgeGLM's ONNX backend runs (backends/onnx.py
# PREFERRED_PROVIDERS, in its order): the KV cache lives on CUDA or CPU.
# TensorRT is left out (minutes of engine builds); others it cannot place.
BACKEND_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


@dataclass(frozen=True)
class OnnxMemory:
    weights: int
    runtime: int
    kv_cache: int
    logits: int
    fixed: int

    @property
    def total(self) -> int:
        return self.weights + self.runtime + self.kv_cache + self.logits + self.fixed


@dataclass(frozen=True)
class OnnxPlan:
    model: str
    provider: str
    threads: int
    n_ctx: int
    memory: OnnxMemory
    ram_usable: int
    reasons: dict[str, str]

    @property
    def fits(self) -> bool:
        return self.memory.total <= self.ram_usable

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "backend": "onnxruntime",
            "model": self.model,
            "provider": self.provider,
            "threads": self.threads,
            "n_ctx": self.n_ctx,
            "fits": self.fits,
            "memory": {**asdict(self.memory), "total": self.memory.total},
            "ram_usable": self.ram_usable,
            "reasons": self.reasons,
        }


def is_onnx_folder(path: Path) -> bool:
    return path.is_dir() and (path / "genai_config.json").is_file()


def _graph_io(model_file: Path) -> tuple[int, bool]:
    """(KV cache bytes per element, whether the graph takes logits_to_keep)."""
    import onnx

    from edgeglm.backends.onnx import LOGITS_TO_KEEP

    try:
        m = onnx.load(str(model_file), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends: a file we cannot read
        raise CheckpointError(f"{model_file}: not a readable ONNX model ({e})") from e
    keeps = any(inp.name == LOGITS_TO_KEEP for inp in m.graph.input)
    for inp in m.graph.input:
        if inp.name.startswith("past_key_values."):
            f16 = inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
            return (2 if f16 else 4), keeps
    raise CheckpointError(f"{model_file}: no past_key_values inputs; not an EdgeGLM/genai export")


def onnx_memory(folder: Path, n_ctx: int) -> OnnxMemory:
    where = folder / "genai_config.json"
    try:
        cfg = json.loads(where.read_text(encoding="utf-8"))["model"]
        dec = cfg["decoder"]
        sizes = [dec["num_hidden_layers"], dec["num_key_value_heads"], dec["head_size"]]
        sizes.append(cfg["vocab_size"])
        filename = dec["filename"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{where}: unreadable ({e})") from e
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sizes):
        raise CheckpointError(f"{where}: decoder sizes must be positive integers, got {sizes}")
    if not isinstance(filename, str):
        raise CheckpointError(f"{where}: decoder filename must be a string")
    n_layer, n_kv, head, vocab = sizes
    model_file = contained(folder, filename, what=str(where))
    if not model_file.is_file():
        raise CheckpointError(f"{where}: names {filename!r}, which is not in {folder}")
    weights = sum(
        f.stat().st_size
        for f in folder.iterdir()
        if f.suffix in (".onnx", ".data") or f.name.endswith(".onnx.data")
    )
    itemsize, keeps_logits = _graph_io(model_file)
    kv = 2 * n_layer * n_kv * head * n_ctx * itemsize
    return OnnxMemory(
        weights=weights,
        runtime=int(RUNTIME_BASE + RUNTIME_PER_WEIGHT_BYTE * weights),
        kv_cache=kv,
        logits=(1 if keeps_logits else 2) * n_ctx * vocab * 4,
        fixed=FIXED,
    )


def _trained_context(folder: Path) -> int:
    where = folder / "genai_config.json"
    try:
        trained = json.loads(where.read_text(encoding="utf-8"))["model"]["context_length"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{where}: unreadable ({e!r})") from e
    if not isinstance(trained, int) or isinstance(trained, bool) or trained < 1:
        raise CheckpointError(f"{where}: context_length must be a positive integer")
    return trained


def plan_onnx(folder: Path, hw: HardwareProfile, ctx: int | None = None) -> OnnxPlan:
    """The plan for an ONNX folder; a ``ctx`` past its trained context is refused."""
    from edgeglm.planner.advice import past_trained_context

    trained = _trained_context(folder)
    if ctx is not None and ctx < 1:
        raise UsageError(f"--ctx {ctx}: a context holds at least 1 token")
    if ctx is not None and ctx > trained:
        raise UsageError(past_trained_context(ctx, trained, "--ctx"))
    n_ctx = ctx or trained
    probed = list(hw.onnxruntime.working_providers) if hw.onnxruntime else []
    working = [p for p in BACKEND_PROVIDERS if p in probed]
    provider = working[0] if working else "CPUExecutionProvider"
    threads = hw.cpu.physical_cores or 1
    if not hw.is_simulated:  # taskset/cgroup limits on this machine, as llama.cpp plans
        threads = min(threads, usable_threads())
    margin = max(512 * MiB, hw.memory.total_bytes // 10)
    usable = max(0, hw.memory.available_bytes - margin)
    reasons = {
        "provider": f"{provider} is the first execution provider EdgeGLM's ONNX backend runs "
        "that really initialized here"
        if working
        else "no provider was probed; CPU is always there",
        "threads": f"{threads} physical cores (decode is memory-bound; hyper-threads add nothing)",
        "context": "the model's trained context"
        if ctx is None
        else f"asked for {ctx} (trained context: {trained})",
        "memory": "weights + ONNX Runtime's copies (measured 0.47x) + KV cache + "
        "all-position logits of a full-context prefill (once where the graph "
        "takes logits_to_keep: score()'s; twice without it)",
    }
    return OnnxPlan(
        str(folder), provider, threads, n_ctx, onnx_memory(folder, n_ctx), usable, reasons
    )
