"""GlmMoeDsaForCausalLM (``glm_moe_dsa``): GLM-5.x. llama.cpp arch ``glm-dsa``.

GLM-4.7-Flash's MLA + MoE, plus DeepSeek sparse attention: a lightning
indexer per block picks the top-k keys each query attends to.
"""

from __future__ import annotations

from typing import ClassVar

from gguf import GGUFWriter

from edgeglm.converters.gguf.families.glm4_moe_lite import MLA_TENSORS, MLAFamily
from edgeglm.converters.gguf.registry import register
from edgeglm.converters.layout import (
    BLOCK_NORMS,
    Layout,
    dense_mlp,
    dsa_indexer,
    mla_attention,
    moe_mlp,
)
from edgeglm.errors import CheckpointError


@register("GlmMoeDsaForCausalLM")
class GlmMoeDsa(MLAFamily):
    gguf_arch = "glm-dsa"
    layout = Layout(
        attention=(BLOCK_NORMS, mla_attention, dsa_indexer),
        dense_mlp=dense_mlp,
        moe_mlp=moe_mlp,
        mtp=True,
    )
    tensor_map: ClassVar[dict[str, str]] = {
        **MLA_TENSORS,
        "model.layers.{bid}.self_attn.indexer.wq_b.weight": "blk.{bid}.indexer.attn_q_b.weight",
        "model.layers.{bid}.self_attn.indexer.wk.weight": "blk.{bid}.indexer.attn_k.weight",
        "model.layers.{bid}.self_attn.indexer.k_norm.weight": "blk.{bid}.indexer.k_norm.weight",
        "model.layers.{bid}.self_attn.indexer.k_norm.bias": "blk.{bid}.indexer.k_norm.bias",
        "model.layers.{bid}.self_attn.indexer.weights_proj.weight": "blk.{bid}.indexer.proj.weight",
    }
    # llama.cpp reads the indexer's head weights in F32.
    f32_suffixes: ClassVar[tuple[str, ...]] = (
        *MLAFamily.f32_suffixes,
        "indexer.proj.weight",
    )

    @property
    def rope_dims(self) -> int:
        factor = float(self.cfg.rope_get("partial_rotary_factor", 1.0))
        return int(int(self.cfg.need("qk_rope_head_dim")) * factor)

    def check_llamacpp_shapes(self) -> None:
        """Refuse what llama.cpp's glm-dsa graph aborts on (GGML_ASSERT in the child).

        Its lightning indexer multiplies q and k by a Hadamard matrix of side the
        largest power of two (at least 64) dividing index_head_dim, so index_head_dim
        must be exactly such a power of two; and it ropes the first qk_rope_head_dim
        dims of each indexer head. The MLA head sizes themselves are free.
        """
        c = self.cfg
        index_dim, rope = int(c.need("index_head_dim")), self.rope_dims
        if index_dim < 64 or index_dim & (index_dim - 1) or rope > index_dim:
            raise CheckpointError(
                f"{c.where}: index_head_dim {index_dim} (qk_rope_head_dim {rope}) cannot run "
                "in llama.cpp's glm-dsa graph: it supports index_head_dim 64, 128, 256, ... "
                "(a power of two, at least 64) and qk_rope_head_dim <= index_head_dim"
            )

    def write_hparams(self, w: GGUFWriter) -> None:
        self.check_llamacpp_shapes()
        super().write_hparams(w)
        c = self.cfg
        w.add_indexer_head_count(int(c.need("index_n_heads")))
        w.add_indexer_key_length(int(c.need("index_head_dim")))
        w.add_indexer_top_k(int(c.need("index_topk")))
        # As transformers derives them when config.json has no indexer_types.
        types = c.indexer_types()
        w.add_array(f"{self.gguf_arch}.attention.indexer.types", [t == "full" for t in types])
