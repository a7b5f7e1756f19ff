"""The ``edgeglm`` commands a plan suggests, each one runnable as printed.

A suggestion that is a command names real paths (shell-quoted) and a real
output name in the current folder (``glm4-Q8_0.gguf``, never ``<out>``); one
that cannot be (a bare config.json has no weights to convert; an
importance-matrix quant needs the user's own calibration text) is said in
words instead. Every command a plan prints is also in ``Plan.commands``
(``plan --json`` key ``commands``), and tests run each one.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

if TYPE_CHECKING:
    from edgeglm.hardware import HardwareProfile
    from edgeglm.planner.sources import ModelSource


def edgeglm(*args: str | Path) -> str:
    """``edgeglm ARGS`` as a shell would need it typed."""
    return " ".join(["edgeglm", *(shlex.quote(str(a)) for a in args)])


def _has_weights(folder: Path) -> bool:
    """As ``edgeglm plan`` decides it: safetensors, or their index, beside config.json."""
    return (folder / "config.json").is_file() and (
        any(folder.glob("*.safetensors")) or (folder / "model.safetensors.index.json").is_file()
    )


def checkpoint_of(source: ModelSource) -> Path | None:
    """The Hugging Face checkpoint folder a source can be converted from: the
    folder planned, the folder around a planned config.json when the weights
    are there too, or the folder a GGUF was converted from (its
    general.source.url) where that is still on this machine."""
    if source.kind == "hf":
        return source.path
    if source.kind == "config":
        folder = source.path.parent
        return folder if source.path.name == "config.json" and _has_weights(folder) else None
    from edgeglm.gguf_file import read_gguf

    url = read_gguf(source.path).get("general.source.url")
    if not isinstance(url, str) or urlparse(url).scheme != "file":
        return None
    folder = Path(unquote(urlparse(url).path))
    return folder if _has_weights(folder) else None


def convert_gguf(folder: Path, quant: str) -> str:
    """Convert a checkpoint to ``quant``, written as ``<name>-<quant>.gguf`` here."""
    return edgeglm("convert", folder, "-o", f"{folder.name}-{quant}.gguf", "-q", quant)


def onnx_target(folder: Path) -> Path:
    """Where an ONNX export the backend finds goes: ``<folder>/onnx`` (the
    place ``run --backend onnx`` looks), or beside the checkpoint when that
    folder is taken (an optimum export lives there)."""
    inside = folder / "onnx"
    return inside if not inside.exists() else folder.with_name(f"{folder.name}-onnx")


def convert_onnx(folder: Path) -> str:
    return edgeglm("convert", folder, "-o", onnx_target(folder), "--format", "onnx")


def plan_again(
    source: ModelSource, hw: HardwareProfile, hardware_file: Path | None, *flags: str
) -> str | None:
    """``edgeglm plan`` of the same model on the same machine, or on the same
    profile file; None for a profile whose file is not known."""
    if hw.is_simulated and hardware_file is None:
        return None
    machine = ["--hardware", str(hardware_file)] if hardware_file is not None else []
    return edgeglm("plan", source.path, *flags, *machine)
