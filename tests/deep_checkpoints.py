"""Shapes-only synthetic GLM checkpoints, deep enough for llama.cpp's whole quant mix.

The committed fixtures have 2 layers and 4 experts, so the rules that depend
on a layer's position (``i < n_layer/8``, ``use_more_bits``) and the 8-expert
rules never fire on them. These checkpoints have 16 layers (and a NextN layer
for the MoE one) with random bf16 weights and the smallest widths that keep
K-quant rows whole (256 columns), so every per-tensor decision of
``llama_tensor_get_type`` is visible in the output types. They are written at
test time from a committed fixture's config and tokenizer.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from helpers import HF_FIXTURES, write_safetensors

HIDDEN = 256  # the K-quant block: every matmul that reads the hidden state keeps its rule
N_LAYER = 16  # n_layer/8 = 2, n_layer/16 = 1, 7*n_layer/8 = 14: every position rule splits

# Dense GLM-4 (Glm4ForCausalLM): 8 heads x 32 over 2 KV heads, gqa 4 as in every released GLM.
DENSE: dict[str, int | str] = {
    "num_hidden_layers": N_LAYER,
    "hidden_size": HIDDEN,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "intermediate_size": 256,
    "dtype": "bfloat16",
}

# GLM-4.5-like MoE (Glm4MoeForCausalLM): layer 0 dense, 15 MoE layers of 8 routed experts,
# one NextN/MTP layer. The routed experts are 32 wide, so their ffn_down rows take
# llama.cpp's block-size fallback; the shared expert (4 x 64 = 256 wide) keeps each
# layer's ffn_down rule visible as is.
MOE: dict[str, int | str] = {
    **DENSE,
    "moe_intermediate_size": 32,
    "n_routed_experts": 8,
    "n_shared_experts": 8,
    "num_experts_per_tok": 2,
    "first_k_dense_replace": 1,
    "num_nextn_predict_layers": 1,
}

_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
)


def _attention(
    p: str, cfg: dict[str, int], bias: bool, qk_norm: bool
) -> dict[str, tuple[int, ...]]:
    hd, nh, nkv, h = (
        cfg["head_dim"],
        cfg["num_attention_heads"],
        cfg["num_key_value_heads"],
        cfg["hidden_size"],
    )
    out: dict[str, tuple[int, ...]] = {
        f"{p}.self_attn.q_proj.weight": (nh * hd, h),
        f"{p}.self_attn.k_proj.weight": (nkv * hd, h),
        f"{p}.self_attn.v_proj.weight": (nkv * hd, h),
        f"{p}.self_attn.o_proj.weight": (h, nh * hd),
        f"{p}.input_layernorm.weight": (h,),
        f"{p}.post_attention_layernorm.weight": (h,),
    }
    if bias:
        out |= {
            f"{p}.self_attn.q_proj.bias": (nh * hd,),
            f"{p}.self_attn.k_proj.bias": (nkv * hd,),
            f"{p}.self_attn.v_proj.bias": (nkv * hd,),
        }
    if qk_norm:
        out |= {f"{p}.self_attn.q_norm.weight": (hd,), f"{p}.self_attn.k_norm.weight": (hd,)}
    return out


def _mlp(p: str, h: int, inter: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{p}.gate_proj.weight": (inter, h),
        f"{p}.up_proj.weight": (inter, h),
        f"{p}.down_proj.weight": (h, inter),
    }


def _dense_shapes(cfg: dict[str, int]) -> dict[str, tuple[int, ...]]:
    h = cfg["hidden_size"]
    out: dict[str, tuple[int, ...]] = {}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        out |= _attention(p, cfg, bias=True, qk_norm=False)
        out[f"{p}.mlp.gate_up_proj.weight"] = (2 * cfg["intermediate_size"], h)
        out[f"{p}.mlp.down_proj.weight"] = (h, cfg["intermediate_size"])
        out[f"{p}.post_self_attn_layernorm.weight"] = (h,)
        out[f"{p}.post_mlp_layernorm.weight"] = (h,)
    return out


def _moe_shapes(cfg: dict[str, int]) -> dict[str, tuple[int, ...]]:
    h, n_exp = cfg["hidden_size"], cfg["n_routed_experts"]
    out: dict[str, tuple[int, ...]] = {}
    n_total = cfg["num_hidden_layers"] + cfg["num_nextn_predict_layers"]
    for i in range(n_total):
        p = f"model.layers.{i}"
        out |= _attention(p, cfg, bias=True, qk_norm=True)
        if i < cfg["first_k_dense_replace"]:
            out |= _mlp(f"{p}.mlp", h, cfg["intermediate_size"])
            continue
        for e in range(n_exp):
            out |= _mlp(f"{p}.mlp.experts.{e}", h, cfg["moe_intermediate_size"])
        out |= _mlp(
            f"{p}.mlp.shared_experts", h, cfg["moe_intermediate_size"] * cfg["n_shared_experts"]
        )
        out[f"{p}.mlp.gate.weight"] = (n_exp, h)
        out[f"{p}.mlp.gate.e_score_correction_bias"] = (n_exp,)
        if i >= cfg["num_hidden_layers"]:  # NextN/MTP block
            out[f"{p}.eh_proj.weight"] = (h, 2 * h)
            out[f"{p}.enorm.weight"] = (h,)
            out[f"{p}.hnorm.weight"] = (h,)
            out[f"{p}.shared_head.norm.weight"] = (h,)
    return out


def synthesize(template: str, overrides: dict[str, int | str], out: Path, seed: int = 0) -> Path:
    """A checkpoint with `template`'s config and tokenizer, `overrides` applied, random weights."""
    src = HF_FIXTURES / template
    cfg = json.loads((src / "config.json").read_text(encoding="utf-8")) | overrides
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    for name in _TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy(src / name, out / name)
    h, vocab = int(cfg["hidden_size"]), int(cfg["vocab_size"])
    shapes = {"model.embed_tokens.weight": (vocab, h), "model.norm.weight": (h,)}
    shapes |= _moe_shapes(cfg) if "n_routed_experts" in overrides else _dense_shapes(cfg)
    shapes["lm_head.weight"] = (vocab, h)
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        if name.endswith("e_score_correction_bias"):
            tensors[name] = np.zeros(shape, np.float32)  # F32 in GLM-4.5 checkpoints too
        elif len(shape) == 1:
            tensors[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            tensors[name] = (0.05 * rng.standard_normal(shape)).astype(np.float32)
    bf16 = {n for n in tensors if not n.endswith("e_score_correction_bias")}
    write_safetensors(out / "model.safetensors", tensors, bf16=bf16)
    return out


def random_imatrix(names_cols: dict[str, tuple[int, int]], seed: int = 1) -> dict[str, np.ndarray]:
    """Positive importance weights, [n_mat, ne0] per tensor, as tools/imatrix would collect."""
    rng = np.random.default_rng(seed)
    return {
        name: (0.1 + np.abs(rng.standard_normal((n_mat, cols)))).astype(np.float32)
        for name, (n_mat, cols) in names_cols.items()
    }
