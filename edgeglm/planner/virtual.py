"""Config-only ("virtual") checkpoints: the tensors a config.json implies, without weights.

Planning GLM-4.5 must not need its 700 GB of safetensors. Transformers names
and shapes every GLM tensor the same way for a given config, so the tensor
list is a function of config.json. We build it here, as data per architecture,
and hand it to the GGUF converter's own family classes: the same code that
maps, stacks and splits real checkpoints then says which GGUF tensors, in
which shapes and quant types, the model would have. A test checks the
synthesized lists against every real fixture checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeglm.checkpoint.hf import HFCheckpoint
from edgeglm.checkpoint.safetensors import TensorInfo
from edgeglm.errors import CheckpointError, UnsupportedArchitectureError

Shape = tuple[int, ...]
Tensors = dict[str, Shape]


@dataclass(frozen=True)
class Dims:
    """The config values tensor shapes depend on, with transformers' defaults."""

    cfg: dict[str, Any]

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


def _gqa_attention(d: Dims, bias_default: bool) -> Tensors:
    h, q, kv = d.hidden, d.heads * d.head_dim, d.kv_heads * d.head_dim
    out: Tensors = {
        "self_attn.q_proj.weight": (q, h),
        "self_attn.k_proj.weight": (kv, h),
        "self_attn.v_proj.weight": (kv, h),
        "self_attn.o_proj.weight": (h, q),
    }
    if d.get("attention_bias", bias_default):
        out |= {
            "self_attn.q_proj.bias": (q,),
            "self_attn.k_proj.bias": (kv,),
            "self_attn.v_proj.bias": (kv,),
        }
    return out


def _mla_attention(d: Dims) -> Tensors:
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


def _dsa_indexer(d: Dims) -> Tensors:
    n, hd, q_lora = d.need("index_n_heads"), d.need("index_head_dim"), d.need("q_lora_rank")
    return {
        "self_attn.indexer.wq_b.weight": (n * hd, q_lora),
        "self_attn.indexer.wk.weight": (hd, d.hidden),
        "self_attn.indexer.k_norm.weight": (hd,),
        "self_attn.indexer.k_norm.bias": (hd,),
        "self_attn.indexer.weights_proj.weight": (n, d.hidden),
    }


def _fused_dense_mlp(d: Dims) -> Tensors:
    ff = d.need("intermediate_size")
    return {"mlp.gate_up_proj.weight": (2 * ff, d.hidden), "mlp.down_proj.weight": (d.hidden, ff)}


def _dense_mlp(d: Dims) -> Tensors:
    ff, h = d.need("intermediate_size"), d.hidden
    return {
        "mlp.gate_proj.weight": (ff, h),
        "mlp.up_proj.weight": (ff, h),
        "mlp.down_proj.weight": (h, ff),
    }


def _moe_mlp(d: Dims) -> Tensors:
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


def _norms(*names: str) -> Callable[[Dims], Tensors]:
    return lambda d: {f"{n}.weight": (d.hidden,) for n in names}


def _qk_norm(d: Dims) -> Tensors:
    if not d.get("use_qk_norm", False):
        return {}
    return {"self_attn.q_norm.weight": (d.head_dim,), "self_attn.k_norm.weight": (d.head_dim,)}


def _mtp_extras(d: Dims) -> Tensors:
    h = d.hidden
    return {
        "eh_proj.weight": (h, 2 * h),
        "enorm.weight": (h,),
        "hnorm.weight": (h,),
        "shared_head.norm.weight": (h,),
    }


Part = Callable[[Dims], Tensors]


@dataclass(frozen=True)
class Layout:
    """Per-block tensor parts of one architecture; MoE layouts switch MLPs by block."""

    attention: tuple[Part, ...]
    dense_mlp: Part
    moe_mlp: Part | None = None  # blocks >= first_k_dense_replace
    mtp: bool = False  # NextN blocks after the trunk (num_nextn_predict_layers)


_BLOCK_NORMS = _norms("input_layernorm", "post_attention_layernorm")

LAYOUTS: dict[str, Layout] = {
    "GlmForCausalLM": Layout(
        attention=(_BLOCK_NORMS, lambda d: _gqa_attention(d, bias_default=True)),
        dense_mlp=_fused_dense_mlp,
    ),
    "Glm4ForCausalLM": Layout(
        attention=(
            _BLOCK_NORMS,
            _norms("post_self_attn_layernorm", "post_mlp_layernorm"),
            lambda d: _gqa_attention(d, bias_default=True),
        ),
        dense_mlp=_fused_dense_mlp,
    ),
    "Glm4MoeForCausalLM": Layout(
        attention=(_BLOCK_NORMS, lambda d: _gqa_attention(d, bias_default=False), _qk_norm),
        dense_mlp=_dense_mlp,
        moe_mlp=_moe_mlp,
        mtp=True,
    ),
    "Glm4MoeLiteForCausalLM": Layout(
        attention=(_BLOCK_NORMS, _mla_attention),
        dense_mlp=_dense_mlp,
        moe_mlp=_moe_mlp,
        mtp=True,
    ),
    "GlmMoeDsaForCausalLM": Layout(
        attention=(_BLOCK_NORMS, _mla_attention, _dsa_indexer),
        dense_mlp=_dense_mlp,
        moe_mlp=_moe_mlp,
        mtp=True,
    ),
}


def architecture_of(cfg: dict[str, Any]) -> str:
    archs = cfg.get("architectures") or []
    return str(archs[0]) if archs else str(cfg.get("model_type", "unknown"))


def synthesize(cfg: dict[str, Any], *, with_mtp: bool = True) -> Tensors:
    """HF tensor name -> shape for a checkpoint with this config."""
    arch = architecture_of(cfg)
    layout = LAYOUTS.get(arch)
    if layout is None:
        raise UnsupportedArchitectureError(
            f"config.json: architecture {arch!r} cannot be planned from its config; "
            f"known: {', '.join(sorted(LAYOUTS))}"
        )
    d = Dims(cfg)
    vocab, h = d.need("vocab_size"), d.hidden
    n_layer = int(d.get("num_hidden_layers") or d.need("num_layers"))
    n_mtp = int(d.get("num_nextn_predict_layers", 0)) if layout.mtp and with_mtp else 0
    first_moe = int(d.get("first_k_dense_replace", 0))
    out: Tensors = {"model.embed_tokens.weight": (vocab, h), "model.norm.weight": (h,)}
    if not d.get("tie_word_embeddings", False):
        out["lm_head.weight"] = (vocab, h)
    # NextN blocks first: MoEFamily.block_count scans the tensor names for one
    # and is asked once per tensor, so finding it first keeps planning fast.
    for i in [*range(n_layer, n_layer + n_mtp), *range(n_layer)]:
        block: Tensors = {}
        for part in layout.attention:
            block |= part(d)
        moe = layout.moe_mlp is not None and i >= first_moe
        block |= layout.moe_mlp(d) if moe and layout.moe_mlp else layout.dense_mlp(d)
        if i >= n_layer:
            block |= _mtp_extras(d)
        out |= {f"model.layers.{i}.{k}": v for k, v in block.items()}
    return out


class VirtualCheckpoint(HFCheckpoint):
    """An HFCheckpoint with shapes but no data: enough for the converter's planning."""

    def __init__(self, config: dict[str, Any], root: Path, dtype: str = "BF16") -> None:
        # Deliberately not calling HFCheckpoint.__init__: there are no files to open.
        self.root = root
        self.config = config
        shard = root / "model.safetensors"
        self._infos = {
            name: TensorInfo(name, dtype, shape, 0, 0, shard)
            for name, shape in synthesize(config).items()
        }

    def __contains__(self, name: object) -> bool:
        return name in self._infos

    def __iter__(self) -> Iterator[str]:
        return iter(self._infos)

    def __len__(self) -> int:
        return len(self._infos)

    def info(self, name: str) -> TensorInfo:
        return self._infos[name]

    def load(self, name: str) -> Any:
        raise CheckpointError(f"{self.root}: a config-only model has no weights to load")

    def read_rows(self, name: str, r0: int, r1: int) -> Any:
        return self.load(name)

    @property
    def files(self) -> list[Path]:
        return []

    @property
    def nbytes(self) -> int:
        return 0

    def close(self) -> None:
        pass
