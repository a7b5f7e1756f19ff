"""Glm4ForCausalLM (model_type ``glm4``): GLM-4-0414, GLM-Z1. llama.cpp arch ``glm4``.

GLM-4 blocks plus "sandwich" norms after attention and after the MLP.
"""

from __future__ import annotations

from typing import ClassVar

from edgeglm.converters.gguf.families.glm import DENSE_GLM_TENSORS, DenseGLM
from edgeglm.converters.gguf.registry import register
from edgeglm.converters.layout import BLOCK_NORMS, Layout, fused_dense_mlp, gqa_attention, norms


@register("Glm4ForCausalLM")
class Glm4(DenseGLM):
    gguf_arch = "glm4"
    layout = Layout(
        attention=(
            BLOCK_NORMS,
            norms("post_self_attn_layernorm", "post_mlp_layernorm"),
            gqa_attention,
        ),
        dense_mlp=fused_dense_mlp,
    )
    tensor_map: ClassVar[dict[str, str]] = {
        **DENSE_GLM_TENSORS,
        "model.layers.{bid}.post_self_attn_layernorm.weight": "blk.{bid}.post_attention_norm.weight",
        "model.layers.{bid}.post_mlp_layernorm.weight": "blk.{bid}.post_ffw_norm.weight",
    }
