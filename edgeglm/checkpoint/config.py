"""config.json lookups shared by every converter family.

A key the file leaves out reads as transformers' default for the checkpoint's
architecture (defaults.py), so a converter computes what transformers runs.
"""

from __future__ import annotations

from typing import Any

from edgeglm.checkpoint.defaults import (
    DENSE_PREFIX,
    MLP_SELECTION,
    MODEL_TYPES,
    TRANSFORMERS_DEFAULTS,
)
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
MLP_TYPES = ("dense", "sparse")


def model_type_of(data: dict[str, Any]) -> str | None:
    """The transformers config class a config.json loads as: its model_type (what
    AutoConfig dispatches on), else its architecture; None for one we have no table for."""
    model_type = data.get("model_type")
    if isinstance(model_type, str) and model_type in TRANSFORMERS_DEFAULTS:
        return model_type
    archs = data.get("architectures")
    if isinstance(archs, list) and archs and isinstance(archs[0], str):
        return MODEL_TYPES.get(archs[0])
    return None


def with_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with every key it leaves out set to transformers' default.

    Only absent keys are filled: an explicit null stays null, as in transformers
    (``q_lora_rank: null`` means no q_a_proj, while an absent one is 768 or 2048).
    """
    defaults = TRANSFORMERS_DEFAULTS.get(model_type_of(data) or "", {})
    return {**defaults, **data}


def mlp_layer_types(data: dict[str, Any], n_layer: int, where: str) -> list[str]:
    """ "dense" or "sparse" (MoE) for each trunk layer, as transformers builds them.

    ``data`` has its defaults filled (``with_defaults``). Architectures without
    MoE are dense throughout.
    """
    model_type = model_type_of(data) or ""
    rule = MLP_SELECTION.get(model_type)
    if rule is None:
        return ["dense"] * n_layer
    types = data.get("mlp_layer_types") if rule == "types" else None
    if types is None:
        prefix = DENSE_PREFIX.get(model_type, "first_k_dense_replace")
        dense = prefix if isinstance(prefix, int) else int(data.get(prefix) or 0)
        dense = min(dense, n_layer)
        return ["dense"] * dense + ["sparse"] * (n_layer - dense)
    if (
        not isinstance(types, list)
        or len(types) < n_layer
        or any(t not in MLP_TYPES for t in types)
    ):
        raise CheckpointError(
            f"{where}: mlp_layer_types must give 'dense' or 'sparse' for each of the "
            f"{n_layer} layers, not {str(types)[:80]}"
        )
    return [str(t) for t in types[:n_layer]]


def indexer_types(data: dict[str, Any], n_layer: int, where: str) -> list[str]:
    """ "full" (the layer runs its DSA indexer) or "shared" (it reuses the last full
    layer's selection) for each trunk layer, as GlmMoeDsaConfig.__post_init__ derives
    them when config.json has no indexer_types."""
    types = data.get("indexer_types")
    if types is None:
        pattern = data.get("index_topk_pattern")
        if isinstance(pattern, str):
            types = [{"F": "full", "S": "shared"}.get(ch, ch) for ch in pattern]
        elif pattern is not None:
            types = pattern
        else:
            freq = max(int(data.get("index_topk_freq") or 1), 1)
            offset = int(data.get("index_skip_topk_offset", 2))
            types = [
                "full" if max(i - offset + 1, 0) % freq == 0 else "shared" for i in range(n_layer)
            ]
    if (
        not isinstance(types, list)
        or len(types) < n_layer
        or any(t not in ("full", "shared") for t in types)
        or (types and types[0] != "full")
    ):
        raise CheckpointError(
            f"{where}: indexer_types {str(types)[:80]} (need 'full' first, then 'full' or "
            f"'shared' for each of the {n_layer} layers)"
        )
    return [str(t) for t in types[:n_layer]]


def leading_dense(types: list[str]) -> int | None:
    """How many layers are dense before the first MoE one, if every later layer is MoE
    (llama.cpp's leading_dense_block_count); None for any other pattern."""
    n = next((i for i, t in enumerate(types) if t != "dense"), len(types))
    return n if all(t == "sparse" for t in types[n:]) else None


class Config:
    """config.json with transformers' defaults, and lookups that name the file when a
    key is missing."""

    def __init__(self, data: dict[str, Any], where: str) -> None:
        self.data = with_defaults(data)
        self.where = where
        for key in INT_KEYS:
            value = self.data.get(key)
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
        """transformers 5 nests rope settings in rope_parameters; 4.x kept them at the
        top. transformers reads the nested value first, then the top-level one, then
        the class's default (in ``data``)."""
        if self.rope.get(key) is not None:
            return self.rope[key]
        return self.data.get(key, default)

    def mlp_layer_types(self) -> list[str]:
        """Per trunk layer "dense" or "sparse" (see ``mlp_layer_types``)."""
        n_layer = int(self.need("num_hidden_layers", "num_layers"))
        return mlp_layer_types(self.data, n_layer, self.where)

    def indexer_types(self) -> list[str]:
        """Per trunk layer "full" or "shared" DSA indexer (see ``indexer_types``)."""
        n_layer = int(self.need("num_hidden_layers"))
        return indexer_types(self.data, n_layer, self.where)
