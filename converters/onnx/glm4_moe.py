"""Glm4MoeForCausalLM (model_type ``glm4_moe``): GLM-4.5, 4.6, 4.7.

Differences from dense GLM-4: rotary on the two halves of the rotary
channels (NeoX style, not adjacent pairs), per-head RMS norms on q and k,
separate gate/up projections, and from ``first_k_dense_replace`` on a
sigmoid-routed mixture of experts with a shared expert. No sandwich norms.
The NextN/MTP block after the trunk (model.layers.N) is for speculative
decoding; transformers ignores it and so do we.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeglm.converters.onnx.base import F32Array, Family
from edgeglm.converters.onnx.graph import GraphBuilder
from edgeglm.converters.onnx.ops import make_linear
from edgeglm.converters.onnx.quant import Precision, WeightFormat
from edgeglm.converters.onnx.registry import register
from edgeglm.errors import UnsupportedArchitectureError

_F32 = WeightFormat.F32
# The router picks experts: float32 at every precision (llama.cpp keeps it F32 too).
ROUTER = Precision("router", np.float32, _F32, _F32, _F32)


@register("Glm4MoeForCausalLM")
class Glm4Moe(Family):
    rotary_interleaved = False
    attention_bias_default = False  # transformers' Glm4MoeConfig default

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        c = self.cfg
        self.n_expert = int(c.need("n_routed_experts"))
        self.top_k = int(c.need("num_experts_per_tok"))
        self.moe_ff = int(c.need("moe_intermediate_size"))
        self.n_shared = int(c.get("n_shared_experts", default=0))
        self.first_moe = int(c.get("first_k_dense_replace", default=0))
        self.scaling = float(c.get("routed_scaling_factor", default=1.0))
        self.norm_topk = bool(c.get("norm_topk_prob", default=True))
        self.qk_norm = bool(c.get("use_qk_norm", default=False))
        n_group, topk_group = int(c.get("n_group", default=1)), int(c.get("topk_group", default=1))
        if n_group > 1 and topk_group < n_group:
            # Group-limited routing drops whole expert groups first; no GLM release uses it.
            raise UnsupportedArchitectureError(
                f"{c.where}: n_group={n_group} with topk_group={topk_group} (group-limited "
                "routing) is not supported by the ONNX converter"
            )

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
        if i < self.first_moe:
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
        """Routed experts, computed densely and weighted by the router::

            x --> router (float32) --> Sigmoid --> +bias --> TopK --> indices
                                   \\------------------------------> GatherElements --> weights
            weights, indices --> ScatterElements --> R [tokens, n_expert] (0 off the top-k)
            out = shared(x) + sum_e R[:, e] * expert_e(x)

        Every expert runs on every token: exact and simple, but decode does
        n_expert / top_k times the expert work a sparse kernel would.
        """
        name, p = f"/model/layers.{i}/moe", f"model.layers.{i}.mlp."
        route = self._router(g, name, x32, p)
        parts = []
        shares = g.node(
            "Split",
            [route, g.const([1] * self.n_expert)],
            f"{name}/route_split",
            n_out=self.n_expert,
            axis=-1,
        )
        for e, share in enumerate(shares):
            y = self._dense(g, f"{name}/experts.{e}", x32, f"{p}experts.{e}.", self.moe_ff)
            parts.append(g.one("Mul", [y, share], f"{name}/experts.{e}/weighted"))
        if self.n_shared:
            shared_ff = self.moe_ff * self.n_shared
            parts.append(
                self._dense(g, f"{name}/shared_experts", x32, p + "shared_experts.", shared_ff)
            )
        return g.one("Sum", parts, f"{name}/combine")

    def _router(self, g: GraphBuilder, name: str, x32: str, p: str) -> str:
        """Dense per-token expert weights, [batch, seq, n_expert], as transformers routes."""
        e, h = self.n_expert, self.spec.hidden
        gate: F32Array = self.take(p + "gate.weight", (e, h))
        bias = self.take(p + "gate.e_score_correction_bias", (e,))
        logits = make_linear(g, f"{name}/router", x32, gate, None, _F32, ROUTER, p + "gate.weight")
        scores = g.one("Sigmoid", [logits], f"{name}/router")
        choice = g.one(
            "Add",
            [scores, g.weight(p + "gate.e_score_correction_bias", bias)],
            f"{name}/router/choice",
        )
        _, idx = g.node("TopK", [choice, g.const([self.top_k])], f"{name}/router", n_out=2, axis=-1)
        w = g.one("GatherElements", [scores, idx], f"{name}/router", axis=-1)
        if self.norm_topk:
            total = g.one("ReduceSum", [w, g.const([-1])], f"{name}/router/norm", keepdims=1)
            total = g.one("Add", [total, g.const(1e-20, np.float32)], f"{name}/router/norm")
            w = g.one("Div", [w, total], f"{name}/router/norm")
        w = g.one("Mul", [w, g.const(self.scaling, np.float32)], f"{name}/router/scale")
        zeros = g.one("Mul", [scores, g.const(0.0, np.float32)], f"{name}/router/zeros")
        return g.one("ScatterElements", [zeros, idx, w], f"{name}/router", axis=-1)
