"""Attention: ORT's GroupQueryAttention with the KV cache and rotary fused in.

GQA reads the cache as BNSH ``[batch, kv_heads, seq, head_dim]`` and works in
two modes the backend picks per call: past and present are separate tensors
(present = past + new), or one preallocated buffer bound as both (the
onnxruntime-genai ``past_present_share_buffer`` mode, no copy per token).
Token positions come from ``seqlens_k``, so the graph needs no position_ids.

Rotary runs inside GQA (``do_rotary``) on the first ``rotary_dim`` channels
of each head; GLM's partial rotary is expressed by cos/sin caches of width
``rotary_dim / 2``, and ``rotary_interleaved`` picks adjacent pairs
(GLM, GLM-4: GPT-J style) or the two halves (GLM-4.5 MoE: NeoX style).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeglm.converters.onnx.graph import GraphBuilder
from edgeglm.converters.onnx.spec import ModelSpec

# Graph IO names, as onnxruntime-genai's decoder config expects them.
PAST_KEY = "past_key_values.{}.key"
PAST_VALUE = "past_key_values.{}.value"
PRESENT_KEY = "present.{}.key"
PRESENT_VALUE = "present.{}.value"


@dataclass(frozen=True)
class AttentionInputs:
    """Per-model tensors every GQA node shares."""

    seqlens_k: str  # int32 [batch]: tokens so far minus one
    total_length: str  # int32 scalar: past + new
    cos: str
    sin: str


def make_attention_inputs(
    g: GraphBuilder, spec: ModelSpec, mask: str, dtype: type[np.floating]
) -> AttentionInputs:
    """seqlens_k and total length from the attention mask, and the rotary caches::

    attention_mask --> ReduceSum(axis 1) --> Sub(1) --> Cast(int32) --> seqlens_k
                   \\-> Shape --> Gather(1) --> Cast(int32) --> total_sequence_length
    """
    base = "/model/attn_mask_reformat"
    summed = g.one("ReduceSum", [mask, g.const([1])], f"{base}/seqlens", keepdims=0)
    minus = g.one("Sub", [summed, g.const(1)], f"{base}/seqlens")
    seqlens = g.one("Cast", [minus], f"{base}/seqlens", to=6)  # INT32
    shape = g.one("Shape", [mask], f"{base}/total")
    total = g.one("Gather", [shape, g.const(1)], f"{base}/total", axis=0)
    total32 = g.one("Cast", [total], f"{base}/total", to=6)
    cos, sin = rotary_caches(spec)
    return AttentionInputs(
        seqlens,
        total32,
        g.weight("/model/rotary/cos_cache", cos.astype(dtype)),
        g.weight("/model/rotary/sin_cache", sin.astype(dtype)),
    )


def rotary_caches(spec: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin [context_length, rotary_dim / 2], computed in float64 then rounded once."""
    dim = spec.rotary_dim
    inv_freq = 1.0 / (spec.rope_theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    angles = np.arange(spec.context_length, dtype=np.float64)[:, None] * inv_freq[None, :]
    return np.cos(angles), np.sin(angles)


def make_group_query_attention(
    g: GraphBuilder,
    name: str,
    layer: int,
    spec: ModelSpec,
    ai: AttentionInputs,
    qkv: tuple[str, str, str] | str,
    *,
    interleaved: bool,
    scale: float | None = None,
    bias: str = "",
) -> str:
    """One GQA node; ``qkv`` is a packed [q|k|v] projection or separate q, k, v.

    ``scale`` defaults to head_dim^-0.5 (MLA pads its heads and passes its own);
    ``bias`` is an additive [batch, 1, seq, total] mask on top of the causal one
    (DeepSeek sparse attention's top-k selection).
    """
    q, k, v = (qkv, "", "") if isinstance(qkv, str) else qkv
    extra = ["", bias] if bias else []  # "" = no position_ids: positions come from seqlens_k
    (out,) = g.node(
        "GroupQueryAttention",
        [
            q,
            k,
            v,
            PAST_KEY.format(layer),
            PAST_VALUE.format(layer),
            ai.seqlens_k,
            ai.total_length,
            ai.cos,
            ai.sin,
            *extra,
        ],
        name,
        domain="com.microsoft",
        outputs=[
            f"{name}/GroupQueryAttention/output_0",
            PRESENT_KEY.format(layer),
            PRESENT_VALUE.format(layer),
        ],
        num_heads=spec.n_head,
        kv_num_heads=spec.n_kv_head,
        do_rotary=1,
        rotary_interleaved=int(interleaved),
        scale=float(spec.head_dim**-0.5 if scale is None else scale),
    )[:1]
    return out
