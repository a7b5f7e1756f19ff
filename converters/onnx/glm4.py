"""Glm4ForCausalLM (model_type ``glm4``): GLM-4-0414, GLM-Z1.

GLM blocks plus "sandwich" norms: an RMSNorm on the attention output and one
on the MLP output, each applied before the residual add.
"""

from __future__ import annotations

from edgeglm.converters.onnx.base import Family
from edgeglm.converters.onnx.graph import GraphBuilder
from edgeglm.converters.onnx.registry import register


@register("Glm4ForCausalLM")
class Glm4(Family):
    rotary_interleaved = True

    def make_post_attention(self, g: GraphBuilder, i: int, x: str) -> str:
        name = f"/model/layers.{i}/post_self_attn_layernorm"
        return self.norm(g, name, x, f"model.layers.{i}.post_self_attn_layernorm.weight")

    def make_post_mlp(self, g: GraphBuilder, i: int, x: str) -> str:
        name = f"/model/layers.{i}/post_mlp_layernorm"
        return self.norm(g, name, x, f"model.layers.{i}.post_mlp_layernorm.weight")
