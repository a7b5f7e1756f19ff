"""What the app asks of the rest of EdgeGLM, in one replaceable bundle.

Every slow or machine-dependent call (open a model, probe hardware, plan,
benchmark, convert, pull, import) goes through ``Services``, so tests hand the app fakes
that return the same types. The real implementations are imported only when
first used: starting the TUI never pays for llama.cpp, ONNX Runtime or NVML
it does not touch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from edgeglm.backends.base import Backend

if TYPE_CHECKING:
    from edgeglm.bench.report import BenchReport
    from edgeglm.bench.run import BenchRequest
    from edgeglm.converters.output import ConvertResult
    from edgeglm.hardware import HardwareProfile
    from edgeglm.planner.plan import Plan
    from edgeglm.store.importer import ImportResult
    from edgeglm.store.pull import Pulled

ProgressFn = Callable[[str, float], None]
ConvertProgressFn = Callable[[str, int, int, int, int], None]
# pull: (file, bytes done, bytes in the file); import: (bytes done, bytes in all)
PullProgressFn = Callable[[str, int, int], None]
ImportProgressFn = Callable[[int, int], None]


class BackendFactory(Protocol):
    def __call__(self, ref: str | None, *, backend: str, n_ctx: int | None) -> Backend: ...


class StorePuller(Protocol):
    def __call__(
        self,
        repo_id: str,
        revision: str | None,
        progress: PullProgressFn,
        cancelled: Callable[[], bool],
    ) -> Pulled: ...


class BenchRunner(Protocol):
    def __call__(
        self,
        request: BenchRequest,
        progress: ProgressFn | None,
        should_stop: Callable[[], bool] | None,
    ) -> BenchReport: ...


def open_backend(
    ref: str | None, *, backend: str, n_ctx: int | None, use_plan: bool = True
) -> Backend:
    """The runtime's loader: the planner's settings for this machine (threads,
    flash attention, KV cache, and the context unless one is given); with
    ``use_plan=False`` (``edgeglm chat --no-plan``) the backend's defaults."""
    from edgeglm.runtime import open_backend as real

    return real(ref, backend=backend, n_ctx=n_ctx, use_plan=use_plan)


def probe_hardware() -> HardwareProfile:
    from edgeglm.hardware import probe

    return probe()


def plan_model(model: str | None, hardware: HardwareProfile) -> Plan:
    """The planner's recommendation for ``model`` (None: the demo model) on ``hardware``."""
    from edgeglm.models import default_model
    from edgeglm.planner.planner import make_plan
    from edgeglm.planner.sources import open_model

    return make_plan(open_model(model or str(default_model())), hardware)


def run_bench(
    request: BenchRequest,
    progress: ProgressFn | None,
    should_stop: Callable[[], bool] | None,
) -> BenchReport:
    from edgeglm.bench.run import run_bench as real

    return real(request, progress, should_stop)


def convert_gguf(src: str, out: Path, quant: str, progress: ConvertProgressFn) -> ConvertResult:
    from edgeglm.converters.gguf.convert import convert

    return convert(src, out, quant, progress=progress)


def convert_onnx(src: str, out: Path, quant: str, progress: ConvertProgressFn) -> ConvertResult:
    from edgeglm.converters.onnx import convert

    return convert(src, out, quant, progress=progress)


def pull_model(
    repo_id: str,
    revision: str | None,
    progress: PullProgressFn,
    cancelled: Callable[[], bool],
) -> Pulled:
    """``edgeglm pull --no-convert``: fetched and verified into the store; the
    Convert form (or the first chat) converts it."""
    from edgeglm.store.pull import pull

    return pull(repo_id, revision, convert=False, progress=progress, cancelled=cancelled)


def import_bundle(path: Path, progress: ImportProgressFn) -> ImportResult:
    """``edgeglm import PATH`` (never ``--force``: another entry of the name is kept)."""
    from edgeglm.store.importer import import_bundle as real

    return real(path, progress=progress)


def quant_names() -> list[str]:
    """Quant types that need no importance matrix (the TUI cannot make one yet)."""
    from edgeglm.converters.gguf.quant_types import SCHEMES

    return [name for name, s in SCHEMES.items() if not s.needs_imatrix]


def onnx_quant_names() -> list[str]:
    from edgeglm.converters.onnx import QUANTS

    return list(QUANTS)


@dataclass
class Services:
    open_backend: BackendFactory = open_backend
    probe_hardware: Callable[[], HardwareProfile] = probe_hardware
    plan: Callable[[str | None, HardwareProfile], Plan] = plan_model
    run_bench: BenchRunner = run_bench
    convert: Callable[[str, Path, str, ConvertProgressFn], object] = convert_gguf
    convert_onnx: Callable[[str, Path, str, ConvertProgressFn], object] = convert_onnx
    quants: Callable[[], list[str]] = quant_names
    onnx_quants: Callable[[], list[str]] = onnx_quant_names
    pull: StorePuller = pull_model
    import_bundle: Callable[[Path, ImportProgressFn], ImportResult] = import_bundle
    # backends the Bench screen offers
    backends: tuple[str, ...] = field(default=("llama.cpp", "onnx"))
