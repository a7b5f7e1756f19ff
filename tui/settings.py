"""Chat settings the user edits in the settings modal: sampling and the system prompt.

The defaults are EdgeGLM's one set (edgeglm.generation), the same as ``run``
and ``chat --cli``: a model's own (``ChatSettings.for_model``), else
llama.cpp's. ``max_tokens`` -1 means until the model ends its turn or the
context is full (llama.cpp's ``n_predict`` -1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from edgeglm.backends.base import SamplingParams, sampling_problems, text_problem
from edgeglm.chat import GLM_STOP_TOKENS
from edgeglm.generation import (
    UNTIL_CONTEXT_FULL,
    Sampling,
    model_defaults,
)

_DEFAULTS = Sampling()
SAMPLING_FIELDS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repeat_penalty",
    "max_tokens",
    "seed",
)


@dataclass(frozen=True)
class ChatSettings:
    system: str = ""
    temperature: float = _DEFAULTS.temperature
    top_p: float = _DEFAULTS.top_p
    top_k: int = _DEFAULTS.top_k
    min_p: float = _DEFAULTS.min_p
    repeat_penalty: float = _DEFAULTS.repeat_penalty
    max_tokens: int = _DEFAULTS.max_tokens
    seed: int = _DEFAULTS.seed
    # where each sampling value came from ("generation_config.json", "llama.cpp
    # default"...); a value the user edits says "settings"
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def for_model(cls, sampling: Sampling, system: str = "") -> ChatSettings:
        """The settings a model starts with: its own defaults (see
        edgeglm.generation.model_defaults), llama.cpp's for the rest."""
        values = {name: getattr(sampling, name) for name in SAMPLING_FIELDS}
        sources = {name: sampling.source(name) for name in SAMPLING_FIELDS}
        return cls(system=system, sources=sources, **values)

    @classmethod
    def for_artifact(cls, kind: str, path: Path, system: str = "") -> ChatSettings:
        """``for_model`` for an artifact (edgeglm.artifacts.Artifact's kind and path)."""
        return cls.for_model(model_defaults(kind, path), system)

    def edited(self, **values: object) -> ChatSettings:
        """These values from the settings screen; the rest (and their sources) kept."""
        changed = {k: v for k, v in values.items() if getattr(self, k) != v}
        sources = {**self.sources, **{k: "settings" for k in changed if k in SAMPLING_FIELDS}}
        return replace(self, **changed, sources=sources)  # type: ignore[arg-type]

    def source(self, name: str) -> str:
        return self.sources.get(name) or Sampling().source(name)

    def sampling(self) -> SamplingParams:
        # GLM's end-of-turn markers stop the reply even when a GGUF does not
        # flag them as end-of-generation tokens
        values = {name: getattr(self, name) for name in SAMPLING_FIELDS}
        return Sampling(**values).params(stop=GLM_STOP_TOKENS)

    def problems(self) -> list[str]:
        """Why these settings cannot be used (empty when they can): the same
        rules the CLI and every backend apply (backends.base)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name in SAMPLING_FIELDS}
        if values["max_tokens"] == UNTIL_CONTEXT_FULL:
            values.pop("max_tokens")
        out = sampling_problems(values)
        out = [p.replace("max_tokens must be", "max_tokens must be -1 (no limit) or") for p in out]
        problem = text_problem(self.system, "the system prompt")
        return out + ([problem] if problem else [])

    def with_system(self, system: str) -> ChatSettings:
        return replace(self, system=system)

    def for_next_model(self, sampling: Sampling) -> ChatSettings:
        """The settings after switching models: the new model's own defaults,
        with the system prompt and every value the user set here kept."""
        fresh = ChatSettings.for_model(sampling, self.system)
        kept = {k: getattr(self, k) for k in SAMPLING_FIELDS if self.sources.get(k) == "settings"}
        sources = {**fresh.sources, **dict.fromkeys(kept, "settings")}
        return replace(fresh, **kept, sources=sources)


def model_sampling(backend: object) -> Sampling:
    """The loaded model's own sampling defaults, read from the file it runs:
    a GGUF's general.sampling.*, an ONNX folder's generation settings;
    llama.cpp's for a backend with neither (the tests' scripted one)."""
    from edgeglm.generation import from_gguf, from_onnx_folder

    path, folder = getattr(backend, "path", None), getattr(backend, "folder", None)
    if isinstance(path, Path) and path.is_file():
        return from_gguf(path)
    if isinstance(folder, Path) and folder.is_dir():
        return from_onnx_folder(folder)
    return Sampling()
