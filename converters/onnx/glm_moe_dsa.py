"""GlmMoeDsaForCausalLM (model_type ``glm_moe_dsa``): GLM-5.x.
"""

from __future__ import annotations

from edgeglm.converters.onnx.mla import Mla
from edgeglm.converters.onnx.registry import register


@register("GlmMoeDsaForCausalLM")
class GlmMoeDsa(Mla):
    pass
