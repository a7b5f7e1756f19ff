"""The launch spec: everything a backend is told when it loads a model, as the planner decided it.

One frozen value travels from the plan to every loader (``run``, ``score``,
the TUI, ``bench``'s measurement child): ``LaunchSpec.to_dict()`` is what
``edgeglm plan --json`` prints under ``launch`` and what ``edgeglm run
--dry-run --json`` prints, and ``LlamaCppModel`` applies every field or
refuses. Field names are llama.cpp's (``llama_model_params`` /
``llama_context_params``); ``llama_cpp_args()`` is the same spec as
llama-cli / llama-server flags.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from edgeglm.errors import UsageError
from edgeglm.rpc.endpoints import parse_endpoint

if TYPE_CHECKING:
    from edgeglm.planner.placement import Settings

# llama.cpp's common.h LLM_FFN_EXPS_REGEX: what --cpu-moe / --n-cpu-moe keep in RAM.
FFN_EXPS_REGEX = r"\.ffn_(up|down|gate|gate_up)_(ch|)exps"
KV_CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1")
LAUNCH_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class TensorOverride:
    """``-ot PATTERN=DEVICE``: weights whose name matches ``pattern`` (a regex,
    searched anywhere in the name, first override wins) go to ``device``'s buffer."""

    pattern: str
    device: str

    def flag(self) -> str:
        return f"{self.pattern}={self.device}"


def parse_overrides(values: list[str], flag: str = "--override-tensor") -> list[TensorOverride]:
    """``PATTERN=DEVICE[,PATTERN=DEVICE...]`` values, as llama.cpp's arg.cpp splits them."""
    out: list[TensorOverride] = []
    for value in values:
        for item in value.split(","):
            pattern, sep, device = item.partition("=")
            if not sep or not device:
                raise UsageError(f"{flag} {item!r}: expected PATTERN=DEVICE (e.g. 'exps=CPU')")
            out.append(TensorOverride(check_pattern(pattern, flag), device))
    return out


def check_pattern(pattern: str, flag: str = "--override-tensor") -> str:
    try:
        re.compile(pattern)
    except re.error as e:
        raise UsageError(f"{flag} {pattern!r}: not a regular expression ({e})") from e
    return pattern


def cpu_moe_overrides(n_layers: int | None = None) -> list[TensorOverride]:
    """llama.cpp's ``--cpu-moe`` (every block) or ``--n-cpu-moe N`` (blocks 0..N-1)."""
    if n_layers is None:
        return [TensorOverride(FFN_EXPS_REGEX, "CPU")]
    if n_layers < 0:
        raise UsageError(f"--n-cpu-moe {n_layers}: must be 0 or more")
    return [TensorOverride(rf"blk\.{i}{FFN_EXPS_REGEX}", "CPU") for i in range(n_layers)]


@dataclass(frozen=True)
class LaunchSpec:
    """How to load one model. ``artifact`` is the file the backend opens; None
    while the planned quant must still be made (``edgeglm convert``)."""

    backend: str = "llama.cpp"
    artifact: str | None = None
    quant: str | None = None
    n_gpu_layers: int = 0  # llama.cpp semantics: output layer + the last (n - 1) blocks
    main_gpu: int = 0
    tensor_split: tuple[float, ...] = ()
    tensor_overrides: tuple[TensorOverride, ...] = field(default_factory=tuple)
    n_threads: int | None = None  # None: every usable core
    n_ctx: int = 2048
    type_k: str = "f16"
    type_v: str = "f16"
    flash_attn: bool = True
    n_batch: int = 512
    n_ubatch: int = 512
    rpc: tuple[str, ...] = ()  # llama.cpp's --rpc: workers whose devices take layers too

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Values llama.cpp would reject or silently change: refused here (UsageError)."""
        if self.backend not in ("llama.cpp", "onnx"):
            raise UsageError(f"launch spec: unknown backend {self.backend!r}")
        if self.n_gpu_layers < 0:
            raise UsageError(f"-ngl {self.n_gpu_layers}: must be 0 or more")
        if self.main_gpu < 0:
            raise UsageError(f"main_gpu {self.main_gpu}: must be 0 or more")
        if any(not (x >= 0) for x in self.tensor_split) or (
            self.tensor_split and sum(self.tensor_split) <= 0
        ):
            raise UsageError(f"tensor_split {list(self.tensor_split)}: needs non-negative shares")
        if self.n_threads is not None and self.n_threads < 1:
            raise UsageError(f"n_threads {self.n_threads}: must be at least 1")
        if self.n_ctx < 1:
            raise UsageError(f"n_ctx {self.n_ctx}: must be at least 1")
        for t in (self.type_k, self.type_v):
            if t not in KV_CACHE_TYPES:
                raise UsageError(f"KV cache type {t!r}: choose one of {', '.join(KV_CACHE_TYPES)}")
        if self.type_v != "f16" and self.type_v != "f32" and not self.flash_attn:
            raise UsageError("a quantized V cache needs flash attention in llama.cpp")
        if not 1 <= self.n_ubatch <= self.n_batch:
            # llama.cpp would shrink n_ubatch to n_batch without a word
            raise UsageError(
                f"n_ubatch {self.n_ubatch}, n_batch {self.n_batch}: need 1 <= n_ubatch <= n_batch"
            )
        for endpoint in self.rpc:
            parse_endpoint(endpoint)
        for o in self.tensor_overrides:
            check_pattern(o.pattern)
            if not o.device:
                raise UsageError(f"--override-tensor {o.pattern!r}: no device named")

    def on_gpu(self) -> bool:
        """Whether any weight goes to a GPU: layers, or an override naming a
        device other than the CPU. A spec that puts nothing there runs on the
        CPU alone: llama.cpp would otherwise still send large batches to a GPU
        (its "op offload", on by default even at -ngl 0)."""
        return self.n_gpu_layers > 0 or any(
            not o.device.upper().startswith("CPU") for o in self.tensor_overrides
        )

    def with_(self, **changes: Any) -> LaunchSpec:
        """A copy with some fields changed (checked again)."""
        return replace(self, **changes)

    # The planner's Settings (context size, KV cache types, flash attention,
    # batches) are fields of the spec by the same names: these two are the one
    # mapping between them, both ways.
    def settings(self) -> Settings:
        """The planner's context settings this spec loads with."""
        from edgeglm.planner.placement import Settings

        return Settings(**{f.name: getattr(self, f.name) for f in fields(Settings)})

    def with_settings(self, settings: Settings) -> LaunchSpec:
        """A copy that loads with the planner's ``settings``."""
        return self.with_(**asdict(settings))

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": LAUNCH_SCHEMA_VERSION,
            "backend": self.backend,
            "artifact": self.artifact,
            "quant": self.quant,
            "n_gpu_layers": self.n_gpu_layers,
            "main_gpu": self.main_gpu,
            "tensor_split": list(self.tensor_split),
            "tensor_overrides": [
                {"pattern": o.pattern, "device": o.device} for o in self.tensor_overrides
            ],
            "n_threads": self.n_threads,
            "n_ctx": self.n_ctx,
            "type_k": self.type_k,
            "type_v": self.type_v,
            "flash_attn": self.flash_attn,
            "n_batch": self.n_batch,
            "n_ubatch": self.n_ubatch,
            "rpc": list(self.rpc),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LaunchSpec:
        return cls(
            backend=d["backend"],
            artifact=d["artifact"],
            quant=d["quant"],
            n_gpu_layers=d["n_gpu_layers"],
            main_gpu=d["main_gpu"],
            tensor_split=tuple(d["tensor_split"]),
            tensor_overrides=tuple(
                TensorOverride(o["pattern"], o["device"]) for o in d["tensor_overrides"]
            ),
            n_threads=d["n_threads"],
            n_ctx=d["n_ctx"],
            type_k=d["type_k"],
            type_v=d["type_v"],
            flash_attn=d["flash_attn"],
            n_batch=d["n_batch"],
            n_ubatch=d["n_ubatch"],
            rpc=tuple(d.get("rpc", ())),
        )

    def llama_cpp_args(self) -> list[str]:
        """The same spec as llama.cpp command-line flags (llama-cli / llama-server)."""
        args = ["-c", str(self.n_ctx), "-ngl", str(self.n_gpu_layers)]
        if self.rpc:
            args += ["--rpc", ",".join(self.rpc)]
        if self.main_gpu:
            args += ["-mg", str(self.main_gpu)]
        for o in self.tensor_overrides:
            args += ["-ot", o.flag()]
        if self.tensor_split:
            args += ["-ts", ",".join(f"{x:g}" for x in self.tensor_split)]
        if self.n_threads:
            args += ["-t", str(self.n_threads)]
        args += ["-fa", "on" if self.flash_attn else "off"]
        if self.type_k != "f16" or self.type_v != "f16":
            args += ["-ctk", self.type_k, "-ctv", self.type_v]
        if not self.on_gpu():
            args.append("--no-op-offload")
        return [*args, "-b", str(self.n_batch), "-ub", str(self.n_ubatch)]


@dataclass(frozen=True)
class LaunchControls:
    """llama.cpp's own placement flags, given on top of a planned spec."""

    override_tensor: tuple[str, ...] = ()  # -ot values, each PATTERN=DEVICE[,...]
    cpu_moe: bool = False
    n_cpu_moe: int | None = None
    n_gpu_layers: int | None = None
    rpc: tuple[str, ...] = ()  # --rpc HOST:PORT,...: workers whose devices take layers too

    def given(self) -> list[str]:
        """The flags set, by name (for messages)."""
        return [
            name
            for name, on in (
                ("--override-tensor", bool(self.override_tensor)),
                ("--cpu-moe", self.cpu_moe),
                ("--n-cpu-moe", self.n_cpu_moe is not None),
                ("--n-gpu-layers", self.n_gpu_layers is not None),
                ("--rpc", bool(self.rpc)),
            )
            if on
        ]

    def check(self) -> None:
        """Syntax only: whether the devices exist is for the engine that loads."""
        parse_overrides(list(self.override_tensor))
        if self.n_cpu_moe is not None and self.n_cpu_moe < 0:
            raise UsageError(f"--n-cpu-moe {self.n_cpu_moe}: must be 0 or more")
        if self.n_gpu_layers is not None and self.n_gpu_layers < 0:
            raise UsageError(f"--n-gpu-layers {self.n_gpu_layers}: must be 0 or more")

    def apply(self, spec: LaunchSpec) -> LaunchSpec:
        """Any tensor-override flag replaces the plan's overrides (in the order
        -ot, --cpu-moe, --n-cpu-moe; in llama.cpp the first match wins); -ngl
        replaces its layer count."""
        self.check()
        changes: dict[str, Any] = {}
        user = parse_overrides(list(self.override_tensor))
        if self.cpu_moe:
            user += cpu_moe_overrides()
        if self.n_cpu_moe is not None:
            user += cpu_moe_overrides(self.n_cpu_moe)
        if self.override_tensor or self.cpu_moe or self.n_cpu_moe is not None:
            changes["tensor_overrides"] = tuple(user)
        if self.n_gpu_layers is not None:
            changes["n_gpu_layers"] = self.n_gpu_layers
        if self.rpc:
            changes["rpc"] = self.rpc
        return spec.with_(**changes) if changes else spec
