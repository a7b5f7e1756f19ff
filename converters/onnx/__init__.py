"""HF safetensors -> ONNX (onnxruntime-genai folder layout) for GLM families.

    convert(src, out_dir, "int4") -> ConvertResult

Importing this package is cheap; onnx and numpy-heavy modules load on the
first conversion. Layout: ``registry`` (architecture -> family),
``base`` (the graph pipeline as overridable ``make_*`` methods), one module
per family (``glm``, ``glm4``, ``glm4_moe``), ``ops``/``attention``
(subgraphs), ``quant`` (precisions, MatMulNBits packing), ``graph``
(builder, weight streaming), ``package`` (output folder), ``pipeline``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgeglm.converters.onnx.base import Progress
    from edgeglm.converters.output import ConvertResult

QUANTS = ("fp32", "fp16", "int8", "int4")


def convert(
    src: str | Path, out_dir: Path, quant: str, *, progress: Progress | None = None
) -> ConvertResult:
    """Convert a Hugging Face GLM checkpoint into an ONNX model folder at ``out_dir``."""
    from edgeglm.converters.onnx.pipeline import convert as run

    return run(src, out_dir, quant, progress=progress)


__all__ = ["QUANTS", "convert"]
