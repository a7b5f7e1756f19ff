"""Glm4MoeForCausalLM (model_type ``glm4_moe``): GLM-4.5, 4.6, 4.7.

Differences from dense GLM-4: rotary on the two halves of the rotary
channels (NeoX style, not adjacent pairs), per-head RMS norms on q and k,
separate gate/up projections, and in the layers mlp_layer_types calls "sparse"
(from ``first_k_dense_replace`` on, for GLM-4.5) a sigmoid-routed mixture of
experts with a shared expert. No sandwich norms.
The NextN/MTP block after the trunk (model.layers.N) is for speculative
decoding; transformers ignores it and so do we.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeglm.converters.onnx.base import F32Array, Family
from edgeglm.converters.onnx.graph import GraphBuilder
from edgeglm.converters.onnx.moe import Routing, make_router, make_sparse_experts
from edgeglm.converters.onnx.registry import register


@register("Glm4MoeForCausalLM")
class Glm4Moe(Family):
    rotary_interleaved = False

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        c = self.cfg
        self.routing = Routing.from_config(c)
        self.moe_ff = int(c.need("moe_intermediate_size"))
        self.n_shared = int(c.need("n_shared_experts"))
        # Per layer, as transformers builds it: any mix of dense and MoE layers works
        # here (llama.cpp's graphs take only dense ones first, then MoE).
        self.mlp_types = c.mlp_layer_types()
        self.qk_norm = bool(c.get("use_qk_norm", default=False))

    def expected_tensors(self) -> list[str]:
        mtp = tuple(f"model.layers.{i}." for i in range(self.spec.n_layer, self.spec.n_layer + 8))
        return [n for n in super().expected_tensors() if not n.startswith(mtp)]

    def make_qkv(self, g: GraphBuilder, i: int, x: str) -> str | tuple[str, str, str]:
        """Packed q|k|v, split for the per-head q/k RMS norms (run before rotary, in GQA)::

        x --> qkv_proj --> Split --> q --> Reshape(heads) --> RMSNorm --> Reshape --> q'
                                 \\-> k --> (same, k_norm) ------------------------> k'
                                 \\-> v ------------------------------------------> v
        """
        qkv = super().make_qkv(g, i, x)
        if not self.qk_norm:
            return qkv
        s, name = self.spec, f"/model/layers.{i}/attn"
        assert isinstance(qkv, str)
        q, k, v = g.node(
            "Split",
            [qkv, g.const([s.q_size, s.kv_size, s.kv_size])],
            f"{name}/qkv_split",
            n_out=3,
            axis=-1,
        )
        return self._head_norm(g, i, "q", q), self._head_norm(g, i, "k", k), v

    def _head_norm(self, g: GraphBuilder, i: int, which: str, x: str) -> str:
        s, name = self.spec, f"/model/layers.{i}/attn/{which}_norm"
        w = f"model.layers.{i}.self_attn.{which}_norm.weight"
        heads = g.one("Reshape", [x, g.const([0, 0, -1, s.head_dim])], f"{name}/heads")
        x32 = g.cast(heads, np.float32, f"{name}/input", have=self.prec.compute)
        y = self.norm(g, name, x32, w, size=s.head_dim)
        y = g.cast(y, self.prec.compute, f"{name}/output", have=np.float32)
        return g.one("Reshape", [y, g.const([0, 0, -1])], f"{name}/flat")

    def make_mlp(self, g: GraphBuilder, i: int, x32: str) -> str:
        p, name = f"model.layers.{i}.mlp.", f"/model/layers.{i}/mlp"
        if self.mlp_types[i] == "dense":
            return self._dense(g, name, x32, p, self.spec.intermediate)
        return self._moe(g, i, x32)

    def _dense(self, g: GraphBuilder, name: str, x32: str, p: str, ff: int) -> str:
        h = self.spec.hidden
        gate_up = np.concatenate(
            [self.take(p + "gate_proj.weight", (ff, h)), self.take(p + "up_proj.weight", (ff, h))]
        )
        down = self.take(p + "down_proj.weight", (h, ff))
        return self.make_swiglu_mlp(g, name, x32, gate_up, down, p)

    def _moe(self, g: GraphBuilder, i: int, x32: str) -> str:
        """Routed experts (sparse: only the chosen ones run, converters/onnx/moe.py)
        plus the shared experts (dense, every token)::

            x --> router --> weights --> MoE/QMoE(experts) --+--> out
              \\--> shared_experts (SwiGLU MLP) --------------/
        """
        name, p = f"/model/layers.{i}/moe", f"model.layers.{i}.mlp."
        routed = self.make_moe_block(g, name, x32, p)
        if not self.n_shared:
            return routed
        shared_ff = self.moe_ff * self.n_shared
        shared = self._dense(g, f"{name}/shared_experts", x32, p + "shared_experts.", shared_ff)
        return g.one("Add", [routed, shared], f"{name}/combine")

    def make_moe_block(self, g: GraphBuilder, name: str, x32: str, p: str) -> str:
        """The routed half of a DeepSeek-style MoE layer whose tensors sit under ``p``
        (``p + "gate.weight"``, ``p + "experts.{e}.gate_proj.weight"``, ...); float32 in/out.
        GLM-4.7-Flash and GLM-5.x lay their MoE layers out the same way."""
        r, h, ff = self.routing, self.spec.hidden, self.moe_ff
        gate = self.take(p + "gate.weight", (r.n_expert, h))
        bias_name = p + "gate.e_score_correction_bias"
        bias = self.take(bias_name, (r.n_expert,)) if bias_name in self.ckpt else None
        weights = make_router(g, name, x32, gate, bias, r, p + "gate")

        def expert(e: int) -> tuple[F32Array, F32Array, F32Array]:
            q = f"{p}experts.{e}."
            return (
                self.take(q + "gate_proj.weight", (ff, h)),
                self.take(q + "up_proj.weight", (ff, h)),
                self.take(q + "down_proj.weight", (h, ff)),
            )

        return make_sparse_experts(
            g, f"{name}/experts", x32, weights, expert, r, ff, h, self.prec, p + "experts"
        )
