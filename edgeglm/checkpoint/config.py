"""config.json lookups shared by every converter family."""

from __future__ import annotations

from typing import Any

from edgeglm.errors import CheckpointError

# Sizes and counts the converters compute with: a string or a float here
# would surface as a Python error deep inside a converter, so they are checked
# once, when the config is read.
INT_KEYS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_layers",
    "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size",
    "padded_vocab_size", "max_position_embeddings", "seq_length", "ffn_hidden_size",
    "kv_channels", "multi_query_group_num", "moe_intermediate_size", "n_routed_experts",
    "num_experts_per_tok", "n_shared_experts", "first_k_dense_replace", "n_group",
    "topk_group", "num_nextn_predict_layers", "kv_lora_rank", "q_lora_rank",
    "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "index_n_heads",
    "index_head_dim", "index_topk",
)  # fmt: skip


class Config:
    """config.json with lookups that name the file when a key is missing."""

    def __init__(self, data: dict[str, Any], where: str) -> None:
        self.data = data
        self.where = where
        for key in INT_KEYS:
            value = data.get(key)
            if value is not None and (type(value) is not int or value < 0):
                raise CheckpointError(
                    f"{where}: {key} must be a non-negative integer, not {str(value)[:40]!r}"
                )
        rope = data.get("rope_parameters") or data.get("rope_scaling") or {}
        self.rope: dict[str, Any] = rope if isinstance(rope, dict) else {}

    def get(self, *keys: str, default: Any = None) -> Any:
        for k in keys:
            if self.data.get(k) is not None:
                return self.data[k]
        return default

    def need(self, *keys: str) -> Any:
        value = self.get(*keys)
        if value is None:
            raise CheckpointError(f"{self.where}: missing {' or '.join(keys)}")
        return value

    def rope_get(self, key: str, default: Any = None) -> Any:
        """transformers 5 nests rope settings in rope_parameters; 4.x kept them at the top."""
        if self.rope.get(key) is not None:
            return self.rope[key]
        return self.data.get(key, default)
