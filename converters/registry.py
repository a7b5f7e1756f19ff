"""Architecture registries: one family class per Hugging Face architecture name.

Each output format keeps its own ``Registry``. Families register with
``@registry.register("Glm4ForCausalLM", ...)``; registering a name twice, or a
class missing a required attribute, fails at import time, and looking up an
unknown name lists the supported ones. Family modules are imported on first
lookup, which keeps ``import`` cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from edgeglm.errors import UnsupportedArchitectureError

C = TypeVar("C", bound=type[Any])


class Registry(Generic[C]):
    def __init__(
        self, what: str, package: str, modules: Sequence[str], required: Sequence[str]
    ) -> None:
        self.what = what  # "GGUF converter", named in errors
        self.package = package
        self.modules = tuple(modules)
        self.required = tuple(required)
        self._classes: dict[str, C] = {}

    def register(self, *hf_architectures: str) -> Callable[[C], C]:
        def deco(cls: C) -> C:
            for attr in self.required:
                if not hasattr(cls, attr):
                    raise TypeError(f"{cls.__name__} must define {attr} to be registered")
            for name in hf_architectures:
                if name in self._classes:
                    raise RuntimeError(
                        f"{name} registered twice ({self._classes[name].__name__}, {cls})"
                    )
                self._classes[name] = cls
            cls.hf_architectures = hf_architectures
            return cls

        return deco

    def _load_all(self) -> None:
        for mod in self.modules:
            importlib.import_module(f"{self.package}.{mod}")

    def supported(self) -> list[str]:
        self._load_all()
        return sorted(self._classes)

    def family_for(self, architecture: str) -> C:
        self._load_all()
        try:
            return self._classes[architecture]
        except KeyError:
            raise UnsupportedArchitectureError(
                f"architecture {architecture!r} is not supported by the {self.what}; "
                f"supported: {', '.join(sorted(self._classes))}"
            ) from None
