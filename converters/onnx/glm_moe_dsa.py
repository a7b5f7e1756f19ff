"""GlmMoeDsaForCausalLM (model_type ``glm_moe_dsa``): GLM-5.x.

GLM-4.7-Flash's MLA (mla.py: the latent in the cache, one KV head) plus
DeepSeek sparse attention (DSA), as transformers computes it: a light indexer
scores every cached token for each query, and attention sees only the
``index_topk`` best-scoring ones::

    q_latent --> wq_b --> RotaryEmbedding ---------------------+
    x --> wk --> LayerNorm --> RotaryEmbedding --> k_new       |
    past indexer keys (v's first index_head_dim channels) + k_new --MatMul --> Relu
    x --> weights_proj * heads^-0.5 ------------------------------MatMul --> index scores
    index scores + causal --> TopK(min(index_topk, total)) --> ScatterElements
        --> bias (0 at chosen tokens, float32 min elsewhere) --> the heads' mask (mla.py)

The indexer keys live in the KV cache, in the spare channels mla.py leaves
before the latent in v: the one cached head is ``index_head_dim + kv_lora``
wide (k: [k_rot | latent | zeros], v: [indexer keys | latent]), so the
runtime's cache IO is unchanged. ``indexer_types`` "shared" layers reuse the
previous full layer's selection and cache zeros there. While the text is no
longer than ``index_topk`` every token is chosen and the model is dense MLA;
past it, the selection is exact, ties broken by ORT's TopK (lower index
first).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeglm.checkpoint.config import Config
from edgeglm.converters.onnx.attention import PAST_VALUE
from edgeglm.converters.onnx.base import F32Array
from edgeglm.converters.onnx.graph import GraphBuilder
from edgeglm.converters.onnx.mla import MASKED, Mla
from edgeglm.converters.onnx.ops import make_linear
from edgeglm.converters.onnx.quant import Precision, WeightFormat
from edgeglm.converters.onnx.registry import register
from edgeglm.errors import CheckpointError, UnsupportedArchitectureError

_F32 = WeightFormat.F32
# The indexer picks tokens: float32 throughout, like the router that picks experts.
INDEXER = Precision("indexer", np.float32, _F32, _F32, _F32)


@register("GlmMoeDsaForCausalLM")
class GlmMoeDsa(Mla):
    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        c = self.cfg
        self.index_dim = int(c.need("index_head_dim"))
        self.index_heads = int(c.need("index_n_heads"))
        self.index_topk = int(c.need("index_topk"))
        self.types = c.indexer_types()  # as GlmMoeDsaConfig derives them
        layer_types = c.get("layer_types", default=None) or []
        if set(layer_types) - {"indexed_attention"}:
            raise UnsupportedArchitectureError(
                f"{c.where}: layer_types {sorted(set(layer_types))}: the ONNX converter supports "
                "indexed_attention only"
            )
        if self.index_dim < self.rope:
            raise CheckpointError(f"{c.where}: index_head_dim {self.index_dim} < qk_rope_head_dim")
        self._keys: str | None = None  # this layer's new indexer keys
        self._bias: str | None = None  # the last full layer's selection

    def spare_channels(self, c: Config) -> int:
        return int(c.need("index_head_dim"))

    def expected_tensors(self) -> list[str]:
        """A shared layer has no indexer in transformers: any weights for one go unread."""
        shared = tuple(
            f"model.layers.{i}.self_attn.indexer." for i, t in enumerate(self.types) if t != "full"
        )
        return [n for n in super().expected_tensors() if not n.startswith(shared)]

    def make_value(
        self, g: GraphBuilder, i: int, x32: str, q_latent: str, k: str, latent: str
    ) -> str:
        """A full layer's v: [its new indexer keys | latent]."""
        if self.types[i] != "full":
            return super().make_value(g, i, x32, q_latent, k, latent)
        name, p = f"/model/layers.{i}/indexer", f"model.layers.{i}.self_attn.indexer."
        w = self.take(p + "wk.weight", (self.index_dim, self.spec.hidden))
        keys = self._linear(g, f"{name}/wk", x32, w, p + "wk.weight")
        gamma = self.take(p + "k_norm.weight", (self.index_dim,))
        beta = self.take(p + "k_norm.bias", (self.index_dim,))
        keys = g.one("LayerNormalization",
                     [keys, g.weight(p + "k_norm.weight", gamma),
                      g.weight(p + "k_norm.bias", beta)],
                     f"{name}/k_norm", axis=-1, epsilon=1e-6)  # fmt: skip
        self._keys = self._rotary(g, f"{name}/k_rotary", keys, 1)
        cached = g.cast(self._keys, self.prec.compute, f"{name}/k_cache", have=np.float32)
        return g.one("Concat", [cached, latent], f"/model/layers.{i}/attn/v", axis=-1)

    def make_attention_bias(self, g: GraphBuilder, i: int, x32: str, q_latent: str) -> str:
        if self.types[i] != "full":
            assert self._bias is not None
            return self._bias
        assert self._keys is not None
        name, p = f"/model/layers.{i}/indexer", f"model.layers.{i}.self_attn.indexer."
        pos = self._positions(g)
        h, d = self.index_heads, self.index_dim
        q_in = g.cast(q_latent, np.float32, f"{name}/q_input", have=self.prec.compute)
        w = self.take(p + "wq_b.weight", (h * d, self.q_lora or self.spec.hidden))
        q = self._rotary(g, f"{name}/q_rotary", self._linear(g, f"{name}/wq_b", q_in, w,
                                                             p + "wq_b.weight"), h)  # fmt: skip
        q = g.one("Reshape", [q, g.const([0, 0, h, d])], f"{name}/q_heads")
        # Earlier tokens' keys: the first index_dim channels of the cached v (one head).
        past = g.one(
            "Slice",
            [PAST_VALUE.format(i), g.const([0, 0, 0]),
             g.one("Concat", [g.const([1]), pos["past"], g.const([d])], f"{name}/past_ends",
                   axis=0),
             g.const([1, 2, 3])],
            f"{name}/past_keys",
        )  # fmt: skip
        past = g.one("Squeeze", [past, g.const([1])], f"{name}/past_keys")
        past = g.cast(past, np.float32, f"{name}/past_keys", have=self.prec.compute)
        keys = g.one("Concat", [past, self._keys], f"{name}/keys", axis=1)  # [b, total, d]
        keys_t = g.one("Transpose", [keys], f"{name}/keys", perm=[0, 2, 1])
        keys_t = g.one("Unsqueeze", [keys_t, g.const([1])], f"{name}/keys")
        scores = g.one("MatMul", [q, keys_t], f"{name}/scores")  # [b, s, h, total]
        scores = g.one("Mul", [scores, g.const(d**-0.5, np.float32)], f"{name}/scores")
        scores = g.one("Relu", [scores], f"{name}/scores")
        wp = self.take(p + "weights_proj.weight", (h, self.spec.hidden))
        weights = self._linear(g, f"{name}/weights_proj", x32, wp, p + "weights_proj.weight")
        weights = g.one("Mul", [weights, g.const(h**-0.5, np.float32)], f"{name}/weights")
        weights = g.one("Unsqueeze", [weights, g.const([2])], f"{name}/weights")
        index = g.one("MatMul", [weights, scores], f"{name}/index")  # [b, s, 1, total]
        index = g.one("Squeeze", [index, g.const([2])], f"{name}/index")
        index = g.one("Add", [index, pos["causal"]], f"{name}/index")
        _, chosen = g.node("TopK", [index, pos["topk"]], f"{name}/topk", n_out=2, axis=-1)
        blocked = g.one("Mul", [index, g.const(0.0, np.float32)], f"{name}/blocked")
        blocked = g.one("Add", [blocked, g.const(MASKED, np.float32)], f"{name}/blocked")
        zeros = g.one("Mul", [g.cast(chosen, np.float32, f"{name}/zeros", have=np.int64),
                              g.const(0.0, np.float32)], f"{name}/zeros")  # fmt: skip
        self._bias = g.one("ScatterElements", [blocked, chosen, zeros], f"{name}/bias", axis=-1)
        return self._bias  # [b, s, total]

    def _linear(self, g: GraphBuilder, name: str, x32: str, w: F32Array, wname: str) -> str:
        return make_linear(g, name, x32, w, None, _F32, INDEXER, wname)

    def _rotary(self, g: GraphBuilder, name: str, x: str, heads: int) -> str:
        """Rotary on the first rope channels of each head, adjacent pairs, from the past length."""
        pos = self._positions(g)
        return g.one(
            "RotaryEmbedding", [x, pos["past"], pos["cos"], pos["sin"]], name,
            domain="com.microsoft",
            interleaved=1, num_heads=heads, rotary_embedding_dim=self.rope,
        )  # fmt: skip

    def _positions(self, g: GraphBuilder) -> dict[str, str]:
        """Mla's, plus what every indexer shares: the top-k count [1] and float32 rotary
        caches."""
        pos = super()._positions(g)
        if "topk" not in pos:
            name, ai, c = "/model/indexer", self.attention_inputs, self.prec.compute
            pos["topk"] = g.one("Min", [pos["total"], g.const([self.index_topk])], f"{name}/topk")
            pos["cos"] = g.cast(ai.cos, np.float32, f"{name}/cos", have=c)
            pos["sin"] = g.cast(ai.sin, np.float32, f"{name}/sin", have=c)
        return pos
