"""Which ggml type each tensor gets, for a given llama.cpp quant scheme.

This reproduces llama.cpp's own mix (``llama_tensor_get_type`` in
src/llama-quant.cpp, revision vendored by llama-cpp-python 0.3.36), so an
EdgeGLM ``Q4_K_M`` has the same size and quality as ``llama-quantize``'s,
then adds nothing that could make it worse. The rules are data where they can
be: categories by name, fallbacks by type.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as T

from edgeglm.converters.gguf.quant_types import QuantScheme

# Tensor categories, first match wins (src/llama-quant.cpp tensor_get_category).
_CATEGORIES: tuple[tuple[str, str, bool], ...] = (
    # (category, pattern, exact?)
    ("output", "output.weight", True),
    ("token_embd", "token_embd.weight", True),
    ("attn_qkv", "attn_qkv.weight", False),
    ("attn_kv_b", "attn_kv_b.weight", False),
    ("attn_v", "attn_v.weight", False),
    ("attn_k", "attn_k.weight", False),
    ("attn_q", "attn_q.weight", False),
    ("attn_output", "attn_output.weight", False),
    ("ffn_up", "ffn_up", False),
    ("ffn_gate", "ffn_gate", False),
    ("ffn_down", "ffn_down", False),
)
_ATTN_V_LIKE = {"attn_v", "attn_qkv", "attn_kv_b"}

# Never quantized (tensor_allows_quantization): routers, norms, 1-D tensors,
# and the DSA indexer's small projections that llama.cpp keeps precise.
_KEEP_SUBSTRINGS = (
    "_norm.weight",
    "ffn_gate_inp.weight",
    "ffn_gate_tid2eid.weight",
    "indexer.k_proj.weight",
    "indexer.q_proj.weight",
)

# When a row length is not a multiple of the chosen type's block size
# (tensor_type_fallback): try this type, else F16.
_FALLBACK = {
    T.IQ1_S: T.IQ4_NL,
    T.IQ1_M: T.IQ4_NL,
    T.IQ2_XXS: T.IQ4_NL,
    T.IQ2_XS: T.IQ4_NL,
    T.IQ2_S: T.IQ4_NL,
    T.IQ3_XXS: T.IQ4_NL,
    T.IQ3_S: T.IQ4_NL,
    T.IQ4_XS: T.IQ4_NL,
    T.Q2_K: T.Q4_0,
    T.Q3_K: T.Q4_0,
    T.TQ1_0: T.Q4_0,
    T.TQ2_0: T.Q4_0,
    T.Q4_K: T.Q5_0,
    T.Q5_K: T.Q5_1,
    T.Q6_K: T.Q8_0,
}

_VERY_LOW_BIT = {"IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M"}
_LAYER = re.compile(r"^blk\.(\d+)\.")


@dataclass(frozen=True)
class ModelShape:
    """The hyperparameters llama.cpp's policy looks at."""

    n_layer: int  # block_count, NextN/MTP layers included
    n_head: int
    n_head_kv: int
    n_expert: int = 0

    @property
    def gqa(self) -> int:
        return self.n_head // self.n_head_kv if self.n_head_kv else 0


@dataclass(frozen=True)
class PlannedTensor:
    name: str
    shape: tuple[int, ...]  # ggml order: shape[0] is the row length
    src_type: T  # what we would write without quantizing (F32/F16/BF16)


def category(name: str) -> str:
    for cat, pat, exact in _CATEGORIES:
        if (name == pat) if exact else (pat in name):
            return cat
    return "other"


def allows_quantization(name: str, shape: Sequence[int]) -> bool:
    if len(shape) < 2 or not name.endswith("weight"):
        return False
    return not any(s in name for s in _KEEP_SUBSTRINGS)


def _use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _blck(t: T) -> int:
    return GGML_QUANT_SIZES[t][0]


def _order_key(name: str) -> tuple[int, str]:
    m = _LAYER.match(name)
    return (int(m.group(1)) if m else -1, name)


def choose_types(
    tensors: Sequence[PlannedTensor],
    scheme: QuantScheme,
    model: ModelShape,
    *,
    has_imatrix: bool = False,
) -> dict[str, T]:
    """The ggml type for every tensor, in llama.cpp's processing order."""
    out: dict[str, T] = {}
    tied = not any(t.name == "output.weight" for t in tensors)
    n_attn_v = sum(1 for t in tensors if category(t.name) in _ATTN_V_LIKE)
    counters = {"attn_v": 0, "ffn_down": 0}
    base = scheme.base
    for t in sorted(tensors, key=lambda t: _order_key(t.name)):
        if not allows_quantization(t.name, t.shape):
            out[t.name] = T.F32 if len(t.shape) < 2 else t.src_type
            continue
        if scheme.is_float:
            out[t.name] = base
            continue
        new = _impl(t, scheme, model, tied, has_imatrix, n_attn_v, counters)
        out[t.name] = _fallback(new, t.shape[0])
    return out


def _layer(t: PlannedTensor, counter: int, model: ModelShape) -> int:
    if max(1, model.n_expert) > 1:
        m = _LAYER.match(t.name)
        if m:
            return int(m.group(1))
    return counter


def _impl(
    t: PlannedTensor,
    s: QuantScheme,
    model: ModelShape,
    tied: bool,
    has_imatrix: bool,
    n_attn_v: int,
    counters: dict[str, int],
) -> T:
    ft, new = s.name, s.base
    cat = category(t.name)
    n_layer, gqa, n_expert = model.n_layer, model.gqa, model.n_expert
    if cat == "output" or (tied and cat == "token_embd"):
        if t.shape[0] % _blck(new):
            return T.Q8_0
        if ft in {"IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M"}:
            return T.Q5_K
        return new if new == T.Q8_0 else T.Q6_K
    if cat == "token_embd":
        if ft in {"IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ1_M"}:
            return T.Q2_K
        if ft in {"IQ2_S", "IQ2_M", "IQ3_XXS"}:
            return T.IQ3_S
        return new
    if ft in _VERY_LOW_BIT:
        if cat in _ATTN_V_LIKE:
            counters["attn_v"] += 1
            if gqa >= 4 or n_expert >= 4:
                return T.Q4_K
            return T.IQ3_S if ft in {"IQ2_S", "IQ2_M"} else T.Q2_K
        if n_expert == 8 and cat == "attn_k":
            return T.Q4_K
        if cat == "ffn_down":
            i = counters["ffn_down"]
            counters["ffn_down"] += 1
            if i < n_layer // 8:
                return T.IQ3_S if ft in {"IQ2_S", "IQ2_M"} else T.Q2_K
            return new
        if cat == "attn_output":
            if n_expert == 8:
                return T.Q5_K
            if ft in {"IQ1_S", "IQ1_M"}:
                return T.IQ2_XXS
            if ft in {"IQ2_S", "IQ2_M"}:
                return T.IQ3_S
        return new
    if cat in _ATTN_V_LIKE:
        j = counters["attn_v"]
        counters["attn_v"] += 1
        if ft == "Q2_K":
            new = T.Q4_K if gqa >= 4 else T.Q3_K
        elif ft == "Q2_K_S" and gqa >= 4:
            new = T.Q4_K
        elif ft == "IQ3_XXS":
            new = T.Q4_K if gqa >= 4 else (T.IQ3_XXS if has_imatrix else T.IQ3_S)
        elif (ft in {"IQ3_XS", "IQ3_S"} and gqa >= 4) or ft == "IQ3_M":
            new = T.Q4_K
        elif ft == "Q3_K_M":
            new = T.Q5_K if j < 2 else T.Q4_K
        elif ft == "Q3_K_L" or (ft in {"IQ4_NL", "IQ4_XS"} and gqa >= 4):
            new = T.Q5_K
        elif ft in {"Q4_K_M", "Q5_K_M"} and _use_more_bits(j, n_attn_v):
            new = T.Q6_K
        elif ft == "Q4_K_S" and j < 4:
            new = T.Q5_K
        if n_expert == 8:
            new = T.Q8_0
        return new
    if cat == "attn_k":
        if n_expert == 8:
            return T.Q8_0
        return {"IQ3_XS": T.IQ3_XXS, "IQ3_XXS": T.IQ2_S}.get(ft, new)
    if cat == "attn_q":
        return {"IQ3_XS": T.IQ3_XXS, "IQ3_XXS": T.IQ2_S}.get(ft, new)
    if cat == "ffn_down":
        i = _layer(t, counters["ffn_down"], model)
        counters["ffn_down"] += 1
        n = n_layer
        if ft == "Q2_K":
            return T.Q3_K
        if ft == "Q2_K_S":
            return T.Q4_K if i < n // 8 else new
        if ft == "IQ3_XXS" and not has_imatrix:
            return T.Q4_K if i < n // 8 else T.Q3_K
        if ft == "Q3_K_M":
            return T.Q5_K if i < n // 16 else T.Q4_K
        if ft == "IQ3_M" and (i < n // 8 or (n_expert == 8 and _use_more_bits(i, n))):
            return T.Q4_K
        if ft == "Q3_K_L":
            return T.Q5_K
        if ft == "Q4_K_M":
            return T.Q6_K if _use_more_bits(i, n) else new
        if i < n // 8 and ft in {"IQ4_NL", "IQ4_XS"} and not has_imatrix:
            return T.Q5_K
        if ft == "Q5_K_M":
            return T.Q6_K if _use_more_bits(i, n) else new
        if ft == "Q4_K_S" and i < n // 8:
            return T.Q5_K
        if ft in {"Q4_0", "Q5_0"} and has_imatrix and i < n // 8:
            return T.Q4_1 if ft == "Q4_0" else T.Q5_1
        return new
    if cat == "attn_output":
        if n_expert == 8:
            eight = {
                "Q2_K",
                "IQ3_XS",
                "IQ3_XXS",
                "Q3_K_S",
                "Q3_K_M",
                "IQ4_NL",
                "Q4_K_S",
                "Q4_K_M",
                "IQ3_S",
                "IQ3_M",
                "IQ4_XS",
            }
            return T.Q5_K if ft in eight else new
        return {
            "Q2_K": T.Q3_K,
            "IQ3_XXS": T.IQ3_S,
            "Q3_K_M": T.Q4_K,
            "Q3_K_L": T.Q5_K,
            "IQ3_M": T.Q4_K,
        }.get(ft, new)
    if cat in ("ffn_gate", "ffn_up") and ft == "IQ3_XS":
        key = cat
        i = _layer(t, counters.get(key, 0), model)
        counters[key] = counters.get(key, 0) + 1
        if n_layer // 8 <= i < 7 * n_layer // 8:
            return T.IQ3_XXS
    return new


def _fallback(new: T, row: int) -> T:
    if row % _blck(new) == 0:
        return new
    alt = _FALLBACK.get(new, new)
    if row % _blck(alt) == 0:
        return alt
    return T.F16


def requires_imatrix(name: str, qtype: T, scheme: QuantScheme) -> bool:
    """tensor_requires_imatrix: IQ1/IQ2/IQ3_XXS tensors, and Q2_K inside Q2_K_S."""
    if name in ("token_embd.weight", "output.weight"):
        return False
    if qtype in (T.IQ3_XXS, T.IQ2_XXS, T.IQ2_XS, T.IQ2_S, T.IQ1_M, T.IQ1_S):
        return True
    return qtype == T.Q2_K and scheme.name == "Q2_K_S"
