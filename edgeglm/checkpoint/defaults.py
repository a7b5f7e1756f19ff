"""What transformers reads for a config.json key the file leaves out, per architecture.

transformers builds a model from its config class, which fills every absent key
with that class's default, and the defaults differ between the GLM classes
(``first_k_dense_replace`` is 1 for glm4_moe and 3 for glm_moe_dsa,
``routed_scaling_factor`` 1.0, 1.8 and 2.5, ``rms_norm_eps`` 1.5625e-7 for the
dense GLMs). A converter that guessed its own default would convert a
different model than transformers runs, so every reader takes them from here
(``Config``, ``converters.layout.Dims``). Values are copied from transformers
5.23 (tests/edgeglm/checkpoint/test_defaults.py checks them against the
classes wherever transformers is installed); transformers is not imported at
run time, it is not a dependency.

Only keys the converters read are listed. What a class derives rather than
stores (a per-layer MLP list, the DSA indexer schedule) is in config.py.
"""

from __future__ import annotations

from typing import Any

#: HF architecture (config.json ``architectures[0]``) -> transformers model_type.
MODEL_TYPES = {
    "GlmForCausalLM": "glm",
    "Glm4ForCausalLM": "glm4",
    "Glm4MoeForCausalLM": "glm4_moe",
    "Glm4MoeLiteForCausalLM": "glm4_moe_lite",
    "GlmMoeDsaForCausalLM": "glm_moe_dsa",
}

# Shared by the classes that declare no rope_theta field: RotaryEmbeddingConfigMixin's
# default_theta (transformers/modeling_rope_utils.py). partial_rotary_factor is the
# value a class's __post_init__ sets by default; classes that set none rotate the
# whole rope width (the modeling code's .get("partial_rotary_factor", 1.0)).
_ROPE = {"rope_theta": 10000.0}

# transformers/models/glm/configuration_glm.py (GlmConfig) and
# transformers/models/glm4/configuration_glm4.py (Glm4Config): the same defaults.
_DENSE_GLM = {
    **_ROPE,
    "partial_rotary_factor": 0.5,
    "vocab_size": 151552,
    "hidden_size": 4096,
    "intermediate_size": 13696,
    "num_hidden_layers": 40,
    "num_attention_heads": 32,
    "num_key_value_heads": 2,
    "head_dim": 128,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1.5625e-07,
    "tie_word_embeddings": False,
    "attention_bias": True,
}

TRANSFORMERS_DEFAULTS: dict[str, dict[str, Any]] = {
    "glm": _DENSE_GLM,
    "glm4": _DENSE_GLM,
    # transformers/models/glm4_moe/configuration_glm4_moe.py (Glm4MoeConfig). No head_dim
    # field: the modeling code falls back to hidden_size // num_attention_heads.
    # num_nextn_predict_layers is its num_mtp_layers (attribute_map), default 1.
    "glm4_moe": {
        **_ROPE,
        "partial_rotary_factor": 0.5,
        "vocab_size": 151552,
        "hidden_size": 4096,
        "intermediate_size": 10944,
        "num_hidden_layers": 46,
        "num_attention_heads": 96,
        "num_key_value_heads": 8,
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "moe_intermediate_size": 1408,
        "num_experts_per_tok": 8,
        "n_shared_experts": 1,
        "n_routed_experts": 128,
        "routed_scaling_factor": 1.0,
        "n_group": 1,
        "topk_group": 1,
        "first_k_dense_replace": 1,
        "norm_topk_prob": True,
        "use_qk_norm": False,
        "num_nextn_predict_layers": 1,
    },
    # transformers/models/glm4_moe_lite/configuration_glm4_moe_lite.py (Glm4MoeLiteConfig).
    # No first_k_dense_replace: its MLPs follow mlp_layer_types alone (config.py).
    "glm4_moe_lite": {
        **_ROPE,
        "vocab_size": 154880,
        "hidden_size": 2048,
        "intermediate_size": 10240,
        "moe_intermediate_size": 1536,
        "num_hidden_layers": 47,
        "num_attention_heads": 20,
        "num_key_value_heads": 20,
        "n_shared_experts": 1,
        "n_routed_experts": 64,
        "routed_scaling_factor": 1.8,
        "kv_lora_rank": 512,
        "q_lora_rank": 768,
        "qk_rope_head_dim": 64,
        "v_head_dim": 256,
        "qk_nope_head_dim": 192,
        "n_group": 1,
        "topk_group": 1,
        "num_experts_per_tok": 4,
        "norm_topk_prob": True,
        "max_position_embeddings": 202752,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "rope_interleave": True,
        "attention_bias": False,
    },
    # transformers/models/glm_moe_dsa/configuration_glm_moe_dsa.py (GlmMoeDsaConfig).
    # mlp_layer_types and indexer_types are derived when absent (config.py).
    "glm_moe_dsa": {
        **_ROPE,
        "vocab_size": 154880,
        "hidden_size": 6144,
        "intermediate_size": 12288,
        "moe_intermediate_size": 2048,
        "num_hidden_layers": 78,
        "num_attention_heads": 64,
        "num_key_value_heads": 64,
        "n_shared_experts": 1,
        "n_routed_experts": 256,
        "routed_scaling_factor": 2.5,
        "kv_lora_rank": 512,
        "q_lora_rank": 2048,
        "qk_rope_head_dim": 64,
        "v_head_dim": 256,
        "qk_nope_head_dim": 192,
        "n_group": 1,
        "topk_group": 1,
        "num_experts_per_tok": 8,
        "norm_topk_prob": True,
        "max_position_embeddings": 202752,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "index_topk": 2048,
        "index_head_dim": 128,
        "index_n_heads": 32,
        "first_k_dense_replace": 3,
    },
}

#: How a MoE class picks layer i's MLP, as its modeling code does:
#: ``"first_k"``: MoE from first_k_dense_replace on (mlp_layer_types is not read);
#: ``"types"``: mlp_layer_types[i] ("dense" or "sparse"), which the class fills, when
#: absent, with DENSE_PREFIX dense layers (a count, or the key holding it) then sparse.
MLP_SELECTION = {"glm4_moe": "first_k", "glm4_moe_lite": "types", "glm_moe_dsa": "types"}
DENSE_PREFIX: dict[str, int | str] = {
    "glm4_moe_lite": 1,  # Glm4MoeLiteConfig.__post_init__: ["dense"] + ["sparse"] * (n - 1)
    "glm_moe_dsa": "first_k_dense_replace",  # GlmMoeDsaConfig.__post_init__
}
