"""ChatGLMModel (model_type ``chatglm``): the original THUDM/ZhipuAI layout of
ChatGLM2/3 and GLM-4-9B-chat, before the transformers port. llama.cpp arch ``chatglm``.

The same network as GlmForCausalLM with other names, a fused QKV projection
and its own config keys. Its tokenizer ships as Python code plus a tiktoken
file; EdgeGLM never runs checkpoint code, so it converts these checkpoints
when a tokenizer.json is present (see vocab.load_vocab for the error).
"""

from __future__ import annotations

from typing import ClassVar

from gguf import GGUFWriter

from edgeglm.converters.gguf.base import Family
from edgeglm.converters.gguf.registry import register


@register("ChatGLMModel", "ChatGLMForConditionalGeneration")
class ChatGLM(Family):
    gguf_arch = "chatglm"
    tensor_map: ClassVar[dict[str, str]] = {
        "transformer.embedding.word_embeddings.weight": "token_embd.weight",
        "transformer.encoder.final_layernorm.weight": "output_norm.weight",
        "transformer.output_layer.weight": "output.weight",
        "transformer.encoder.layers.{bid}.input_layernorm.weight": "blk.{bid}.attn_norm.weight",
        "transformer.encoder.layers.{bid}.self_attention.query_key_value.weight": "blk.{bid}.attn_qkv.weight",
        "transformer.encoder.layers.{bid}.self_attention.query_key_value.bias": "blk.{bid}.attn_qkv.bias",
        "transformer.encoder.layers.{bid}.self_attention.dense.weight": "blk.{bid}.attn_output.weight",
        "transformer.encoder.layers.{bid}.post_attention_layernorm.weight": "blk.{bid}.ffn_norm.weight",
        "transformer.encoder.layers.{bid}.mlp.dense_h_to_4h.weight": "blk.{bid}.ffn_up.weight",
        "transformer.encoder.layers.{bid}.mlp.dense_4h_to_h.weight": "blk.{bid}.ffn_down.weight",
    }
    ignored_suffixes: ClassVar[tuple[str, ...]] = ("rotary_pos_emb.inv_freq",)
    block_prefix = "transformer.encoder.layers."

    def required_tensors(self) -> list[str]:
        # ChatGLMConfig's defaults: no qkv bias, a final norm.
        c = self.cfg
        names = ["transformer.embedding.word_embeddings.weight"]
        if c.get("post_layer_norm", default=True):
            names.append("transformer.encoder.final_layernorm.weight")
        names.append("transformer.output_layer.weight")
        parts = [
            "input_layernorm.weight",
            "self_attention.query_key_value.weight",
            *(["self_attention.query_key_value.bias"] if c.get("add_qkv_bias") else []),
            "self_attention.dense.weight",
            "post_attention_layernorm.weight",
            "mlp.dense_h_to_4h.weight",
            "mlp.dense_4h_to_h.weight",
        ]
        for i in range(self.n_layer):
            names += [f"{self.block_prefix}{i}.{part}" for part in parts]
        return names

    @property
    def n_head_kv(self) -> int:
        if self.cfg.get("multi_query_attention", default=True):
            return int(self.cfg.get("multi_query_group_num", default=self.n_head))
        return self.n_head

    @property
    def head_dim(self) -> int:
        return int(
            self.cfg.get("kv_channels", default=int(self.cfg.need("hidden_size")) // self.n_head)
        )

    @property
    def vocab_size(self) -> int:
        return int(self.cfg.need("padded_vocab_size", "vocab_size"))

    @property
    def context_length(self) -> int:
        return int(self.cfg.need("seq_length", "max_position_embeddings"))

    def write_hparams(self, w: GGUFWriter) -> None:
        c = self.cfg
        w.add_context_length(self.context_length)
        w.add_embedding_length(int(c.need("hidden_size")))
        w.add_block_count(self.block_count)
        w.add_feed_forward_length(int(c.need("ffn_hidden_size")))
        w.add_head_count(self.n_head)
        w.add_head_count_kv(self.n_head_kv)
        w.add_layer_norm_rms_eps(float(c.get("layernorm_epsilon", default=1e-5)))
        # ChatGLM scales the rope base by rope_ratio (GLM-4-9B: 500 -> 5e6).
        w.add_rope_freq_base(10000.0 * float(c.get("rope_ratio", default=1.0)))
        w.add_key_length(self.head_dim)
        w.add_value_length(self.head_dim)
        w.add_rope_dimension_count(self.head_dim // 2)  # rotary on the first half of each head
        w.add_vocab_size(self.vocab_size)
