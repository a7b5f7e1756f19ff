"""Architecture registry: one family class per GLM architecture name.

Families register themselves with ``@register("Glm4ForCausalLM", ...)``;
registering a name twice fails at import time, and looking up an unknown name
lists the supported ones.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from edgeglm.errors import UnsupportedArchitectureError

if TYPE_CHECKING:
    from edgeglm.converters.gguf.base import Family

_REGISTRY: dict[str, type[Family]] = {}
# Modules holding the families, imported on first lookup (keeps `import` cheap).
_FAMILY_MODULES = ("chatglm", "glm", "glm4", "glm4_moe", "glm4_moe_lite", "glm_moe_dsa")

F = TypeVar("F", bound="type[Family]")


def register(*hf_architectures: str) -> Callable[[F], F]:
    def deco(cls: F) -> F:
        for attr in ("gguf_arch", "tensor_map"):
            if not hasattr(cls, attr):
                raise TypeError(f"{cls.__name__} must define {attr} to be registered")
        for name in hf_architectures:
            if name in _REGISTRY:
                raise RuntimeError(f"{name} registered twice ({_REGISTRY[name].__name__}, {cls})")
            _REGISTRY[name] = cls
        cls.hf_architectures = hf_architectures
        return cls

    return deco


def _load_all() -> None:
    for mod in _FAMILY_MODULES:
        importlib.import_module(f"edgeglm.converters.gguf.families.{mod}")


def supported_architectures() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def family_for(architecture: str) -> type[Family]:
    _load_all()
    try:
        return _REGISTRY[architecture]
    except KeyError:
        raise UnsupportedArchitectureError(
            f"architecture {architecture!r} is not supported by the GGUF converter; "
            f"supported: {', '.join(sorted(_REGISTRY))}"
        ) from None
