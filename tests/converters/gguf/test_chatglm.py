"""The original ChatGLM layout (THUDM glm-4-9b-chat style) converts to the same model.

transformers has no ChatGLMModel class to produce reference logits, but the
transformers `glm` port is the same network renamed, with Q, K and V split:
we re-layout the `glm` fixture into ChatGLM's names and fused QKV, and its
GGUF must reproduce the `glm` fixture's reference logits.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from helpers import HF_FIXTURES, llama_probe, load_reference, write_safetensors

from edgeglm.backends.isolated import run_isolated
from edgeglm.checkpoint.hf import HFCheckpoint
from edgeglm.converters.gguf.convert import convert
from edgeglm.metrics import kl_divergence

SRC = HF_FIXTURES / "glm"


def make_chatglm_checkpoint(dst: Path) -> Path:
    ck = HFCheckpoint(SRC)
    cfg = ck.config
    rename = {
        "model.embed_tokens.weight": "transformer.embedding.word_embeddings.weight",
        "model.norm.weight": "transformer.encoder.final_layernorm.weight",
        "lm_head.weight": "transformer.output_layer.weight",
    }
    per_layer = {
        "input_layernorm.weight": "input_layernorm.weight",
        "self_attn.o_proj.weight": "self_attention.dense.weight",
        "post_attention_layernorm.weight": "post_attention_layernorm.weight",
        "mlp.gate_up_proj.weight": "mlp.dense_h_to_4h.weight",
        "mlp.down_proj.weight": "mlp.dense_4h_to_h.weight",
    }
    out: dict[str, np.ndarray] = {new: ck.load(old) for old, new in rename.items()}
    for i in range(cfg["num_hidden_layers"]):
        p, q = f"model.layers.{i}.", f"transformer.encoder.layers.{i}."
        for old, new in per_layer.items():
            out[q + new] = ck.load(p + old)
        for kind in ("weight", "bias"):
            parts = [ck.load(f"{p}self_attn.{x}_proj.{kind}") for x in "qkv"]
            out[f"{q}self_attention.query_key_value.{kind}"] = np.concatenate(parts)
    dst.mkdir()
    write_safetensors(dst / "model.safetensors", out, bf16=set(out))  # values are bf16 already
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(SRC / f, dst / f)
    chatglm_cfg = {
        "architectures": ["ChatGLMModel"],
        "model_type": "chatglm",
        "num_layers": cfg["num_hidden_layers"],
        "hidden_size": cfg["hidden_size"],
        "ffn_hidden_size": cfg["intermediate_size"],
        "num_attention_heads": cfg["num_attention_heads"],
        "kv_channels": cfg["head_dim"],
        "multi_query_attention": True,
        "multi_query_group_num": cfg["num_key_value_heads"],
        "padded_vocab_size": cfg["vocab_size"],
        "seq_length": cfg["max_position_embeddings"],
        "layernorm_epsilon": cfg["rms_norm_eps"],
        "rope_ratio": cfg["rope_theta"] / 10000.0,
        "add_qkv_bias": True,
    }
    (dst / "config.json").write_text(json.dumps(chatglm_cfg))
    return dst


def test_chatglm_layout_reproduces_the_glm_reference(tmp_path: Path) -> None:
    src = make_chatglm_checkpoint(tmp_path / "chatglm")
    gguf = convert(src, tmp_path / "m.gguf", "F32").output
    tokens, ref, text = load_reference(SRC)
    probe = run_isolated(llama_probe, str(gguf), tokens, text)
    assert kl_divergence(ref, probe["logits"]).mean() < 1e-5
    assert probe["tokens"] == tokens


def test_chatglm_mix_matches_llama_quantize(tmp_path: Path) -> None:
    from gguf import LlamaFileType
    from helpers import gguf_tensors, llama_quantize

    src = make_chatglm_checkpoint(tmp_path / "chatglm")
    ours = convert(src, tmp_path / "ours.gguf", "Q4_K_M").output
    bf16 = convert(src, tmp_path / "bf16.gguf", "BF16").output
    theirs = tmp_path / "theirs.gguf"
    assert (
        run_isolated(llama_quantize, str(bf16), str(theirs), int(LlamaFileType.MOSTLY_Q4_K_M)) == 0
    )
    assert gguf_tensors(ours) == gguf_tensors(theirs)  # fused attn_qkv follows the attn_v rules
