"""Quantization schemes by llama.cpp name (``Q4_K_M``, ``IQ4_XS`` ...).

A scheme is a llama.cpp file type (``general.file_type``) plus its base ggml
type; the per-tensor mix is decided in ``policy.py``. Values follow
``llama_ftype`` in llama.h and ``llama_ftype_get_default_type`` in
src/llama-quant.cpp.
"""

from __future__ import annotations

from dataclasses import dataclass

from gguf import GGMLQuantizationType as T
from gguf import LlamaFileType as F

from edgeglm.errors import UsageError


@dataclass(frozen=True)
class QuantScheme:
    name: str
    ftype: F
    base: T
    # IQ types below 4 bits only work with an importance matrix.
    needs_imatrix: bool = False

    @property
    def is_float(self) -> bool:
        return self.base in (T.F32, T.F16, T.BF16)


_SCHEMES = [
    QuantScheme("F32", F.ALL_F32, T.F32),
    QuantScheme("F16", F.MOSTLY_F16, T.F16),
    QuantScheme("BF16", F.MOSTLY_BF16, T.BF16),
    QuantScheme("Q8_0", F.MOSTLY_Q8_0, T.Q8_0),
    QuantScheme("Q6_K", F.MOSTLY_Q6_K, T.Q6_K),
    QuantScheme("Q5_K_M", F.MOSTLY_Q5_K_M, T.Q5_K),
    QuantScheme("Q5_K_S", F.MOSTLY_Q5_K_S, T.Q5_K),
    QuantScheme("Q5_0", F.MOSTLY_Q5_0, T.Q5_0),
    QuantScheme("Q5_1", F.MOSTLY_Q5_1, T.Q5_1),
    QuantScheme("Q4_K_M", F.MOSTLY_Q4_K_M, T.Q4_K),
    QuantScheme("Q4_K_S", F.MOSTLY_Q4_K_S, T.Q4_K),
    QuantScheme("Q4_0", F.MOSTLY_Q4_0, T.Q4_0),
    QuantScheme("Q4_1", F.MOSTLY_Q4_1, T.Q4_1),
    QuantScheme("IQ4_XS", F.MOSTLY_IQ4_XS, T.IQ4_XS),
    QuantScheme("IQ4_NL", F.MOSTLY_IQ4_NL, T.IQ4_NL),
    QuantScheme("Q3_K_L", F.MOSTLY_Q3_K_L, T.Q3_K),
    QuantScheme("Q3_K_M", F.MOSTLY_Q3_K_M, T.Q3_K),
    QuantScheme("Q3_K_S", F.MOSTLY_Q3_K_S, T.Q3_K),
    QuantScheme("IQ3_M", F.MOSTLY_IQ3_M, T.IQ3_S),
    QuantScheme("IQ3_S", F.MOSTLY_IQ3_S, T.IQ3_S),
    QuantScheme("IQ3_XS", F.MOSTLY_IQ3_XS, T.IQ3_S),
    QuantScheme("IQ3_XXS", F.MOSTLY_IQ3_XXS, T.IQ3_XXS, needs_imatrix=True),
    QuantScheme("Q2_K", F.MOSTLY_Q2_K, T.Q2_K),
    QuantScheme("Q2_K_S", F.MOSTLY_Q2_K_S, T.Q2_K, needs_imatrix=True),
    QuantScheme("IQ2_M", F.MOSTLY_IQ2_M, T.IQ2_S, needs_imatrix=True),
    QuantScheme("IQ2_S", F.MOSTLY_IQ2_S, T.IQ2_XS, needs_imatrix=True),
    QuantScheme("IQ2_XS", F.MOSTLY_IQ2_XS, T.IQ2_XS, needs_imatrix=True),
    QuantScheme("IQ2_XXS", F.MOSTLY_IQ2_XXS, T.IQ2_XXS, needs_imatrix=True),
    QuantScheme("IQ1_M", F.MOSTLY_IQ1_M, T.IQ1_M, needs_imatrix=True),
    QuantScheme("IQ1_S", F.MOSTLY_IQ1_S, T.IQ1_S, needs_imatrix=True),
]
SCHEMES: dict[str, QuantScheme] = {s.name: s for s in _SCHEMES}
# llama-quantize accepts these short names too.
_ALIASES = {"Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M", "Q3_K": "Q3_K_M", "FP32": "F32", "FP16": "F16"}


def scheme(name: str) -> QuantScheme:
    key = name.strip().upper()
    key = _ALIASES.get(key, key)
    try:
        return SCHEMES[key]
    except KeyError:
        raise UsageError(
            f"unknown quant type {name!r}; choose one of: {', '.join(SCHEMES)}"
        ) from None


def quant_name(file_type: int | None) -> str | None:
    """``general.file_type`` -> llama.cpp's name (MOSTLY_Q4_K_M -> Q4_K_M); None if unknown."""
    if file_type is None:
        return None
    try:
        name = F(file_type).name
    except ValueError:
        return None
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")
