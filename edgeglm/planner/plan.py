"""A plan: every decision with its reason, the memory it needs, and whether it fits.

``Plan.to_dict()`` is the stable ``edgeglm plan --json`` schema (bump
``PLAN_SCHEMA_VERSION`` when a key changes meaning or disappears). The
human rendering lives in explain.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgeglm.planner.launch import LaunchSpec, TensorOverride
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
    # every edgeglm command the reasons, warnings and suggestions print, as
    # printed: each one runs (commands.py)
    commands: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(d.total for d in self.devices)

    def reason(self, what: str) -> str | None:
        return next((d.reason for d in self.decisions if d.what == what), None)

    def launch_spec(self) -> LaunchSpec | None:
        """What a backend loads, exactly as planned (None when nothing fits).

        ``artifact`` is the GGUF planned for, or None for a checkpoint whose
        planned quant must still be converted."""
        if not self.fits or self.placement is None or self.settings is None:
            return None
        s, p = self.settings, self.placement
        return LaunchSpec(
            # the plan names the runtime ("onnxruntime"); a spec names the backend
            backend="onnx" if self.backend == "onnxruntime" else self.backend,
            artifact=self.model["path"] if self.model.get("source") == "gguf" else None,
            quant=self.quant,
            n_gpu_layers=p.n_gpu_layers,
            tensor_split=tuple(p.tensor_split),
            tensor_overrides=tuple(TensorOverride(pat, dev) for pat, dev in p.override_pairs()),
            n_threads=self.n_threads,
        ).with_settings(s)

    def llama_cpp_args(self) -> list[str]:
        """The same plan as llama.cpp command-line flags (llama-cli / llama-server)."""
        spec = self.launch_spec()
        return [] if spec is None else spec.llama_cpp_args()

    def to_dict(self) -> dict[str, Any]:
        p, s = self.placement, self.settings
        spec = self.launch_spec()
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
                "n_batch": s.n_batch,
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
            "launch": None if spec is None else spec.to_dict(),
            "llama_cpp_args": [] if spec is None else spec.llama_cpp_args(),
            "warnings": self.warnings,
            "suggestions": self.suggestions,
            "commands": self.commands,
        }
