"""A plan: every decision with its reason, the memory it needs, and whether it fits.

``Plan.to_dict()`` is the stable ``edgeglm plan --json`` schema (bump
``PLAN_SCHEMA_VERSION`` when a key changes meaning or disappears). The
human rendering lives in explain.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgeglm.planner.memory import DeviceMemory
from edgeglm.planner.placement import Placement, Settings

PLAN_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Decision:
    """One choice the planner made, in words a user can check."""

    what: str  # "backend", "quant", "placement", "threads", "context", "kv_cache", ...
    value: str
    reason: str


@dataclass(frozen=True)
class Candidate:
    """How one quant fared: its best placement, or why none fits."""

    quant: str
    weights_bytes: int
    strategy: str | None
    n_ctx: int | None
    decode_ceiling_tps: float | None
    needs_imatrix: bool = False
    note: str = ""


@dataclass
class Plan:
    model: dict[str, Any]
    hardware: dict[str, Any]
    fits: bool
    backend: str
    quant: str | None
    convert: bool  # the artifact must still be made: edgeglm convert ... -q QUANT
    placement: Placement | None
    settings: Settings | None
    n_threads: int | None
    devices: list[DeviceMemory]
    decode_ceiling_tps: float | None
    decisions: list[Decision] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)
    recipe: dict[str, Any] | None = None

    @property
    def total_bytes(self) -> int:
        return sum(d.total for d in self.devices)

    def reason(self, what: str) -> str | None:
        return next((d.reason for d in self.decisions if d.what == what), None)

    def llama_cpp_args(self) -> list[str]:
        """The same plan as llama.cpp command-line flags (llama-cli / llama-server)."""
        if self.placement is None or self.settings is None:
            return []
        s, p = self.settings, self.placement
        args = ["-c", str(s.n_ctx), "-ngl", str(p.n_gpu_layers)]
        for o in p.tensor_overrides():
            args += ["-ot", o]
        if p.tensor_split:
            args += ["-ts", ",".join(f"{x:g}" for x in p.tensor_split)]
        if self.n_threads:
            args += ["-t", str(self.n_threads)]
        args += ["-fa", "on" if s.flash_attn else "off"]
        if s.type_k != "f16" or s.type_v != "f16":
            args += ["-ctk", s.type_k, "-ctv", s.type_v]
        return args

    def llama_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for llama_cpp.Llama (tensor overrides are not among
        them: llama-cpp-python 0.3.36 does not pass them to llama.cpp)."""
        from edgeglm.planner.policy import GGML_TYPE_IDS

        if self.placement is None or self.settings is None:
            return {}
        s = self.settings
        kw: dict[str, Any] = {
            "n_ctx": s.n_ctx,
            "n_gpu_layers": self.placement.n_gpu_layers,
            "flash_attn": s.flash_attn,
            "type_k": GGML_TYPE_IDS[s.type_k],
            "type_v": GGML_TYPE_IDS[s.type_v],
            "n_ubatch": s.n_ubatch,
        }
        if self.n_threads:
            kw["n_threads"] = self.n_threads
        if self.placement.tensor_split:
            kw["tensor_split"] = list(self.placement.tensor_split)
        return kw

    def to_dict(self) -> dict[str, Any]:
        p, s = self.placement, self.settings
        return {
            "schema_version": PLAN_SCHEMA_VERSION,
            "fits": self.fits,
            "model": self.model,
            "hardware": self.hardware,
            "recipe": self.recipe,
            "backend": self.backend,
            "artifact": {"quant": self.quant, "convert": self.convert},
            "placement": None
            if p is None
            else {
                "strategy": p.strategy,
                "n_gpu_layers": p.n_gpu_layers,
                "cpu_expert_layers": list(p.cpu_expert_layers),
                "tensor_overrides": p.tensor_overrides(),
                "tensor_split": list(p.tensor_split) or None,
            },
            "settings": None
            if s is None
            else {
                "n_ctx": s.n_ctx,
                "n_threads": self.n_threads,
                "type_k": s.type_k,
                "type_v": s.type_v,
                "flash_attn": s.flash_attn,
                "n_ubatch": s.n_ubatch,
            },
            "memory": {
                "devices": [d.to_dict() for d in self.devices],
                "total_bytes": self.total_bytes,
            },
            "decode_tokens_per_second_ceiling": None
            if self.decode_ceiling_tps is None
            else round(self.decode_ceiling_tps, 1),
            "decisions": [
                {"what": d.what, "value": d.value, "reason": d.reason} for d in self.decisions
            ],
            "candidates": [
                {
                    "quant": c.quant,
                    "weights_bytes": c.weights_bytes,
                    "strategy": c.strategy,
                    "n_ctx": c.n_ctx,
                    "decode_tokens_per_second_ceiling": None
                    if c.decode_ceiling_tps is None
                    else round(c.decode_ceiling_tps, 1),
                    "needs_imatrix": c.needs_imatrix,
                    "note": c.note,
                }
                for c in self.candidates
            ],
            "llama_cpp_args": self.llama_cpp_args(),
            "warnings": self.warnings,
            "suggestions": self.suggestions,
        }
