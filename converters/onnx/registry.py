"""Architecture registry: one family class per GLM architecture name.

Families register themselves with ``@register("Glm4ForCausalLM", ...)``;
registering a name twice, or a class without ``rotary_interleaved``, fails at
import time, and looking up an unknown name lists the supported ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgeglm.converters.registry import Registry

if TYPE_CHECKING:
    from edgeglm.converters.onnx.base import Family

_registry: Registry[type[Any]] = Registry(
    "ONNX converter",
    "edgeglm.converters.onnx",
    ("glm", "glm4", "glm4_moe", "glm4_moe_lite", "glm_moe_dsa"),
    required=("rotary_interleaved",),
)
register = _registry.register
supported_architectures = _registry.supported


def family_for(architecture: str) -> type[Family]:
    cls: type[Family] = _registry.family_for(architecture)
    return cls
