"""What the app asks of the rest of EdgeGLM, in one replaceable bundle.

Every slow or machine-dependent call (open a model, probe hardware, plan,
benchmark, convert) goes through ``Services``, so tests hand the app fakes
and the real implementations are imported only when first used: starting
the TUI never pays for llama.cpp, ONNX Runtime or NVML it does not touch.
Features that another part of EdgeGLM has not shipped yet raise
``FeatureUnavailable``, which the screens show as a readable notice.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edgeglm.backends.base import Backend
from edgeglm.errors import EdgeGLMError

ProgressFn = Callable[[str, float], None]
ConvertProgressFn = Callable[[str, int, int, int, int], None]


class FeatureUnavailable(EdgeGLMError):
    """A module this screen builds on is not part of this EdgeGLM build yet."""


class BackendFactory(Protocol):
    def __call__(self, ref: str | None, *, backend: str, n_ctx: int | None) -> Backend: ...


class BenchRunner(Protocol):
    def __call__(
        self,
        models: list[str | None],
        quants: list[str],
        backends: list[str],
        text: Path | None,
        repeat: int,
        progress: ProgressFn | None,
        should_stop: Callable[[], bool] | None,
    ) -> Any: ...


def _optional(module: str, name: str, what: str) -> Any:
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        # only a missing module itself means "not shipped"; a broken import inside it is a bug
        if e.name is None or not module.startswith(e.name):
            raise
        raise FeatureUnavailable(f"{what} is not available in this build ({module})") from None
    fn = getattr(mod, name, None)
    if fn is None:
        raise FeatureUnavailable(f"{what} is not available in this build ({module}.{name})")
    return fn


def open_backend(ref: str | None, *, backend: str, n_ctx: int | None) -> Backend:
    """The runtime's loader: the planner's settings for this machine (threads,
    flash attention, KV cache, and the context unless one is given)."""
    from edgeglm.runtime import open_backend as real

    return real(ref, backend=backend, n_ctx=n_ctx)


def probe_hardware() -> Any:
    from edgeglm.hardware import probe

    return probe()


def plan_model(model: str | None, hardware: Any) -> Any:
    """The planner's recommendation for ``model`` on ``hardware`` (a HardwareProfile)."""
    make_plan = _optional("edgeglm.planner.planner", "make_plan", "the planner")
    open_model = _optional("edgeglm.planner.sources", "open_model", "the planner")
    from edgeglm.models import default_model

    return make_plan(open_model(model or str(default_model())), hardware)


def run_bench(
    models: list[str | None],
    quants: list[str],
    backends: list[str],
    text: Path | None,
    repeat: int,
    progress: ProgressFn | None,
    should_stop: Callable[[], bool] | None,
) -> Any:
    fn = _optional("edgeglm.bench.run", "run_bench", "the benchmark")
    return fn(models, quants, backends, text, repeat, progress, should_stop)


def convert_gguf(src: str, out: Path, quant: str, progress: ConvertProgressFn) -> Any:
    from edgeglm.converters.gguf.convert import convert

    return convert(src, out, quant, progress=progress)


def quant_names() -> list[str]:
    """Quant types that need no importance matrix (the TUI cannot make one yet)."""
    try:
        from edgeglm.converters.gguf.quant_types import SCHEMES
    except ImportError:
        return ["F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K"]
    return [name for name, s in SCHEMES.items() if not s.needs_imatrix]


@dataclass
class Services:
    open_backend: BackendFactory = open_backend
    probe_hardware: Callable[[], Any] = probe_hardware
    plan: Callable[[str | None, Any], Any] = plan_model
    run_bench: BenchRunner = run_bench
    convert: Callable[[str, Path, str, ConvertProgressFn], Any] = convert_gguf
    quants: Callable[[], list[str]] = quant_names
    # backends the Bench screen offers
    backends: tuple[str, ...] = field(default=("llama.cpp", "onnx"))
