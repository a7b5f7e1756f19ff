"""Glm4MoeLiteForCausalLM (model_type ``glm4_moe_lite``): GLM-4.7-Flash.

GLM-4.5's MoE feed-forward with multi-head latent attention (mla.py) in place
of GQA: no q/k norms, rotary on interleaved pairs of the rope channels.
"""

from __future__ import annotations

from edgeglm.converters.onnx.mla import Mla
from edgeglm.converters.onnx.registry import register


@register("Glm4MoeLiteForCausalLM")
class Glm4MoeLite(Mla):
    pass
