"""Glm4MoeForCausalLM (model_type ``glm4_moe``): GLM-4.5, 4.6, 4.7. llama.cpp arch ``glm4moe``.

Sigmoid-routed experts with a shared expert, leading dense blocks, optional
q/k norms, and NextN/MTP blocks after the trunk. llama.cpp keeps the MTP
block as the last ``blk.N`` (for speculative decoding), so we convert it too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cached_property
from typing import ClassVar

from gguf import ExpertGatingFuncType, GGUFWriter

from edgeglm.checkpoint.config import leading_dense
from edgeglm.converters.gguf.base import Family, OutTensor, group_experts, stack_experts
from edgeglm.converters.gguf.registry import register
from edgeglm.converters.layout import (
    BLOCK_NORMS,
    Layout,
    dense_mlp,
    gqa_attention,
    moe_mlp,
    qk_norm,
)
from edgeglm.errors import CheckpointError, UnsupportedArchitectureError

MOE_TENSORS = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "model.layers.{bid}.input_layernorm.weight": "blk.{bid}.attn_norm.weight",
    "model.layers.{bid}.self_attn.o_proj.weight": "blk.{bid}.attn_output.weight",
    # dense leading blocks: separate gate/up/down (not fused, unlike glm4)
    "model.layers.{bid}.mlp.gate_proj.weight": "blk.{bid}.ffn_gate.weight",
    "model.layers.{bid}.mlp.up_proj.weight": "blk.{bid}.ffn_up.weight",
    "model.layers.{bid}.mlp.down_proj.weight": "blk.{bid}.ffn_down.weight",
    # router (kept F32) and its noaux_tc bias
    "model.layers.{bid}.mlp.gate.weight": "blk.{bid}.ffn_gate_inp.weight",
    "model.layers.{bid}.mlp.gate.e_score_correction_bias": "blk.{bid}.exp_probs_b.bias",
    "model.layers.{bid}.mlp.shared_experts.gate_proj.weight": "blk.{bid}.ffn_gate_shexp.weight",
    "model.layers.{bid}.mlp.shared_experts.up_proj.weight": "blk.{bid}.ffn_up_shexp.weight",
    "model.layers.{bid}.mlp.shared_experts.down_proj.weight": "blk.{bid}.ffn_down_shexp.weight",
    # NextN / MTP block extras
    "model.layers.{bid}.eh_proj.weight": "blk.{bid}.nextn.eh_proj.weight",
    "model.layers.{bid}.enorm.weight": "blk.{bid}.nextn.enorm.weight",
    "model.layers.{bid}.hnorm.weight": "blk.{bid}.nextn.hnorm.weight",
    "model.layers.{bid}.embed_tokens.weight": "blk.{bid}.nextn.embed_tokens.weight",
    "model.layers.{bid}.shared_head.head.weight": "blk.{bid}.nextn.shared_head_head.weight",
    "model.layers.{bid}.shared_head.norm.weight": "blk.{bid}.nextn.shared_head_norm.weight",
}

_EXPERT = re.compile(r"^model\.layers\.\d+\.mlp\.experts\.")
# Per-expert projection -> stacked GGUF tensor.
_EXPERT_TARGETS = {
    "gate_proj": "ffn_gate_exps",
    "up_proj": "ffn_up_exps",
    "down_proj": "ffn_down_exps",
}


class MoEFamily(Family):
    """Shared by the GLM MoE families: expert stacking, NextN blocks, MoE keys."""

    f32_suffixes: ClassVar[tuple[str, ...]] = ("ffn_gate_inp.weight", "exp_probs_b.bias")
    has_nextn_blocks = True

    @property
    def n_nextn(self) -> int:
        return int(self.cfg.get("num_nextn_predict_layers", default=0))

    @cached_property
    def block_count(self) -> int:
        # MTP blocks are in the checkpoint only if present; transformers'
        # save_pretrained drops them. Count what is actually there (once: a
        # GLM-4.5 checkpoint has tens of thousands of tensor names).
        prefix = f"model.layers.{self.n_layer}."
        if self.n_nextn and any(n.startswith(prefix) for n in self.ckpt):
            return self.n_layer + self.n_nextn
        return self.n_layer

    @property
    def n_expert(self) -> int:
        return int(self.cfg.need("n_routed_experts"))

    @property
    def leading_dense_blocks(self) -> int:
        """llama.cpp's MoE graphs run dense MLPs in the first N blocks and MoE in all
        the others; transformers builds whatever mlp_layer_types says."""
        types = self.cfg.mlp_layer_types()
        dense = leading_dense(types)
        if dense is None:
            raise UnsupportedArchitectureError(
                f"{self.cfg.where}: mlp_layer_types {types} has a dense layer after a MoE "
                "one; llama.cpp runs only dense layers first, then MoE (the ONNX "
                "converter supports any pattern)"
            )
        return dense

    def write_moe_hparams(self, w: GGUFWriter) -> None:
        c = self.cfg
        w.add_expert_count(self.n_expert)
        w.add_expert_used_count(int(c.need("num_experts_per_tok")))
        w.add_expert_feed_forward_length(int(c.need("moe_intermediate_size")))
        # Keys config.json leaves out read as transformers' defaults (Config).
        w.add_expert_shared_count(int(c.need("n_shared_experts")))
        w.add_leading_dense_block_count(self.leading_dense_blocks)
        w.add_expert_gating_func(ExpertGatingFuncType.SIGMOID)
        w.add_expert_weights_scale(float(c.need("routed_scaling_factor")))
        w.add_expert_weights_norm(bool(c.need("norm_topk_prob")))
        if int(c.need("n_group")) > 1:
            w.add_expert_group_count(int(c.need("n_group")))
            w.add_expert_group_used_count(int(c.need("topk_group")))
        if self.block_count > self.n_layer:
            w.add_nextn_predict_layers(self.n_nextn)

    def tensors(self) -> Iterator[OutTensor]:
        names = [n for n in self.ckpt if not n.endswith(self.ignored_suffixes)]
        experts = group_experts([n for n in names if _EXPERT.match(n)])
        emitted: set[tuple[str, str]] = set()
        beyond = f"model.layers.{self.block_count}."
        for hf_name in names:
            if _EXPERT.match(hf_name):
                yield from self._expert_tensor(hf_name, experts, emitted)
                continue
            if hf_name.startswith(beyond):
                continue  # MTP blocks beyond what config declares: not loadable
            yield from self.map_tensor(hf_name)

    def map_tensor(self, hf_name: str) -> Iterator[OutTensor]:
        yield self.simple(hf_name, self.require_name(hf_name))

    def _expert_tensor(
        self,
        hf_name: str,
        experts: dict[tuple[str, str], dict[int, str]],
        emitted: set[tuple[str, str]],
    ) -> Iterator[OutTensor]:
        block = hf_name.split(".")[2]
        proj = hf_name.rsplit(".", 2)[-2]
        key = (block, proj)
        if key in emitted:
            return
        emitted.add(key)
        if proj not in _EXPERT_TARGETS:
            raise CheckpointError(f"{self.ckpt.root}: unexpected expert tensor {hf_name!r}")
        group = experts.get(key, {})
        for e in range(self.n_expert):
            if e not in group:
                raise CheckpointError(
                    f"{self.ckpt.root}: tensor 'model.layers.{block}.mlp.experts.{e}.{proj}"
                    f".weight' is missing; config n_routed_experts={self.n_expert}"
                )
        if len(group) != self.n_expert:
            extra = max(group)
            raise CheckpointError(
                f"{self.ckpt.root}: block {block} has {proj} expert {extra}, but config "
                f"n_routed_experts={self.n_expert}"
            )
        names = [group[e] for e in range(self.n_expert)]
        yield stack_experts(self, names, f"blk.{block}.{_EXPERT_TARGETS[proj]}.weight")


@register("Glm4MoeForCausalLM")
class Glm4Moe(MoEFamily):
    gguf_arch = "glm4moe"
    layout = Layout(
        attention=(BLOCK_NORMS, gqa_attention, qk_norm),
        dense_mlp=dense_mlp,
        moe_mlp=moe_mlp,
        mtp=True,
    )
    tensor_map: ClassVar[dict[str, str]] = {
        **MOE_TENSORS,
        "model.layers.{bid}.self_attn.q_proj.weight": "blk.{bid}.attn_q.weight",
        "model.layers.{bid}.self_attn.q_proj.bias": "blk.{bid}.attn_q.bias",
        "model.layers.{bid}.self_attn.k_proj.weight": "blk.{bid}.attn_k.weight",
        "model.layers.{bid}.self_attn.k_proj.bias": "blk.{bid}.attn_k.bias",
        "model.layers.{bid}.self_attn.v_proj.weight": "blk.{bid}.attn_v.weight",
        "model.layers.{bid}.self_attn.v_proj.bias": "blk.{bid}.attn_v.bias",
        "model.layers.{bid}.self_attn.q_norm.weight": "blk.{bid}.attn_q_norm.weight",
        "model.layers.{bid}.self_attn.k_norm.weight": "blk.{bid}.attn_k_norm.weight",
        # glm4moe's graph uses this as the pre-FFN norm, under this name.
        "model.layers.{bid}.post_attention_layernorm.weight": "blk.{bid}.post_attention_norm.weight",
    }

    def write_hparams(self, w: GGUFWriter) -> None:
        super().write_hparams(w)
        w.add_key_length(self.head_dim)
        w.add_value_length(self.head_dim)
        w.add_rope_dimension_count(
            int(self.head_dim * self.cfg.rope_get("partial_rotary_factor", 0.5))
        )
        self.write_moe_hparams(w)

    def special_tokens(self) -> dict[str, str]:
        return {**super().special_tokens(), "bos": "[gMASK]"}
