"""Synthetic GLM checkpoints with real shapes and random bf16 weights.

Benchmarks need a checkpoint the size of a real edge model without a model
hub. The default is shaped like GLM-Edge-1.5B (GlmForCausalLM: hidden 2048,
16 heads, 4 KV heads, head_dim 128, FFN 6144, vocab 59264), with 24 blocks
and tied embeddings so it lands at the ~1.3 B parameters / 2.6 GB the
conversion benchmark specifies. Tensors are generated and written one at a
time, in two shards with an index, so generating it needs little memory.

    .venv/bin/python benchmarks/synthetic.py OUT_DIR [--layers 24]
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
from pathlib import Path

import numpy as np

from edgeglm.models import DEMO_MODEL

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def glm_edge_config(layers: int) -> dict[str, object]:
    return {
        "architectures": ["GlmForCausalLM"],
        "model_type": "glm",
        "hidden_size": 2048,
        "intermediate_size": 6144,
        "num_hidden_layers": layers,
        "num_attention_heads": 16,
        "num_key_value_heads": 4,
        "head_dim": 128,
        "partial_rotary_factor": 0.5,
        "vocab_size": 59264,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "attention_bias": True,
        "hidden_act": "silu",
        "tie_word_embeddings": True,
        "dtype": "bfloat16",
    }


def glm4_moe_config(layers: int, experts: int, top_k: int) -> dict[str, object]:
    """GLM-4.5-Air-like routing (sigmoid, score correction bias, a shared expert, the
    first layer dense) at a small width, so that the experts dominate the weights."""
    return {
        "architectures": ["Glm4MoeForCausalLM"],
        "model_type": "glm4_moe",
        "hidden_size": 1024,
        "intermediate_size": 2816,
        "moe_intermediate_size": 512,
        "n_routed_experts": experts,
        "num_experts_per_tok": top_k,
        "n_shared_experts": 1,
        "first_k_dense_replace": 1,
        "n_group": 1,
        "topk_group": 1,
        "norm_topk_prob": True,
        "routed_scaling_factor": 2.5,
        "num_hidden_layers": layers,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "head_dim": 128,
        "partial_rotary_factor": 0.5,
        "use_qk_norm": True,
        "vocab_size": 59264,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5,
        "rope_theta": 1000000.0,
        "attention_bias": True,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "dtype": "bfloat16",
    }


def glm4_moe_lite_config(layers: int) -> dict[str, object]:
    """GLM-4.7-Flash's attention as published (20 heads, q LoRA 768, kv LoRA 512, nope 192,
    rope 64, v 256, hidden 2048) over dense SwiGLU blocks in place of its experts, so that
    attention and its KV cache are what a decode step measures."""
    return {
        "architectures": ["Glm4MoeLiteForCausalLM"],
        "model_type": "glm4_moe_lite",
        "hidden_size": 2048,
        "intermediate_size": 3072,
        "moe_intermediate_size": 1536,
        "n_routed_experts": 4,
        "num_experts_per_tok": 2,
        "n_shared_experts": 1,
        "first_k_dense_replace": layers,
        "num_hidden_layers": layers,
        "num_attention_heads": 20,
        "num_key_value_heads": 20,
        "q_lora_rank": 768,
        "kv_lora_rank": 512,
        "qk_nope_head_dim": 192,
        "qk_rope_head_dim": 64,
        "v_head_dim": 256,
        "rope_interleave": True,
        "vocab_size": 16384,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5,
        "rope_theta": 1000000.0,
        "attention_bias": False,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "dtype": "bfloat16",
    }


def mla_tensor_shapes(cfg: dict[str, int]) -> list[tuple[str, tuple[int, ...]]]:
    h, ff, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    heads, q_lora, kv_lora = (cfg[k] for k in ("num_attention_heads", "q_lora_rank",
                                               "kv_lora_rank"))  # fmt: skip
    nope, rope, v_dim = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (v, h))]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        a = p + "self_attn."
        out += [
            (p + "input_layernorm.weight", (h,)),
            (a + "q_a_proj.weight", (q_lora, h)),
            (a + "q_a_layernorm.weight", (q_lora,)),
            (a + "q_b_proj.weight", (heads * (nope + rope), q_lora)),
            (a + "kv_a_proj_with_mqa.weight", (kv_lora + rope, h)),
            (a + "kv_a_layernorm.weight", (kv_lora,)),
            (a + "kv_b_proj.weight", (heads * (nope + v_dim), kv_lora)),
            (a + "o_proj.weight", (h, heads * v_dim)),
            (p + "post_attention_layernorm.weight", (h,)),
            (p + "mlp.gate_proj.weight", (ff, h)),
            (p + "mlp.up_proj.weight", (ff, h)),
            (p + "mlp.down_proj.weight", (h, ff)),
        ]
    out += [("model.norm.weight", (h,)), ("lm_head.weight", (v, h))]
    return out


def moe_tensor_shapes(cfg: dict[str, int]) -> list[tuple[str, tuple[int, ...]]]:
    h, ff, moe_ff, v = (cfg[k] for k in ("hidden_size", "intermediate_size",
                                         "moe_intermediate_size", "vocab_size"))  # fmt: skip
    q = cfg["num_attention_heads"] * cfg["head_dim"]
    kv = cfg["num_key_value_heads"] * cfg["head_dim"]
    out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (v, h))]

    def mlp(p: str, width: int) -> list[tuple[str, tuple[int, ...]]]:
        return [(p + "gate_proj.weight", (width, h)), (p + "up_proj.weight", (width, h)),
                (p + "down_proj.weight", (h, width))]  # fmt: skip

    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", (h,)), (p + "post_attention_layernorm.weight", (h,))]
        for name, rows in (("q", q), ("k", kv), ("v", kv)):
            out += [(p + f"self_attn.{name}_proj.weight", (rows, h)),
                    (p + f"self_attn.{name}_proj.bias", (rows,))]  # fmt: skip
        out += [(p + "self_attn.o_proj.weight", (h, q)),
                (p + "self_attn.q_norm.weight", (cfg["head_dim"],)),
                (p + "self_attn.k_norm.weight", (cfg["head_dim"],))]  # fmt: skip
        if i < cfg["first_k_dense_replace"]:
            out += mlp(p + "mlp.", ff)
            continue
        e = cfg["n_routed_experts"]
        out += [(p + "mlp.gate.weight", (e, h)), (p + "mlp.gate.e_score_correction_bias", (e,))]
        for j in range(e):
            out += mlp(p + f"mlp.experts.{j}.", moe_ff)
        out += mlp(p + "mlp.shared_experts.", moe_ff * cfg["n_shared_experts"])
    out += [("model.norm.weight", (h,)), ("lm_head.weight", (v, h))]
    return out


def tensor_shapes(cfg: dict[str, int]) -> list[tuple[str, tuple[int, ...]]]:
    h, ff, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    q = cfg["num_attention_heads"] * cfg["head_dim"]
    kv = cfg["num_key_value_heads"] * cfg["head_dim"]
    out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (v, h))]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out += [
            (p + "input_layernorm.weight", (h,)),
            (p + "self_attn.q_proj.weight", (q, h)),
            (p + "self_attn.q_proj.bias", (q,)),
            (p + "self_attn.k_proj.weight", (kv, h)),
            (p + "self_attn.k_proj.bias", (kv,)),
            (p + "self_attn.v_proj.weight", (kv, h)),
            (p + "self_attn.v_proj.bias", (kv,)),
            (p + "self_attn.o_proj.weight", (h, q)),
            (p + "post_attention_layernorm.weight", (h,)),
            (p + "mlp.gate_up_proj.weight", (2 * ff, h)),
            (p + "mlp.down_proj.weight", (h, ff)),
        ]
    out.append(("model.norm.weight", (h,)))
    return out


def _write_shard(
    path: Path, tensors: list[tuple[str, tuple[int, ...]]], rng: np.random.Generator
) -> None:
    header: dict[str, object] = {}
    offset = 0
    for name, shape in tensors:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head)
        for _name, shape in tensors:
            if len(shape) == 1:
                x = (1.0 + 0.05 * rng.standard_normal(shape)).astype(np.float32)
            else:
                x = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
            f.write((x.view(np.uint32) >> 16).astype("<u2").tobytes())


def make(
    out: Path, layers: int = 24, seed: int = 0, *, experts: int = 0, top_k: int = 0,
    mla: bool = False,
) -> Path:  # fmt: skip
    """GLM-Edge-shaped, with ``experts`` a Glm4MoeForCausalLM routing ``top_k`` of them,
    or with ``mla`` GLM-4.7-Flash's attention over dense blocks."""
    if (out / "model.safetensors.index.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    if mla:
        cfg = glm4_moe_lite_config(layers)
        tensors = mla_tensor_shapes(cfg)  # type: ignore[arg-type]
    elif experts:
        cfg = glm4_moe_config(layers, experts, top_k)
        tensors = moe_tensor_shapes(cfg)  # type: ignore[arg-type]
    else:
        cfg = glm_edge_config(layers)
        tensors = tensor_shapes(cfg)  # type: ignore[arg-type]
    half = len(tensors) // 2
    shards = {
        "model-00001-of-00002.safetensors": tensors[:half],
        "model-00002-of-00002.safetensors": tensors[half:],
    }
    rng = np.random.default_rng(seed)
    weight_map = {}
    for fname, part in shards.items():
        _write_shard(out / fname, part, rng)
        weight_map.update({n: fname for n, _ in part})
    for f in TOKENIZER_FILES:
        shutil.copy(DEMO_MODEL / f, out / f)
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("out", type=Path)
    ap.add_argument("--layers", type=int, default=24)
    args = ap.parse_args()
    print(make(args.out, args.layers))
