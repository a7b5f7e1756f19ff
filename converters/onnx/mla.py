"""Multi-head latent attention (MLA, DeepSeek-V2 style) on ORT's GroupQueryAttention.

GLM-4.7-Flash and GLM-5.x compress k/v into one latent per token; transformers
expands it back into per-head keys and values before attention. We do the
same and hand GQA the expanded heads, so the cache keeps the runtime's
``[batch, kv_heads, seq, head_size]`` layout (kv_heads = heads, no latent
cache: more KV memory, but the onnxruntime-genai IO and in-place cache work
unchanged). Each cached head is ``H`` channels wide::

    q head:  [ q_rot (rope) | q_nope | 0 ... ]      rows of q_b_proj reordered, zero rows added
    k head:  [ k_rot (rope) | k_nope | 0 ... ]      k_rot shared by every head
    v head:  [ v | extra | 0 ... ]                  o_proj reads only v (zero columns elsewhere)

Rotary goes first so GQA's fused rotary (first ``rope`` channels, adjacent
pairs, as transformers' ``apply_rotary_pos_emb_interleave``) applies to it;
a consistent channel order in q and k leaves every q.k unchanged, and zero
channels add nothing. ``extra`` is room a subclass may use to cache more per
token (GLM-5's indexer keys); the softmax scale stays (nope + rope)^-0.5.
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
from edgeglm.errors import UnsupportedArchitectureError


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
        self.extra_v_channels = self.extra_channels(c)
        self.cache_head = max(self.rope + self.nope, self.v_dim + self.extra_v_channels)
        # The cache and GQA see n_head heads of cache_head channels, rotary on the first rope.
        self.spec = dataclasses.replace(
            self.spec,
            n_kv_head=self.spec.n_head,
            head_dim=self.cache_head,
            rotary_dim=self.rope,
        )

    def extra_channels(self, c: Config) -> int:
        """Channels per cached v head after v itself (GLM-5 keeps its indexer keys there)."""
        return 0

    # -- weights, rearranged for the padded head layout -----------------------

    def _per_head(self, w: F32Array, parts: list[tuple[int, int]]) -> F32Array:
        """Rows of ``w`` (heads x per-head rows) as [rows a:b ... | zeros] per cached head."""
        n_head = self.spec.n_head
        heads = w.reshape(n_head, -1, w.shape[-1])
        out = np.zeros((n_head, self.cache_head, w.shape[-1]), np.float32)
        at = 0
        for a, b in parts:
            out[:, at : at + b - a] = heads[:, a:b]
            at += b - a
        return out.reshape(n_head * self.cache_head, w.shape[-1])

    # -- the graph -------------------------------------------------------------

    def make_attention(self, g: GraphBuilder, i: int, x32: str) -> str:
        """x --> q_a --> norm --> q_b (padded heads) ----------------------------> q
        x --> kv_a --> Split --> latent --> norm --> kv_b --> Split --> k_nope --+
                            \\-> k_rot --> Unsqueeze --> Expand(heads) -------- Concat --> k
                                                                 v (+ extra) --> v
        q, k, v --> GQA (rotary on the first rope channels) --> o_proj (zero columns)
        """
        s, name, c = self.spec, f"/model/layers.{i}/attn", self.prec.compute
        p = f"model.layers.{i}.self_attn."
        qk = self.rope + self.nope
        x = g.cast(x32, c, f"{name}/input", have=np.float32)
        q_in = self.make_q_latent(g, i, x32)
        w = self.take(
            p + ("q_b_proj.weight" if self.q_lora else "q_proj.weight"),
            (s.n_head * qk, self.q_lora or s.hidden),
        )
        w = self._per_head(w, [(self.nope, qk), (0, self.nope)])
        q = self.linear(g, f"{name}/q_b_proj", q_in, w, None, p + "q_b_proj.padded")

        kv_a = p + "kv_a_proj_with_mqa."
        wa = self.take(kv_a + "weight", (self.kv_lora + self.rope, s.hidden))
        ba = self.take(kv_a + "bias", (self.kv_lora + self.rope,)) if self.attention_bias else None
        kv = self.linear(g, f"{name}/kv_a_proj", x, wa, ba, kv_a + "weight")
        latent, k_rot = g.node(
            "Split", [kv, g.const([self.kv_lora, self.rope])], f"{name}/kv_a_split", n_out=2,
            axis=-1,
        )  # fmt: skip
        latent32 = g.cast(latent, np.float32, f"{name}/kv_a_layernorm/input", have=c)
        latent32 = self.norm(g, f"{name}/kv_a_layernorm", latent32, p + "kv_a_layernorm.weight",
                             size=self.kv_lora)  # fmt: skip
        latent = g.cast(latent32, c, f"{name}/kv_a_layernorm/output", have=np.float32)
        wb = self.take(p + "kv_b_proj.weight", (s.n_head * (self.nope + self.v_dim), self.kv_lora))
        heads = wb.reshape(s.n_head, self.nope + self.v_dim, self.kv_lora)
        k_rows = heads[:, : self.nope].reshape(-1, self.kv_lora)
        v_rows = heads[:, self.nope :].reshape(-1, self.kv_lora)
        extra = self.make_extra_v(g, i, x32, q_in)
        k_width = self.cache_head - self.rope
        v_width = self.cache_head - (self.extra_v_channels if extra is not None else 0)
        k_nope = self._expanded(g, f"{name}/k_b_proj", latent, k_rows, self.nope, k_width,
                                p + "kv_b_proj.k")  # fmt: skip
        v = self._expanded(g, f"{name}/v_b_proj", latent, v_rows, self.v_dim, v_width,
                           p + "kv_b_proj.v")  # fmt: skip
        k_rot = self._all_heads(g, f"{name}/k_rot", k_rot)
        k = g.one("Concat", [k_rot, k_nope], f"{name}/k", axis=-1)
        if extra is not None:
            v = g.one("Concat", [v, self._all_heads(g, f"{name}/extra", extra)], f"{name}/v",
                      axis=-1)  # fmt: skip
        k = g.one("Reshape", [k, g.const([0, 0, -1])], f"{name}/k")
        v = g.one("Reshape", [v, g.const([0, 0, -1])], f"{name}/v")
        attn = make_group_query_attention(
            g, f"{name}/gqa", i, s, self.attention_inputs, (q, k, v), interleaved=True,
            scale=qk**-0.5, bias=self.make_attention_bias(g, i, x32, q_in),
        )  # fmt: skip
        wo = self.take(p + "o_proj.weight", (s.hidden, s.n_head * self.v_dim))
        wo_t = self._per_head(wo.T.copy(), [(0, self.v_dim)]).T
        bo = self.take(p + "o_proj.bias", (s.hidden,)) if self.attention_bias else None
        o = self.linear(g, f"{name}/o_proj", attn, wo_t, bo, p + "o_proj.padded")
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
        qa32 = self.norm(g, f"{name}/q_a_layernorm", qa32, p + "q_a_layernorm.weight",
                         size=self.q_lora)  # fmt: skip
        return g.cast(qa32, c, f"{name}/q_a_layernorm/output", have=np.float32)

    def make_extra_v(self, g: GraphBuilder, i: int, x32: str, q_latent: str) -> str | None:
        """[batch, seq, extra_v_channels] to cache beside v, or None (plain MLA)."""
        return None

    def make_attention_bias(self, g: GraphBuilder, i: int, x32: str, q_latent: str) -> str:
        """An additive mask for GQA, or "" (plain MLA: causal only)."""
        return ""

    def _expanded(
        self, g: GraphBuilder, name: str, x: str, rows: F32Array, used: int, width: int, wname: str
    ) -> str:
        """x @ rows.T as [batch, seq, heads, width], each head's ``used`` rows then zeros."""
        heads = self._per_head(rows, [(0, used)]).reshape(self.spec.n_head, self.cache_head, -1)
        w: F32Array = heads[:, :width].reshape(-1, rows.shape[-1])
        y = self.linear(g, name, x, w, None, wname)
        return g.one("Reshape", [y, g.const([0, 0, self.spec.n_head, width])], name)

    def _all_heads(self, g: GraphBuilder, name: str, x: str) -> str:
        """[batch, seq, d] --> [batch, seq, heads, d]: one vector shared by every head."""
        one = g.one("Unsqueeze", [x, g.const([2])], name)
        return g.one("Expand", [one, g.const([1, 1, self.spec.n_head, 1])], name)
