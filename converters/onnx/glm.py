"""GlmForCausalLM (model_type ``glm``): GLM-4-9B-chat-hf, GLM-Edge.

The base graph as is: fused q|k|v with biases, fused gate|up SwiGLU, partial
rotary (half of each head) on adjacent channel pairs, untied lm_head.
"""

from __future__ import annotations

from edgeglm.converters.onnx.base import Family
from edgeglm.converters.onnx.registry import register


@register("GlmForCausalLM")
class Glm(Family):
    rotary_interleaved = True
