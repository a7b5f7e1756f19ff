"""Architecture registry: one family class per GLM architecture name.

Families register themselves with ``@register("Glm4ForCausalLM", ...)``;
registering a name twice, or a class without ``rotary_interleaved``, fails at
import time, and looking up an unknown name lists the supported ones.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from edgeglm.errors import UnsupportedArchitectureError

if TYPE_CHECKING:
    from edgeglm.converters.onnx.base import Family

_REGISTRY: dict[str, type[Family]] = {}
# Modules holding the families, imported on first lookup (keeps `import` cheap).
_FAMILY_MODULES = ("glm", "glm4", "glm4_moe")

F = TypeVar("F", bound="type[Family]")


def register(*hf_architectures: str) -> Callable[[F], F]:
    def deco(cls: F) -> F:
        if not hasattr(cls, "rotary_interleaved"):
            raise TypeError(f"{cls.__name__} must define rotary_interleaved to be registered")
        for name in hf_architectures:
            if name in _REGISTRY:
                raise RuntimeError(f"{name} registered twice ({_REGISTRY[name].__name__}, {cls})")
            _REGISTRY[name] = cls
        cls.hf_architectures = hf_architectures
        return cls

    return deco


def _load_all() -> None:
    for mod in _FAMILY_MODULES:
        importlib.import_module(f"edgeglm.converters.onnx.{mod}")


def supported_architectures() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def family_for(architecture: str) -> type[Family]:
    _load_all()
    try:
        return _REGISTRY[architecture]
    except KeyError:
        raise UnsupportedArchitectureError(
            f"architecture {architecture!r} is not supported by the ONNX converter; "
            f"supported: {', '.join(sorted(_REGISTRY))}"
        ) from None
