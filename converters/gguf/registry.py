"""The GGUF converter's families, by Hugging Face architecture name."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgeglm.converters.registry import Registry

if TYPE_CHECKING:
    from edgeglm.converters.gguf.base import Family

_registry: Registry[type[Any]] = Registry(
    "GGUF converter",
    "edgeglm.converters.gguf.families",
    ("chatglm", "glm", "glm4", "glm4_moe", "glm4_moe_lite", "glm_moe_dsa"),
    required=("gguf_arch", "tensor_map"),
)
register = _registry.register
supported_architectures = _registry.supported


def family_for(architecture: str) -> type[Family]:
    cls: type[Family] = _registry.family_for(architecture)
    return cls
