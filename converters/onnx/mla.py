"""Multi-head latent attention (MLA, DeepSeek-V2 style) on ORT's GroupQueryAttention,
with the latent itself in the KV cache (weight absorption, as DeepSeek's inference
code and llama.cpp's MLA do).

GLM-4.7-Flash and GLM-5.x compress k/v into one latent ``c`` per token
(kv_lora_rank wide, RMS-normed) plus one rotary key ``k_rot`` shared by every
head; transformers expands them into per-head keys and values with
``kv_b_proj`` = [W_UK_h; W_UV_h] per head. The expansion commutes with
attention, so we never make it::

    q_nope_h . (W_UK_h c)            = (W_UK_h^T q_nope_h) . c
    o_proj_h (W_UV_h sum_t p_t c_t)  = (o_proj_h W_UV_h) (sum_t p_t c_t)

W_UK is folded into q_b_proj's rows (q_proj without a q LoRA) and W_UV into
o_proj's columns at conversion time: both stay 2-D weights, quantized like
any other (MatMulNBits at int4/int8). Attention is then MQA over the latent:
GQA with one KV head of ``D = kv_lora + lead`` channels, where ``lead`` is
``rope`` (or more, when a subclass caches more per token)::

    q head:  [ q_rot (rope) | W_UK_h^T q_nope (kv_lora) | 0 ... ]   H heads
    k:       [ k_rot (rope) | c (kv_lora)               | 0 ... ]   1 head
    v:       [ spare (lead)                             | c     ]   1 head

so the cache holds 2 x D values per token and layer (plain MLA: v is k
itself, its spare channels the unrotated k_rot) instead of H heads of
per-head keys and values. Rotary goes first so GQA's fused rotary (first
``rope`` channels, adjacent pairs, as transformers'
``apply_rotary_pos_emb_interleave``) applies to it; zero channels add nothing
to q.k. Each head's output is ``sum_t p_t v_t``: its last kv_lora channels
are the attended latent, which the absorbed o_proj reads. ``spare`` is room a
subclass may fill (GLM-5 caches its indexer keys there). The softmax scale
stays (nope + rope)^-0.5.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from edgeglm.checkpoint.config import Config
from edgeglm.converters.onnx.attention import make_group_query_attention
from edgeglm.converters.onnx.base import F32Array
from edgeglm.converters.onnx.glm4_moe import Glm4Moe
from edgeglm.converters.onnx.graph import GraphBuilder
from edgeglm.converters.onnx.ops import make_rms_norm
from edgeglm.errors import UnsupportedArchitectureError

# q_a_layernorm and kv_a_layernorm: transformers (and DeepSeek's reference code) build
# them with RMSNorm's default epsilon, not config.rms_norm_eps; it shows where the
# latent is small (rms 0.015 in the glm4_moe_lite-wide fixture: KL 0.1 with 1e-5).
LATENT_NORM_EPS = 1e-6


class Mla(Glm4Moe):
    """MLA attention; the MoE feed-forward is Glm4Moe's, unchanged."""

    rotary_interleaved = True

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        c = self.cfg
        self.rope = int(c.need("qk_rope_head_dim"))
        self.nope = int(c.need("qk_nope_head_dim"))
        self.v_dim = int(c.need("v_head_dim"))
        self.kv_lora = int(c.need("kv_lora_rank"))
        q_lora = c.get("q_lora_rank", default=None)
        self.q_lora = None if q_lora is None else int(q_lora)
        if not bool(c.get("rope_interleave", default=True)):
            raise UnsupportedArchitectureError(
                f"{c.where}: rope_interleave false (half-split MLA rotary) is not supported "
                "by the ONNX converter"
            )
        # Cached v channels before the latent: k_rot's place, or what a subclass needs.
        self.lead = max(self.rope, self.spare_channels(c))
        # The cache and GQA see one KV head of lead + kv_lora channels, rotary on the first rope.
        self.spec = dataclasses.replace(
            self.spec, n_kv_head=1, head_dim=self.lead + self.kv_lora, rotary_dim=self.rope
        )

    def spare_channels(self, c: Config) -> int:
        """Cached v channels a subclass fills before the latent (GLM-5: its indexer keys)."""
        return 0

    # -- weights, with kv_b_proj absorbed -----------------------------------------

    def _absorbed_q(self, p: str, w_uk: F32Array) -> F32Array:
        """q_b_proj (q_proj without a q LoRA) with W_UK folded in: per head the rope rows,
        then W_UK_h^T times the nope rows; [heads x (rope + kv_lora), q_in]."""
        s, qk = self.spec, self.rope + self.nope
        name = p + ("q_b_proj.weight" if self.q_lora else "q_proj.weight")
        w = self.take(name, (s.n_head * qk, self.q_lora or s.hidden)).reshape(s.n_head, qk, -1)
        out = np.empty((s.n_head, self.rope + self.kv_lora, w.shape[-1]), np.float32)
        for h in range(s.n_head):  # float64 products, rounded once
            out[h, : self.rope] = w[h, self.nope :]
            out[h, self.rope :] = w_uk[h].T.astype(np.float64) @ w[h, : self.nope]
        return out.reshape(-1, w.shape[-1])

    def _absorbed_o(self, p: str, w_uv: F32Array) -> F32Array:
        """o_proj with W_UV folded in: [hidden, heads x kv_lora], reading each head's
        attended latent."""
        s = self.spec
        wo = self.take(p + "o_proj.weight", (s.hidden, s.n_head * self.v_dim))
        wo = wo.reshape(s.hidden, s.n_head, self.v_dim)
        out = np.empty((s.hidden, s.n_head, self.kv_lora), np.float32)
        for h in range(s.n_head):
            out[:, h] = wo[:, h].astype(np.float64) @ w_uv[h]
        return out.reshape(s.hidden, -1)

    # -- the graph -------------------------------------------------------------

    def make_attention(self, g: GraphBuilder, i: int, x32: str) -> str:
        """x --> q_a --> norm --> q_b.W_UK (per head [q_rot | q_nope W_UK]) --> [pad] --> q
        x --> kv_a --> Split --> latent --> norm --+
                           \\-> k_rot ------------ Concat --> [pad] --> k (v: k, or a subclass's)
        q, k, v --> GQA (1 KV head, rotary on the first rope channels)
            --> each head's last kv_lora channels --> W_UV.o_proj --> out
        """
        s, name, c = self.spec, f"/model/layers.{i}/attn", self.prec.compute
        p = f"model.layers.{i}.self_attn."
        d, width = s.head_dim, self.rope + self.kv_lora
        wb = self.take(p + "kv_b_proj.weight", (s.n_head * (self.nope + self.v_dim), self.kv_lora))
        wb = wb.reshape(s.n_head, self.nope + self.v_dim, self.kv_lora)
        x = g.cast(x32, c, f"{name}/input", have=np.float32)
        q_in = self.make_q_latent(g, i, x32)
        q = self.linear(g, f"{name}/q_b_proj", q_in, self._absorbed_q(p, wb[:, : self.nope]),
                        None, p + "q_b_proj.absorbed")  # fmt: skip
        q = self._pad(g, f"{name}/q", q, s.n_head, width)

        kv_a = p + "kv_a_proj_with_mqa."
        wa = self.take(kv_a + "weight", (self.kv_lora + self.rope, s.hidden))
        ba = self.take(kv_a + "bias", (self.kv_lora + self.rope,)) if self.attention_bias else None
        kv = self.linear(g, f"{name}/kv_a_proj", x, wa, ba, kv_a + "weight")
        latent, k_rot = g.node(
            "Split", [kv, g.const([self.kv_lora, self.rope])], f"{name}/kv_a_split", n_out=2,
            axis=-1,
        )  # fmt: skip
        latent32 = g.cast(latent, np.float32, f"{name}/kv_a_layernorm/input", have=c)
        latent32 = self._latent_norm(g, f"{name}/kv_a_layernorm", latent32,
                                     p + "kv_a_layernorm.weight", self.kv_lora)  # fmt: skip
        latent = g.cast(latent32, c, f"{name}/kv_a_layernorm/output", have=np.float32)
        k = g.one("Concat", [k_rot, latent], f"{name}/k", axis=-1)
        k = self._pad(g, f"{name}/k", k, 1, width)
        v = self.make_value(g, i, x32, q_in, k, latent)
        attn = make_group_query_attention(
            g, f"{name}/gqa", i, s, self.attention_inputs, (q, k, v), interleaved=True,
            scale=(self.rope + self.nope) ** -0.5, bias=self.make_attention_bias(g, i, x32, q_in),
        )  # fmt: skip
        heads = g.one("Reshape", [attn, g.const([0, 0, s.n_head, d])], f"{name}/heads")
        ctx = g.one("Slice", [heads, g.const([self.lead]), g.const([d]), g.const([-1])],
                    f"{name}/latent_out")  # fmt: skip
        ctx = g.one("Reshape", [ctx, g.const([0, 0, s.n_head * self.kv_lora])],
                    f"{name}/latent_out")  # fmt: skip
        wo = self._absorbed_o(p, wb[:, self.nope :])
        bo = self.take(p + "o_proj.bias", (s.hidden,)) if self.attention_bias else None
        o = self.linear(g, f"{name}/o_proj", ctx, wo, bo, p + "o_proj.absorbed")
        return g.cast(o, np.float32, f"{name}/output", have=c)

    def make_q_latent(self, g: GraphBuilder, i: int, x32: str) -> str:
        """q_a_layernorm(q_a_proj(x)) in compute precision (x itself without a q LoRA)."""
        c, name, p = self.prec.compute, f"/model/layers.{i}/attn", f"model.layers.{i}.self_attn."
        x = g.cast(x32, c, f"{name}/q_input", have=np.float32)
        if self.q_lora is None:
            return x
        w = self.take(p + "q_a_proj.weight", (self.q_lora, self.spec.hidden))
        b = self.take(p + "q_a_proj.bias", (self.q_lora,)) if self.attention_bias else None
        qa = self.linear(g, f"{name}/q_a_proj", x, w, b, p + "q_a_proj.weight")
        qa32 = g.cast(qa, np.float32, f"{name}/q_a_layernorm/input", have=c)
        qa32 = self._latent_norm(g, f"{name}/q_a_layernorm", qa32, p + "q_a_layernorm.weight",
                                 self.q_lora)  # fmt: skip
        return g.cast(qa32, c, f"{name}/q_a_layernorm/output", have=np.float32)

    def make_value(
        self, g: GraphBuilder, i: int, x32: str, q_latent: str, k: str, latent: str
    ) -> str:
        """v [batch, seq, lead + kv_lora], the latent last: k itself when it has that layout
        (plain MLA), else the latent after ``lead`` zeros."""
        if self.lead == self.rope:
            return k
        pads = g.const([self.lead, 0])
        return g.one("Pad", [latent, pads, "", g.const([-1])], f"/model/layers.{i}/attn/v")

    def make_attention_bias(self, g: GraphBuilder, i: int, x32: str, q_latent: str) -> str:
        """An additive mask for GQA, or "" (plain MLA: causal only)."""
        return ""

    def _latent_norm(self, g: GraphBuilder, name: str, x32: str, wname: str, size: int) -> str:
        return make_rms_norm(g, name, x32, self.take(wname, (size,)), LATENT_NORM_EPS, wname)

    def _pad(self, g: GraphBuilder, name: str, x: str, heads: int, width: int) -> str:
        """[batch, seq, heads x width] --> [batch, seq, heads x head_dim], zeros after each head."""
        d = self.spec.head_dim
        if width == d:
            return x
        x = g.one("Reshape", [x, g.const([0, 0, heads, width])], f"{name}/heads")
        x = g.one("Pad", [x, g.const([0, d - width]), "", g.const([-1])], name)
        return g.one("Reshape", [x, g.const([0, 0, heads * d])], f"{name}/flat")
