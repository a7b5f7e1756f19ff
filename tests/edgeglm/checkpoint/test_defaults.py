"""A config.json key left out reads as transformers' default for its architecture.

The table (edgeglm/checkpoint/defaults.py) is checked against transformers' own
config classes where transformers is installed; the derived per-layer lists
against what those classes derive.
"""

from __future__ import annotations

from typing import Any

import pytest

from edgeglm.checkpoint.config import (
    Config,
    indexer_types,
    leading_dense,
    mlp_layer_types,
    with_defaults,
)
from edgeglm.checkpoint.defaults import MODEL_TYPES, TRANSFORMERS_DEFAULTS
from edgeglm.errors import CheckpointError

CONFIG_CLASSES = {
    "glm": "GlmConfig",
    "glm4": "Glm4Config",
    "glm4_moe": "Glm4MoeConfig",
    "glm4_moe_lite": "Glm4MoeLiteConfig",
    "glm_moe_dsa": "GlmMoeDsaConfig",
}
ROPE_KEYS = ("rope_theta", "partial_rotary_factor")


def _transformers_config(model_type: str, **kw: Any) -> Any:
    transformers = pytest.importorskip("transformers")
    return getattr(transformers, CONFIG_CLASSES[model_type])(**kw)


@pytest.mark.parametrize("model_type", sorted(TRANSFORMERS_DEFAULTS))
def test_the_table_is_what_transformers_config_classes_fill_in(model_type: str) -> None:
    cfg = _transformers_config(model_type)
    for key, value in TRANSFORMERS_DEFAULTS[model_type].items():
        theirs = cfg.rope_parameters.get(key) if key in ROPE_KEYS else getattr(cfg, key)
        assert theirs == value and type(theirs) is type(value), (key, theirs, value)
    if "partial_rotary_factor" not in TRANSFORMERS_DEFAULTS[model_type]:
        assert "partial_rotary_factor" not in cfg.rope_parameters  # rotates the whole rope width


def test_every_architecture_has_its_model_type() -> None:
    assert set(MODEL_TYPES.values()) == set(TRANSFORMERS_DEFAULTS) == set(CONFIG_CLASSES)


@pytest.mark.parametrize(
    ("model_type", "kw"),
    [
        ("glm4_moe", {"num_hidden_layers": 4}),
        ("glm4_moe", {"num_hidden_layers": 4, "first_k_dense_replace": 0}),
        ("glm4_moe_lite", {"num_hidden_layers": 4}),
        ("glm4_moe_lite", {"num_hidden_layers": 1}),
        ("glm4_moe_lite", {"num_hidden_layers": 3, "mlp_layer_types": ["sparse", "dense"] * 2}),
        ("glm_moe_dsa", {"num_hidden_layers": 5}),
        ("glm_moe_dsa", {"num_hidden_layers": 2}),
        ("glm_moe_dsa", {"num_hidden_layers": 4, "first_k_dense_replace": 1}),
        ("glm_moe_dsa", {"num_hidden_layers": 3, "mlp_layer_types": ["sparse", "sparse", "dense"]}),
    ],
)
def test_mlp_layer_types_are_what_transformers_builds(model_type: str, kw: dict[str, Any]) -> None:
    """glm4_moe builds MoE from first_k_dense_replace on; the others follow mlp_layer_types,
    filled (when absent) with one dense layer (glm4_moe_lite, which has no
    first_k_dense_replace) or first_k_dense_replace ones (glm_moe_dsa, default 3)."""
    cfg = _transformers_config(model_type, **kw)
    n = kw["num_hidden_layers"]
    if model_type == "glm4_moe":
        theirs = ["sparse" if i >= cfg.first_k_dense_replace else "dense" for i in range(n)]
    else:
        theirs = list(cfg.mlp_layer_types)[:n]  # the model reads the first n
    ours = Config({"model_type": model_type, **kw}, "config.json").mlp_layer_types()
    assert ours == theirs


@pytest.mark.parametrize(
    "kw",
    [
        {"num_hidden_layers": 6},
        {"num_hidden_layers": 6, "index_topk_freq": 2},
        {"num_hidden_layers": 7, "index_topk_freq": 3, "index_skip_topk_offset": 1},
        {"num_hidden_layers": 4, "index_topk_pattern": "FSSF"},
        {"num_hidden_layers": 3, "indexer_types": ["full", "shared", "full"]},
    ],
)
def test_indexer_types_are_what_transformers_derives(kw: dict[str, Any]) -> None:
    cfg = _transformers_config("glm_moe_dsa", **kw)
    ours = Config({"model_type": "glm_moe_dsa", **kw}, "config.json").indexer_types()
    assert ours == list(cfg.indexer_types)


def test_only_absent_keys_are_filled() -> None:
    data = {"architectures": ["Glm4MoeLiteForCausalLM"], "q_lora_rank": None, "n_group": 4}
    filled = with_defaults(data)
    assert filled["q_lora_rank"] is None  # explicit null: a plain q_proj, as in transformers
    assert filled["n_group"] == 4 and filled["routed_scaling_factor"] == 1.8
    assert with_defaults({"architectures": ["Glm4MoeLiteForCausalLM"]})["q_lora_rank"] == 768
    assert data == {"architectures": ["Glm4MoeLiteForCausalLM"], "q_lora_rank": None, "n_group": 4}


def test_model_type_picks_the_class_as_autoconfig_does() -> None:
    by_type = with_defaults({"model_type": "glm_moe_dsa", "architectures": ["Glm4MoeForCausalLM"]})
    assert by_type["first_k_dense_replace"] == 3
    assert with_defaults({"architectures": ["Glm4MoeForCausalLM"]})["first_k_dense_replace"] == 1
    assert "first_k_dense_replace" not in with_defaults({"architectures": ["ChatGLMModel"]})


def test_rope_reads_nested_then_top_level_then_the_default() -> None:
    base = {"model_type": "glm4_moe"}
    assert Config(base, "c").rope_get("partial_rotary_factor") == 0.5
    assert Config(base, "c").rope_get("rope_theta") == 10000.0
    top = Config(base | {"partial_rotary_factor": 0.25}, "c")
    assert top.rope_get("partial_rotary_factor") == 0.25
    nested = {"partial_rotary_factor": 0.25, "rope_parameters": {"partial_rotary_factor": 1.0}}
    assert Config(base | nested, "c").rope_get("partial_rotary_factor") == 1.0


@pytest.mark.parametrize(
    ("types", "dense"),
    [
        (["dense", "sparse", "sparse"], 1),
        (["sparse", "sparse"], 0),
        (["dense", "dense"], 2),
        (["sparse", "dense"], None),
        (["dense", "sparse", "dense", "sparse"], None),
    ],
)
def test_leading_dense_is_what_llamacpp_can_express(types: list[str], dense: int | None) -> None:
    assert leading_dense(types) == dense


@pytest.mark.parametrize(
    "types", [["dense"], ["dense", "moe"], "dense,sparse", [["dense"], ["sparse"]]]
)
def test_a_malformed_mlp_layer_types_is_one_clear_error(types: object) -> None:
    data = with_defaults({"model_type": "glm4_moe_lite", "mlp_layer_types": types})
    with pytest.raises(CheckpointError, match=r"^c: mlp_layer_types must give 'dense' or 'sparse'"):
        mlp_layer_types(data, 2, "c")


def test_a_malformed_indexer_types_is_one_clear_error() -> None:
    data = {"model_type": "glm_moe_dsa", "indexer_types": ["shared", "full"]}
    with pytest.raises(CheckpointError, match=r"^c: indexer_types .* \(need 'full' first"):
        indexer_types(data, 2, "c")
