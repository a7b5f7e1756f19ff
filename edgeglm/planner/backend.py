"""Which runtime: llama.cpp, or ONNX Runtime when it has both an artifact and a better device.

llama.cpp runs GGUF on CPUs and (when built for them) GPUs, with the
placement control the planner needs, so it is the default. ONNX Runtime wins
only where it can use an accelerator llama.cpp cannot here (say a CPU-only
llama-cpp-python next to a working CUDAExecutionProvider) *and* a Hugging
Face checkpoint has an ONNX export beside it that EdgeGLM's ONNX backend
opens: onnxruntime-genai's layout, as ``edgeglm convert --format onnx``
writes it (genai_config.json naming the decoder). The planner never picks a
layout the backend cannot open: optimum's ``onnx/model.onnx`` export (no
genai_config.json; a concatenating KV cache, no GroupQueryAttention) is
reported, not chosen. A GGUF always runs in llama.cpp: its weights are its
quant, and an export beside it would be other weights.
"""

from __future__ import annotations

from pathlib import Path

from edgeglm.hardware import HardwareProfile
from edgeglm.planner.machine import Budget
from edgeglm.planner.onnx_plan import BACKEND_PROVIDERS, is_onnx_folder
from edgeglm.planner.policy import ORT_ACCELERATED_PROVIDERS
from edgeglm.planner.sources import ModelSource


def _folder(path: Path) -> Path:
    return path if path.is_dir() else path.parent


def find_onnx_artifact(path: Path) -> Path | None:
    """The ONNX folder of a model that EdgeGLM's ONNX backend opens:
    ``<dir>/onnx/`` or ``<dir>`` itself holding genai_config.json, else (a
    store model's checkpoint) its converted ``artifacts/onnx-*``, int4 first."""
    from edgeglm.store.layout import store_entry_of

    d = _folder(path)
    found = next((f for f in (d / "onnx", d) if is_onnx_folder(f)), None)
    entry = store_entry_of(d) if found is None else None
    if entry is not None:
        made = sorted(entry.artifacts_dir.glob("onnx-*"), key=lambda f: f.name != "onnx-int4")
        found = next((f for f in made if is_onnx_folder(f)), None)
    return found


def find_onnx_files(path: Path) -> Path | None:
    """Any ONNX file beside a model (optimum's ``onnx/*.onnx`` or ``*.onnx``), openable or not."""
    d = _folder(path)
    for folder in (d / "onnx", d):
        found = sorted(folder.glob("*.onnx")) if folder.is_dir() else []
        if found:
            return found[0]
    return None


def onnx_suggestion(source: ModelSource) -> str | None:
    """The command that makes an ONNX export the backend runs, where a
    checkpoint has only ONNX files it cannot open (None otherwise)."""
    from edgeglm.planner.commands import convert_onnx

    if source.kind != "hf" or find_onnx_artifact(source.path) is not None:
        return None
    if find_onnx_files(source.path) is None:
        return None
    return convert_onnx(_folder(source.path))


def choose_backend(source: ModelSource, hw: HardwareProfile, b: Budget) -> tuple[str, str]:
    ort = hw.onnxruntime
    working = ort.working_providers if ort is not None else []
    # only providers the ONNX backend runs: the plan must be what opens
    accel = [p for p in BACKEND_PROVIDERS if p in working and p in ORT_ACCELERATED_PROVIDERS]
    if source.kind == "gguf":
        return "llama.cpp", "a GGUF runs in llama.cpp, on every device llama.cpp was built for"
    onnx = find_onnx_artifact(source.path) if source.kind == "hf" else None
    if onnx is not None and accel and not b.gpus:
        return "onnxruntime", (
            f"an ONNX export exists ({onnx}) and ONNX Runtime's {accel[0]} initializes here, "
            "while llama.cpp has no usable GPU; memory figures below are for the llama.cpp "
            "fallback"
        )
    if onnx is None:
        other = find_onnx_files(source.path) if source.kind == "hf" else None
        if other is not None:
            why = (
                f"{other} is not in the layout EdgeGLM's ONNX backend runs (no "
                "genai_config.json, e.g. an optimum export); make one with "
                f"{onnx_suggestion(source)}"
            )
        else:
            why = "no ONNX export of this model, and llama.cpp runs the GGUF on every device here"
    elif not accel:
        listed = [p for p in (ort.available_providers if ort else []) if p not in working]
        why = "ONNX Runtime initializes only " + (", ".join(working) or "no provider")
        if listed:
            why += f" here ({', '.join(listed)} listed but unusable)"
    else:
        why = f"llama.cpp can use the GPU as well as {accel[0]}, and runs the quantized GGUF"
    return "llama.cpp", why
