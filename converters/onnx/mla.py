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
any other (MatMulNBits at int4/int8; per-head 3-D MatMuls would stay float32
there: larger and slower, benchmarks/onnx_mla_cache.py). Attention is then
MQA over the latent, one KV head of ``D = kv_lora + lead`` channels, where
``lead`` is ``rope`` (or more, when a subclass caches more per token)::

    q head:  [ q_rot (rope) | W_UK_h^T q_nope (kv_lora) | 0 ... ]   H heads
    k:       [ k_rot (rope) | c (kv_lora)               | 0 ... ]   1 head
    v:       [ spare (lead)                             | c     ]   1 head

so the cache holds 2 x D values per token and layer (plain MLA: v is k
itself, its spare channels the unrotated k_rot) instead of H heads of
per-head keys and values, in the runtime's ``[batch, 1, seq, D]`` layout
(genai_config: num_key_value_heads 1, head_size D). Rotary goes first, on
adjacent pairs as transformers' ``apply_rotary_pos_emb_interleave``; zero
channels add nothing to q.k. Each head's output is ``sum_t p_t v_t``: its
last kv_lora channels are the attended latent, which the absorbed o_proj
reads. ``spare`` is room a subclass may fill (GLM-5 caches its indexer keys
there). The softmax scale stays (nope + rope)^-0.5.

A one-head GroupQueryAttention keeps the cache (in place, rotary fused);
the heads attend to it through an If: a prompt (nothing cached) by GQA with
one KV head, which skips the causal half; a later step by one MatMul with
the heads folded into its rows, which reads the cache once where ORT's CPU
GQA reads it once per head (_attend).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from onnx import helper

from edgeglm.checkpoint.config import Config
from edgeglm.converters.onnx.attention import (
    PRESENT_KEY,
    PRESENT_VALUE,
    make_group_query_attention,
)
from edgeglm.converters.onnx.base import F32Array
from edgeglm.converters.onnx.glm4_moe import Glm4Moe
from edgeglm.converters.onnx.graph import GraphBuilder
from edgeglm.converters.onnx.ops import make_rms_norm
from edgeglm.errors import UnsupportedArchitectureError

# q_a_layernorm and kv_a_layernorm: transformers (and DeepSeek's reference code) build
# them with RMSNorm's default epsilon, not config.rms_norm_eps; it shows where the
# latent is small (rms 0.015 in the glm4_moe_lite-wide fixture: KL 0.1 with 1e-5).
LATENT_NORM_EPS = 1e-6
MASKED = float(np.finfo(np.float32).min)  # transformers' masked value


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
        self._pos: dict[str, str] = {}
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
        k, v --> GQA (one head: writes the cache)
        q, k, v, cache --> _attend (every head) --> last kv_lora channels --> W_UV.o_proj --> out
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
        bias = self.make_attention_bias(g, i, x32, q_in)
        # GQA writes k (rotated) and v into the cache, in place; its own one-head
        # attention (q = k) goes unused: the heads attend in _attend.
        one_head = dataclasses.replace(s, n_head=1)
        make_group_query_attention(
            g, f"{name}/gqa", i, one_head, self.attention_inputs, (k, k, v), interleaved=True,
            scale=(self.rope + self.nope) ** -0.5,
        )  # fmt: skip
        heads = self._attend(g, i, (q, k, v), bias)
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
        """An additive float32 mask [batch, seq, total] on top of the causal one, or ""
        (plain MLA: causal only)."""
        return ""

    def _attend(self, g: GraphBuilder, i: int, qkv: tuple[str, str, str], bias: str) -> str:
        """Every head's attention over the cache, [batch, seq, heads, D], by the kernel
        that suits the step::

            past == 0 (a prompt) --If--> then: GroupQueryAttention (heads over 1 KV head,
                                               causal blocks skipped; no past)
                                   \\--> else: _mqa (decode: the cache read once)

        ORT's CPU GroupQueryAttention reads a shared KV head once per query head: a step
        after 4k tokens ran 10 tok/s against _mqa's 23 (GLM-4.7-Flash's attention, int4,
        one thread), but it skips the causal half of a prompt (81 prompt tok/s against
        _mqa's full MatMul's 47). Its present outputs in ``then`` are copies, dropped: the
        cache is the one-head GQA's, outside.
        """
        name, pos = f"/model/layers.{i}/attn/attend", self._positions(g)
        first = g.one("Equal", [pos["past"], g.const([0])], f"{name}/first")
        prompt = self._branch(g, f"{name}/prompt", lambda: self._gqa_heads(g, i, qkv, bias))
        step = self._branch(g, f"{name}/step", lambda: self._mqa(g, i, qkv[0], bias))
        return g.one("If", [first], name, then_branch=prompt, else_branch=step)

    def _gqa_heads(self, g: GraphBuilder, i: int, qkv: tuple[str, str, str], bias: str) -> str:
        """GQA over the new tokens alone (no past), every head, [batch, seq, heads, D]."""
        s, c, ai = self.spec, self.prec.compute, self.attention_inputs
        name = f"/model/layers.{i}/attn/attend/prompt"
        extra = []
        if bias:  # [b, s, T] --> [b, heads, s, T]
            bias = g.one("Unsqueeze", [bias, g.const([1])], f"{name}/bias")
            bias = g.one("Expand", [bias, g.const([1, s.n_head, 1, 1])], f"{name}/bias")
            extra = ["", g.cast(bias, c, f"{name}/bias", have=np.float32)]
        out = g.node(
            "GroupQueryAttention", [*qkv, "", "", ai.seqlens_k, ai.total_length, ai.cos, ai.sin,
                                    *extra],
            name, domain="com.microsoft", n_out=3, num_heads=s.n_head, kv_num_heads=1,
            do_rotary=1, rotary_interleaved=1, scale=float((self.rope + self.nope) ** -0.5),
        )[0]  # fmt: skip
        return g.one("Reshape", [out, g.const([0, 0, s.n_head, s.head_dim])], f"{name}/heads")

    def _branch(self, g: GraphBuilder, name: str, make: Callable[[], str]) -> onnx.GraphProto:
        """The nodes ``make`` adds, as an If branch whose one output is what it returns
        (constants and weights stay in the main graph, read from the outer scope)."""
        outer, g.nodes = g.nodes, []
        try:
            out = make()
            nodes = g.nodes
        finally:
            g.nodes = outer
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(self.prec.compute))
        return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(out, elem, None)])

    def _mqa(self, g: GraphBuilder, i: int, q: str, bias: str) -> str:
        """Every head against the one cached head, heads folded into the rows of one
        MatMul, so the cache is read once per step::

            q --> RotaryEmbedding --> * scale --> [b, 1, s*heads, D] --MatMul-- present k^T
              --> + causal (+ bias) --> Softmax (float32) --MatMul-- present v --> [b, s, heads, D]
        """
        s, c, name = self.spec, self.prec.compute, f"/model/layers.{i}/attn/attend/step"
        h, d, ai, pos = s.n_head, s.head_dim, self.attention_inputs, self._positions(g)
        q = g.one("RotaryEmbedding", [q, pos["past"], ai.cos, ai.sin], f"{name}/q_rotary",
                  domain="com.microsoft", interleaved=1, num_heads=h,
                  rotary_embedding_dim=self.rope)  # fmt: skip
        q = g.one("Mul", [q, g.const((self.rope + self.nope) ** -0.5, c)], f"{name}/q_scaled")
        q = g.one("Reshape", [q, g.const([0, 1, -1, d])], f"{name}/q_rows")
        # Shared-buffer mode binds the whole preallocated cache: its first ``total`` rows.
        k, v = (
            g.one("Slice", [io.format(i), g.const([0]), pos["total"], g.const([2])], f"{name}/{n}")
            for io, n in ((PRESENT_KEY, "k"), (PRESENT_VALUE, "v"))
        )
        k_t = g.one("Transpose", [k], f"{name}/k_t", perm=[0, 1, 3, 2])
        scores = g.one("MatMul", [q, k_t], f"{name}/scores")  # [b, 1, s*heads, total]
        scores = g.cast(scores, np.float32, f"{name}/scores", have=c)
        scores = g.one("Reshape", [scores, g.const([0, -1, h, 0])], f"{name}/scores_heads")
        mask = g.one("Unsqueeze", [pos["causal"], g.const([1])], f"{name}/causal")  # [s, 1, T]
        if bias:
            bias = g.one("Unsqueeze", [bias, g.const([2])], f"{name}/bias")  # [b, s, 1, T]
            mask = g.one("Add", [mask, bias], f"{name}/mask")
        scores = g.one("Add", [scores, mask], f"{name}/masked")
        probs = g.one("Softmax", [scores], f"{name}/probs", axis=-1)
        probs = g.cast(probs, c, f"{name}/probs", have=np.float32)
        probs = g.one("Reshape", [probs, g.const([0, 1, -1, 0])], f"{name}/probs_rows")
        out = g.one("MatMul", [probs, v], f"{name}/out")  # [b, 1, s*heads, D]
        return g.one("Reshape", [out, g.const([0, -1, h, d])], f"{name}/heads")

    def _positions(self, g: GraphBuilder) -> dict[str, str]:
        """Shared by every layer: total and past lengths [1] (int64) and the causal mask
        [seq, total] (float32: 0, or float32 min after each query's position)."""
        if self._pos:
            return self._pos
        name = "/model/positions"
        seq = g.one("Gather", [g.one("Shape", ["input_ids"], f"{name}/seq"), g.const([1])],
                    f"{name}/seq", axis=0)  # fmt: skip
        total = g.one("Gather", [g.one("Shape", ["attention_mask"], f"{name}/total"),
                                 g.const([1])], f"{name}/total", axis=0)  # fmt: skip
        past = g.one("Sub", [total, seq], f"{name}/past")
        q_pos = g.one("Range", [g.one("Squeeze", [past], f"{name}/q_start"),
                                g.one("Squeeze", [total], f"{name}/limit"), g.const(1)],
                      f"{name}/q_pos")  # fmt: skip
        k_pos = g.one("Range", [g.const(0), g.one("Squeeze", [total], f"{name}/k_limit"),
                                g.const(1)], f"{name}/k_pos")  # fmt: skip
        later = g.one("Greater", [g.one("Unsqueeze", [k_pos, g.const([0])], f"{name}/k_row"),
                                  g.one("Unsqueeze", [q_pos, g.const([1])], f"{name}/q_col")],
                      f"{name}/later")  # fmt: skip
        causal = g.one("Where", [later, g.const(MASKED, np.float32), g.const(0.0, np.float32)],
                       f"{name}/causal")  # fmt: skip
        self._pos = {"total": total, "past": past, "causal": causal}
        return self._pos

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
