"""The tensors a Hugging Face GLM checkpoint has, as a function of its config.json.

Transformers names and shapes every GLM tensor the same way for a given
config, so each family states its ``Layout`` (per-block parts built from the
functions here) beside its converter code, and the planner can size a model
from its config alone. A planner test checks the synthesized lists against
every real fixture checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from edgeglm.checkpoint.config import mlp_layer_types, with_defaults
from edgeglm.errors import CheckpointError

Shape = tuple[int, ...]
Tensors = dict[str, Shape]


@dataclass(frozen=True)
class Dims:
    """The config values tensor shapes depend on, with transformers' defaults
    (edgeglm/checkpoint/defaults.py) for the keys config.json leaves out."""

    cfg: dict[str, Any]

    def __post_init__(self) -> None:
        object.__setattr__(self, "cfg", with_defaults(self.cfg))

    def get(self, key: str, default: Any = None) -> Any:
        v = self.cfg.get(key)
        return default if v is None else v

    def need(self, key: str) -> int:
        v = self.cfg.get(key)
        if v is None:
            raise CheckpointError(f"config.json: missing {key}")
        return int(v)

    @property
    def hidden(self) -> int:
        return self.need("hidden_size")

    @property
    def heads(self) -> int:
        return self.need("num_attention_heads")

    @property
    def kv_heads(self) -> int:
        return int(self.get("num_key_value_heads", self.heads))

    @property
    def head_dim(self) -> int:
        return int(self.get("head_dim", self.hidden // self.heads))


Part = Callable[[Dims], Tensors]


def gqa_attention(d: Dims) -> Tensors:
    """Grouped-query attention; q/k/v biases where ``attention_bias`` (its default is
    the architecture's: true for GLM and GLM-4, false for GLM-4.5)."""
    h, q, kv = d.hidden, d.heads * d.head_dim, d.kv_heads * d.head_dim
    out: Tensors = {
        "self_attn.q_proj.weight": (q, h),
        "self_attn.k_proj.weight": (kv, h),
        "self_attn.v_proj.weight": (kv, h),
        "self_attn.o_proj.weight": (h, q),
    }
    if d.get("attention_bias", False):
        out |= {
            "self_attn.q_proj.bias": (q,),
            "self_attn.k_proj.bias": (kv,),
            "self_attn.v_proj.bias": (kv,),
        }
    return out


def mla_attention(d: Dims) -> Tensors:
    """DeepSeek-style latent attention (GLM-4.7-Flash, GLM-5)."""
    h, heads = d.hidden, d.heads
    nope, rope, v = d.need("qk_nope_head_dim"), d.need("qk_rope_head_dim"), d.need("v_head_dim")
    kv_lora = d.need("kv_lora_rank")
    out: Tensors = {
        "self_attn.kv_a_proj_with_mqa.weight": (kv_lora + rope, h),
        "self_attn.kv_a_layernorm.weight": (kv_lora,),
        "self_attn.kv_b_proj.weight": (heads * (nope + v), kv_lora),
        "self_attn.o_proj.weight": (h, heads * v),
    }
    q_lora = d.get("q_lora_rank")
    if q_lora:
        out |= {
            "self_attn.q_a_proj.weight": (int(q_lora), h),
            "self_attn.q_a_layernorm.weight": (int(q_lora),),
            "self_attn.q_b_proj.weight": (heads * (nope + rope), int(q_lora)),
        }
    else:
        out["self_attn.q_proj.weight"] = (heads * (nope + rope), h)
    return out


def dsa_indexer(d: Dims) -> Tensors:
    n, hd, q_lora = d.need("index_n_heads"), d.need("index_head_dim"), d.need("q_lora_rank")
    return {
        "self_attn.indexer.wq_b.weight": (n * hd, q_lora),
        "self_attn.indexer.wk.weight": (hd, d.hidden),
        "self_attn.indexer.k_norm.weight": (hd,),
        "self_attn.indexer.k_norm.bias": (hd,),
        "self_attn.indexer.weights_proj.weight": (n, d.hidden),
    }


def fused_dense_mlp(d: Dims) -> Tensors:
    ff = d.need("intermediate_size")
    return {"mlp.gate_up_proj.weight": (2 * ff, d.hidden), "mlp.down_proj.weight": (d.hidden, ff)}


def dense_mlp(d: Dims) -> Tensors:
    ff, h = d.need("intermediate_size"), d.hidden
    return {
        "mlp.gate_proj.weight": (ff, h),
        "mlp.up_proj.weight": (ff, h),
        "mlp.down_proj.weight": (h, ff),
    }


def moe_mlp(d: Dims) -> Tensors:
    h, ff, n = d.hidden, d.need("moe_intermediate_size"), d.need("n_routed_experts")
    out: Tensors = {"mlp.gate.weight": (n, h), "mlp.gate.e_score_correction_bias": (n,)}
    for e in range(n):
        out |= {
            f"mlp.experts.{e}.gate_proj.weight": (ff, h),
            f"mlp.experts.{e}.up_proj.weight": (ff, h),
            f"mlp.experts.{e}.down_proj.weight": (h, ff),
        }
    shared = int(d.get("n_shared_experts", 0)) * ff
    if shared:
        out |= {
            "mlp.shared_experts.gate_proj.weight": (shared, h),
            "mlp.shared_experts.up_proj.weight": (shared, h),
            "mlp.shared_experts.down_proj.weight": (h, shared),
        }
    return out


def norms(*names: str) -> Part:
    return lambda d: {f"{n}.weight": (d.hidden,) for n in names}


def qk_norm(d: Dims) -> Tensors:
    if not d.get("use_qk_norm", False):
        return {}
    return {"self_attn.q_norm.weight": (d.head_dim,), "self_attn.k_norm.weight": (d.head_dim,)}


def mtp_extras(d: Dims) -> Tensors:
    h = d.hidden
    return {
        "eh_proj.weight": (h, 2 * h),
        "enorm.weight": (h,),
        "hnorm.weight": (h,),
        "shared_head.norm.weight": (h,),
    }


@dataclass(frozen=True)
class Layout:
    """Per-block tensor parts of one architecture; MoE layouts switch MLPs by block."""

    attention: tuple[Part, ...]
    dense_mlp: Part
    moe_mlp: Part | None = None  # the "sparse" blocks of mlp_layer_types, and NextN blocks
    mtp: bool = False  # NextN blocks after the trunk (num_nextn_predict_layers)


BLOCK_NORMS = norms("input_layernorm", "post_attention_layernorm")


# NextN/MTP block extras llama.cpp loads only when present (TENSOR_NOT_REQUIRED).
MTP_OPTIONAL = ("shared_head.norm.weight",)


def checkpoint_tensors(
    layout: Layout, cfg: dict[str, Any], *, mtp_blocks: Iterable[int] = ()
) -> Tensors:
    """HF tensor name -> shape for a checkpoint with this config, with these NextN blocks.

    NextN blocks come first: MoEFamily.block_count scans the tensor names for
    one and is asked once per tensor, so finding it first keeps planning fast.
    """
    d = Dims(cfg)
    vocab, h = d.need("vocab_size"), d.hidden
    n_layer = int(d.get("num_hidden_layers") or d.need("num_layers"))
    types = mlp_layer_types(d.cfg, n_layer, "config.json")
    out: Tensors = {"model.embed_tokens.weight": (vocab, h), "model.norm.weight": (h,)}
    if not d.get("tie_word_embeddings", False):
        out["lm_head.weight"] = (vocab, h)
    for i in [*mtp_blocks, *range(n_layer)]:
        block: Tensors = {}
        for part in layout.attention:
            block |= part(d)
        moe = layout.moe_mlp is not None and (i >= n_layer or types[i] == "sparse")
        block |= layout.moe_mlp(d) if moe and layout.moe_mlp else layout.dense_mlp(d)
        if i >= n_layer:
            block |= mtp_extras(d)
        out |= {f"model.layers.{i}.{k}": v for k, v in block.items()}
    return out
