"""GlmForCausalLM (model_type ``glm``): GLM-4-9B-chat-hf, GLM-Edge. llama.cpp arch ``chatglm``.

Dense GLM-4 blocks with a fused gate|up projection, kept fused: llama.cpp's
chatglm graph applies SwiGLU to ``ffn_up`` split in halves, exactly as
transformers chunks ``gate_up_proj``. Unlike llama.cpp's converter we write
the config's real context length, RMS epsilon and rope theta.
"""

from __future__ import annotations

from gguf import GGUFWriter

from edgeglm.converters.gguf.base import Family
from edgeglm.converters.gguf.registry import register
from edgeglm.converters.layout import BLOCK_NORMS, Layout, fused_dense_mlp, gqa_attention

DENSE_GLM_TENSORS = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "model.layers.{bid}.input_layernorm.weight": "blk.{bid}.attn_norm.weight",
    "model.layers.{bid}.self_attn.q_proj.weight": "blk.{bid}.attn_q.weight",
    "model.layers.{bid}.self_attn.q_proj.bias": "blk.{bid}.attn_q.bias",
    "model.layers.{bid}.self_attn.k_proj.weight": "blk.{bid}.attn_k.weight",
    "model.layers.{bid}.self_attn.k_proj.bias": "blk.{bid}.attn_k.bias",
    "model.layers.{bid}.self_attn.v_proj.weight": "blk.{bid}.attn_v.weight",
    "model.layers.{bid}.self_attn.v_proj.bias": "blk.{bid}.attn_v.bias",
    "model.layers.{bid}.self_attn.o_proj.weight": "blk.{bid}.attn_output.weight",
    "model.layers.{bid}.post_attention_layernorm.weight": "blk.{bid}.ffn_norm.weight",
    # fused [gate; up], SwiGLU'd by halves in llama.cpp
    "model.layers.{bid}.mlp.gate_up_proj.weight": "blk.{bid}.ffn_up.weight",
    "model.layers.{bid}.mlp.down_proj.weight": "blk.{bid}.ffn_down.weight",
}


class DenseGLM(Family):
    """Shared by glm and glm4: partial rotary on adjacent pairs (llama.cpp rope NORM)."""

    gguf_arch = "chatglm"
    tensor_map = DENSE_GLM_TENSORS

    def write_hparams(self, w: GGUFWriter) -> None:
        super().write_hparams(w)
        w.add_key_length(self.head_dim)
        w.add_value_length(self.head_dim)
        w.add_rope_dimension_count(
            int(self.head_dim * self.cfg.rope_get("partial_rotary_factor", 0.5))
        )

    def expected_dims(self, gguf_name: str) -> dict[str, tuple[int, int]]:
        dims = super().expected_dims(gguf_name)
        ff = int(self.cfg.need("intermediate_size"))
        if gguf_name.endswith("ffn_up.weight"):
            dims["2*intermediate_size"] = (0, 2 * ff)
        elif gguf_name.endswith("ffn_down.weight"):
            dims["intermediate_size"] = (1, ff)
        return dims


@register("GlmForCausalLM")
class Glm(DenseGLM):
    gguf_arch = "chatglm"
    layout = Layout(attention=(BLOCK_NORMS, gqa_attention), dense_mlp=fused_dense_mlp)
