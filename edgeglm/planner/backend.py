"""Which runtime: llama.cpp, or ONNX Runtime when it has both an artifact and a better device.

llama.cpp runs GGUF on CPUs and (when built for them) GPUs, with the
placement control the planner needs, so it is the default. ONNX Runtime wins
only where it can use an accelerator llama.cpp cannot here (say a CPU-only
llama-cpp-python next to a working CUDAExecutionProvider) *and* the model
has an ONNX export beside it.
"""

from __future__ import annotations

from pathlib import Path

from edgeglm.hardware import HardwareProfile
from edgeglm.planner.machine import Budget
from edgeglm.planner.policy import ORT_ACCELERATED_PROVIDERS
from edgeglm.planner.sources import ModelSource


def find_onnx_artifact(path: Path) -> Path | None:
    """An ONNX export next to the model: <dir>/onnx/*.onnx (optimum's layout) or <dir>/*.onnx."""
    d = path if path.is_dir() else path.parent
    for folder in (d / "onnx", d):
        found = sorted(folder.glob("*.onnx")) if folder.is_dir() else []
        if found:
            return found[0]
    return None


def choose_backend(source: ModelSource, hw: HardwareProfile, b: Budget) -> tuple[str, str]:
    ort = hw.onnxruntime
    working = ort.working_providers if ort is not None else []
    accel = [p for p in working if p in ORT_ACCELERATED_PROVIDERS]
    onnx = find_onnx_artifact(source.path) if source.kind != "config" else None
    if onnx is not None and accel and not b.gpus:
        return "onnxruntime", (
            f"an ONNX export exists ({onnx}) and ONNX Runtime's {accel[0]} initializes here, "
            "while llama.cpp has no usable GPU; memory figures below are for the llama.cpp "
            "fallback"
        )
    if onnx is None:
        why = "no ONNX export of this model, and llama.cpp runs the GGUF on every device here"
    elif not accel:
        listed = [p for p in (ort.available_providers if ort else []) if p not in working]
        why = "ONNX Runtime initializes only " + (", ".join(working) or "no provider")
        if listed:
            why += f" here ({', '.join(listed)} listed but unusable)"
    else:
        why = f"llama.cpp can use the GPU as well as {accel[0]}, and runs the quantized GGUF"
    return "llama.cpp", why
