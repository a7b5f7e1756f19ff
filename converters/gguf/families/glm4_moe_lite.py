"""Glm4MoeLiteForCausalLM (``glm4_moe_lite``): GLM-4.7-Flash. llama.cpp arch ``deepseek2``.

DeepSeek-style multi-head latent attention (MLA) under GLM MoE. llama.cpp
runs MLA in its absorbed form: ``kv_b_proj`` is split per head into
``attn_k_b`` (transposed) and ``attn_v_b``, and the KV cache holds the latent
(one "KV head" of width kv_lora_rank + rope dims).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import numpy as np
from gguf import GGUFWriter, RopeScalingType

from edgeglm.converters.gguf.base import F32Array, OutTensor
from edgeglm.converters.gguf.families.glm4_moe import MOE_TENSORS, MoEFamily
from edgeglm.converters.gguf.registry import register
from edgeglm.converters.layout import BLOCK_NORMS, Layout, dense_mlp, mla_attention, moe_mlp
from edgeglm.errors import CheckpointError

MLA_TENSORS = {
    **MOE_TENSORS,
    "model.layers.{bid}.self_attn.q_proj.weight": "blk.{bid}.attn_q.weight",
    "model.layers.{bid}.self_attn.q_a_proj.weight": "blk.{bid}.attn_q_a.weight",
    "model.layers.{bid}.self_attn.q_a_layernorm.weight": "blk.{bid}.attn_q_a_norm.weight",
    "model.layers.{bid}.self_attn.q_b_proj.weight": "blk.{bid}.attn_q_b.weight",
    "model.layers.{bid}.self_attn.kv_a_proj_with_mqa.weight": "blk.{bid}.attn_kv_a_mqa.weight",
    "model.layers.{bid}.self_attn.kv_a_layernorm.weight": "blk.{bid}.attn_kv_a_norm.weight",
    "model.layers.{bid}.post_attention_layernorm.weight": "blk.{bid}.ffn_norm.weight",
}

#: The epsilon of q_a_layernorm and kv_a_layernorm: transformers (like DeepSeek's
#: reference code) builds them with RMSNorm's default, whatever rms_norm_eps says.
LATENT_NORM_EPS = 1e-6
#: Projections feeding those norms -> how many leading rows do (kv_a_proj_with_mqa's
#: last qk_rope_head_dims are the shared rope key, which skips the norm).
_LATENT_PROJ = ("self_attn.q_a_proj.", "self_attn.kv_a_proj_with_mqa.")


class MLAFamily(MoEFamily):
    gguf_arch = "deepseek2"
    tensor_map = MLA_TENSORS
    rope_types = ("default", "yarn")

    @property
    def n_head_kv(self) -> int:
        return 1  # the latent cache is a single shared "head"

    @property
    def rope_dims(self) -> int:
        return int(self.cfg.need("qk_rope_head_dim"))

    def write_hparams(self, w: GGUFWriter) -> None:
        super().write_hparams(w)
        c = self.cfg
        nope, rope = int(c.need("qk_nope_head_dim")), int(c.need("qk_rope_head_dim"))
        kv_lora = int(c.need("kv_lora_rank"))
        # Always written: llama.cpp's deepseek2 loader requires the key (0 = a plain q_proj)
        # except on layer counts it takes for DeepSeek-V2-Lite. An explicit null is a
        # plain q_proj; an absent key is the class's default rank (Config).
        w.add_q_lora_rank(int(c.get("q_lora_rank", default=0)))
        w.add_kv_lora_rank(kv_lora)
        w.add_key_length(kv_lora + rope)
        w.add_value_length(kv_lora)
        w.add_key_length_mla(nope + rope)
        w.add_value_length_mla(int(c.need("v_head_dim")))
        w.add_rope_dimension_count(self.rope_dims)
        if self.rope_type == "yarn":
            self.write_yarn(w)
        self.write_moe_hparams(w)

    def write_yarn(self, w: GGUFWriter) -> None:
        """DeepSeek YaRN: llama.cpp's deepseek2 graph derives the rope's attention factor
        and the softmax scale's mscale**2 from factor and yarn_log_multiplier (stored as
        0.1 * mscale_all_dim, which llama.cpp divides back out)."""
        c = self.cfg
        w.add_rope_scaling_type(RopeScalingType.YARN)
        w.add_rope_scaling_factor(float(c.rope_get("factor")))
        # transformers' standardize_rope_params: the trained context unless given.
        orig_ctx = c.rope_get("original_max_position_embeddings", self.context_length)
        w.add_rope_scaling_orig_ctx_len(int(orig_ctx))
        for key, add in (
            ("beta_fast", w.add_rope_scaling_yarn_beta_fast),
            ("beta_slow", w.add_rope_scaling_yarn_beta_slow),
        ):
            if c.rope_get(key) is not None:
                add(float(c.rope_get(key)))
        w.add_rope_scaling_yarn_log_mul(0.1 * float(c.rope_get("mscale_all_dim", 0.0)))

    def special_tokens(self) -> dict[str, str]:
        return {**super().special_tokens(), "bos": "[gMASK]"}

    def map_tensor(self, hf_name: str) -> Iterator[OutTensor]:
        if hf_name.endswith("self_attn.kv_b_proj.weight"):
            yield from self._split_kv_b(hf_name)
        elif any(p in hf_name for p in _LATENT_PROJ) and self.latent_scale != 1.0:
            yield self._scaled_latent(hf_name)
        else:
            yield from super().map_tensor(hf_name)

    @property
    def latent_scale(self) -> float:
        """llama.cpp applies rms_norm_eps to every RMS norm, the latent norms too.
        RMSNorm(s*x, eps) == RMSNorm(x, eps / s**2), so scaling the projection
        that feeds a latent norm by sqrt(rms_norm_eps / 1e-6) makes llama.cpp's
        norm compute exactly transformers' 1e-6 one (on small latents the
        mismatch alone cost KL 0.56)."""
        eps = float(self.cfg.need("rms_norm_eps"))
        return math.sqrt(eps / LATENT_NORM_EPS)

    def _scaled_latent(self, hf_name: str) -> OutTensor:
        out = self.simple(hf_name, self.require_name(hf_name))
        normed = int(self.cfg.need("kv_lora_rank")) if "kv_a_proj" in hf_name else out.shape[0]
        s, read = np.float32(self.latent_scale), out.rows

        def rows(r0: int, r1: int) -> F32Array:
            block: F32Array = read(r0, r1).copy()
            if len(out.shape) == 1:  # a bias: one row, the outputs are its columns
                block[..., :normed] *= s
            else:
                block[: max(0, normed - r0)] *= s
            return block

        return dataclasses.replace(out, rows=rows)

    def _split_kv_b(self, hf_name: str) -> Iterator[OutTensor]:
        c = self.cfg
        heads = self.n_head
        nope, v_dim = int(c.need("qk_nope_head_dim")), int(c.need("v_head_dim"))
        kv_lora = int(c.need("kv_lora_rank"))
        info = self.ckpt.info(hf_name)
        if info.shape != (heads * (nope + v_dim), kv_lora):
            raise CheckpointError(
                f"{self.cfg.where}: {hf_name} has shape {list(info.shape)}, expected "
                f"[num_attention_heads*(qk_nope_head_dim+v_head_dim), kv_lora_rank] = "
                f"[{heads * (nope + v_dim)}, {kv_lora}]"
            )
        block = hf_name.split(".")[2]

        def per_head() -> F32Array:
            return self.ckpt.load(hf_name).astype(np.float32).reshape(heads, nope + v_dim, kv_lora)

        def k_b() -> F32Array:
            return np.ascontiguousarray(per_head()[:, :nope, :].transpose(0, 2, 1))

        def v_b() -> F32Array:
            return np.ascontiguousarray(per_head()[:, nope:, :])

        yield OutTensor.computed(
            f"blk.{block}.attn_k_b.weight",
            (heads, kv_lora, nope),
            k_b,
            source_dtype=info.dtype,
            sources=(hf_name,),
        )
        yield OutTensor.computed(
            f"blk.{block}.attn_v_b.weight",
            (heads, v_dim, kv_lora),
            v_b,
            source_dtype=info.dtype,
            sources=(hf_name,),
        )

    def expected_dims(self, gguf_name: str) -> dict[str, tuple[int, int]]:
        return {}  # MLA shapes are checked where the tensors are split


@register("Glm4MoeLiteForCausalLM")
class Glm4MoeLite(MLAFamily):
    gguf_arch = "deepseek2"
    layout = Layout(
        attention=(BLOCK_NORMS, mla_attention), dense_mlp=dense_mlp, moe_mlp=moe_mlp, mtp=True
    )
