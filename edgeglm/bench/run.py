"""``edgeglm bench``: every artifact measured for speed and quality in one run.

What is measured comes from select.py: a checkpoint's quants in the backends
asked (converted on first use), GGUF files and ONNX folders as given, grouped
by model, each group's highest-precision artifact the quality reference.
Each artifact is measured in its own child process (measure.py); quality is
KL divergence of next-token distributions against the reference on a
held-out text (texts.py), computed here in float64; speed is the median and
interquartile range of ``repeat`` timed runs (report.py).

Each llama.cpp artifact is measured with a launch spec (planner/launch.py):
the plan's for this machine (``device="auto"``, what ``edgeglm run`` loads),
or the same spec forced onto the CPU or wholly onto the GPU. The row records
the spec that really ran, and the roofline divides by the bandwidth of the
memory each weight was read from (roofline.py).

This process never loads a model: every GGUF passes the strict header checks
(gguf_file.py) and a load in a child (artifacts.verify_gguf) before anything
else touches it, and tokenizing the held-out text happens in a child too. A
file llama.cpp aborts on is then a BackendError, not the end of bench.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from edgeglm import __version__
from edgeglm.artifacts import ConvertProgress, resolve, verify_gguf
from edgeglm.backends.isolated import run_isolated
from edgeglm.bench.measure import (
    DECODE_TOKENS,
    PROMPT_TOKENS,
    Measurement,
    measure_llamacpp,
    measure_onnx,
)
from edgeglm.bench.report import BenchReport
from edgeglm.bench.rows import Bandwidths, compare_with, make_row, noise_warnings
from edgeglm.bench.select import Artifact, Selection, artifacts_for, parse
from edgeglm.bench.select import check as check_selection
from edgeglm.bench.table import main_table as main_table  # the demo's import
from edgeglm.bench.texts import default_text
from edgeglm.errors import BackendError, HardwareError, UsageError
from edgeglm.gguf_file import read_gguf
from edgeglm.planner.launch import LaunchSpec

if TYPE_CHECKING:
    from edgeglm.hardware.profile import HardwareProfile


Progress = Callable[[str, float], None]
# Timed runs per artifact: a median of more says nothing new, and takes hours.
MAX_REPEAT = 1000
DEVICES = ("auto", "cpu", "gpu")


@dataclass(frozen=True)
class BenchRequest:
    """What to benchmark and how; the CLI, the TUI and the demo all build one."""

    models: tuple[str | None, ...] = (None,)  # None: the bundled demo model
    # for Hugging Face checkpoints; None: Q8_0,Q4_K_M (llama.cpp), int4 (ONNX)
    quants: tuple[str, ...] | None = None
    backends: tuple[str, ...] | None = None  # None: each model's own (select.py)
    text: Path | None = None  # held-out text for quality; None: the bundled one (texts.py)
    # timed runs per artifact: the median and quartiles are reported; with 5,
    # one disturbed run moves neither quartile
    repeat: int = 5
    threads: int | None = None
    prompt_tokens: int = PROMPT_TOKENS
    decode_tokens: int = DECODE_TOKENS
    # "auto" the plan's placement and provider, "cpu" nothing on a GPU, "gpu" all on the GPU
    device: str = "auto"
    # plan the auto rows for this hardware profile instead of this machine (measured here)
    hardware: Path | None = None
    rpc: tuple[str, ...] = ()  # llama.cpp rows spread over these workers too (--rpc)

    def __post_init__(self) -> None:
        """The bounds every benchmark is held to, whoever builds the request."""
        from edgeglm.backends.base import INT32_MAX, check_count, check_threads

        check_count("repeat", self.repeat, 1, MAX_REPEAT)
        check_threads(self.threads)
        check_count("prompt_tokens", self.prompt_tokens, 1, INT32_MAX)
        check_count("decode_tokens", self.decode_tokens, 1, INT32_MAX)
        if self.device not in DEVICES:
            raise UsageError(f"--device {self.device!r}: choose one of {', '.join(DEVICES)}")
        if not self.models:
            raise UsageError("a benchmark needs at least one model")
        parse(self.backends, self.quants)  # unknown names refused at once


def fingerprint() -> dict[str, Any]:
    import llama_cpp

    from edgeglm.hardware import probe

    hw = probe(bandwidth=False, accelerators=False)
    fp: dict[str, Any] = {
        "cpu": hw.cpu.model,
        "cores": hw.cpu.physical_cores,
        "threads": hw.cpu.logical_cores,
        "isa": hw.cpu.flags,
        "ram_bytes": hw.memory.total_bytes,
        "os": hw.os,
        "python": platform.python_version(),
        "edgeglm": __version__,
        "llama_cpp_python": llama_cpp.__version__,
        "llama_cpp_system": llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
        "numpy": np.__version__,
        "gpus": _gpus(),
    }
    try:
        import onnxruntime

        fp["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        fp["onnxruntime"] = None
    return fp


def _gpus() -> list[dict[str, Any]]:
    """GPU names, memory and drivers for the fingerprint (JSON-ready)."""
    from dataclasses import asdict

    try:
        from edgeglm.hardware import probe_memory
        from edgeglm.hardware.gpus import probe_gpus

        return [asdict(g) for g in probe_gpus(probe_memory())]
    except (ImportError, AttributeError, TypeError, OSError):
        return []


def _bandwidth() -> float | None:
    """Measured memory bandwidth in bytes/s, from the hardware probe's cache."""
    try:
        from edgeglm.hardware import probe_cpu, probe_memory
        from edgeglm.hardware.bandwidth import memory_bandwidth

        gbps, _ = memory_bandwidth(probe_cpu(), probe_memory())
    except (ImportError, AttributeError, TypeError):
        return None
    return gbps * 1e9 if gbps else None


def gpu_bandwidth(hw: HardwareProfile) -> tuple[float | None, str]:
    """The GPUs' memory bandwidth in bytes/s as the hardware profile knows it,
    and where it came from (or why there is none). With several GPUs of
    different bandwidth the layers' split between them is not known here, so
    there is no single figure."""
    known = {g.bandwidth_gbps for g in hw.gpus}
    if not hw.gpus:
        return None, "no GPU in the hardware profile"
    if None in known:
        return None, "the GPU's memory bandwidth is not known (NVML reports no bus width or clock)"
    if len(known) > 1:
        return None, "GPUs of different memory bandwidth: the split between them is not known"
    gbps = hw.gpus[0].bandwidth_gbps
    assert gbps is not None
    return gbps * 1e9, hw.gpus[0].bandwidth_source or "hardware profile"


def check_gpu_offload() -> None:
    """``--device gpu`` needs a GPU device in llama.cpp (a GPU engine that finds one)."""
    from edgeglm.backends.llamacpp import gpu_count

    if gpu_count() == 0:
        raise UsageError(
            "--device gpu: llama.cpp has no GPU device here (its engine finds none, or was "
            "built for the CPU: edgeglm doctor says which); use --device cpu or auto"
        )


CPU_PROVIDER = "CPUExecutionProvider"


def onnx_gpu_provider(here: HardwareProfile) -> str:
    """``--device gpu`` for ONNX rows: the first GPU provider EdgeGLM's ONNX
    backend runs that really initialized a session here (the probe's word,
    not onnxruntime's list), or a UsageError saying why there is none."""
    from edgeglm.planner.onnx_plan import BACKEND_PROVIDERS

    ort = here.onnxruntime
    working = ort.working_providers if ort is not None else []
    gpu = [p for p in BACKEND_PROVIDERS if p != CPU_PROVIDER and p in working]
    if gpu:
        return gpu[0]
    if ort is None or ort.version is None:
        why = "onnxruntime is not installed"
    else:
        failed = [f"{p}: {ort.errors[p]}" for p in BACKEND_PROVIDERS if p in ort.errors]
        why = "; ".join(failed) or f"onnxruntime {ort.version} lists no GPU provider"
    raise UsageError(
        " ".join(
            f"--device gpu: ONNX Runtime has no working GPU provider here ({why}); "
            "use --device cpu or auto".split()
        )
    )


@dataclass(frozen=True)
class OnnxLaunch:
    """How an ONNX artifact is measured: its provider and threads."""

    provider: str
    threads: int


def onnx_launch(
    folder: Path, device: str, planned_for: HardwareProfile, here: HardwareProfile
) -> OnnxLaunch:
    """``auto``: the ONNX plan's provider and threads (``edgeglm plan FOLDER``),
    refused where that plan does not fit or its provider does not initialize
    here; ``cpu``/``gpu``: the plan's threads on the CPU's provider or on the
    GPU provider that works here."""
    from edgeglm.planner.onnx_plan import plan_onnx

    planned = plan_onnx(folder, planned_for)
    if not planned.fits:
        need, have = planned.memory.total / 2**30, planned.ram_usable / 2**30
        raise HardwareError(
            f"{folder}: the plan does not fit this machine: ONNX Runtime needs {need:.1f} GiB "
            f"and {have:.1f} GiB is usable"
        )
    if device == "cpu":
        return OnnxLaunch(CPU_PROVIDER, planned.threads)
    if device == "gpu":
        return OnnxLaunch(onnx_gpu_provider(here), planned.threads)
    working = here.onnxruntime.working_providers if here.onnxruntime is not None else []
    if planned.provider != CPU_PROVIDER and planned.provider not in working:
        raise HardwareError(
            f"{folder}: the plan runs ONNX Runtime on {planned.provider}, which does not "
            "initialize here; use --device cpu"
        )
    return OnnxLaunch(planned.provider, planned.threads)


def bench_spec(
    path: Path, device: str, threads: int | None, hardware: HardwareProfile | None = None
) -> LaunchSpec:
    """The launch spec an artifact is measured with (its context is sized in
    the measurement). ``auto``: the plan for this machine (or ``hardware``), as
    ``edgeglm run`` loads it; ``cpu``: that spec with nothing offloaded;
    ``gpu``: every layer offloaded, no tensor kept back on the CPU."""
    from edgeglm.runtime import planned_spec

    spec = planned_spec(path, hardware)
    if threads is not None:
        spec = spec.with_(n_threads=threads)
    if device == "cpu":
        return spec.with_(n_gpu_layers=0, main_gpu=0, tensor_split=(), tensor_overrides=())
    if device == "gpu":
        g = read_gguf(path)
        n_block = g.get(f"{g.architecture}.block_count")
        if not isinstance(n_block, int):
            raise UsageError(f"{path}: no {g.architecture}.block_count to offload")
        return spec.with_(n_gpu_layers=n_block + 1, tensor_overrides=())  # blocks + output
    return spec


def _tokens(art: Artifact, text: str) -> list[int]:
    """The held-out text as the artifact's tokens (run in a child: it loads the model)."""
    from edgeglm.backends.base import Backend

    m: Backend
    if art.backend == "onnx":
        from edgeglm.backends.onnx import OnnxModel

        m = OnnxModel(art.path)
    else:
        from edgeglm.backends.llamacpp import LlamaCppModel

        m = LlamaCppModel(art.path, n_ctx=64)
    try:
        return m.tokenize(text)
    finally:
        m.close()


def run_bench(
    request: BenchRequest,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    convert_progress: ConvertProgress | None = None,
) -> BenchReport:
    """Measure every artifact of ``request``. Ctrl-C (KeyboardInterrupt) while
    measuring returns the rows that finished, ``complete=False``; before the
    first artifact is measured (converting, checking) it propagates.
    ``convert_progress`` hears of each checkpoint converted on first use."""
    from edgeglm.hardware import load_profile, probe

    sel = parse(request.backends, request.quants)
    refs = [(m, resolve(m)) for m in request.models]
    check_selection(refs, sel)
    text_path = request.text or default_text([r for _, r in refs])
    try:
        heldout = text_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{text_path}: cannot read ({e})") from e
    settings: dict[str, Any] = {
        "prompt_tokens": request.prompt_tokens,
        "decode_tokens": request.decode_tokens,
        "repeat": request.repeat,
        "threads": request.threads,
        "text": str(text_path),
        "sampling": "greedy",
        "warmup": True,
        "device": request.device,
        "hardware": str(request.hardware) if request.hardware is not None else None,
    }
    # Refused before anything is converted or measured: a profile that does
    # not load, and --device gpu where an engine that would run cannot reach a GPU.
    planned_for = load_profile(request.hardware) if request.hardware is not None else None
    here = probe(bandwidth=False)  # what runs here, and what `edgeglm run` plans for
    if request.device == "gpu":
        if uses_backend(refs, sel, "llama.cpp"):
            check_gpu_offload()
        if uses_backend(refs, sel, "onnx"):
            onnx_gpu_provider(here)
    groups = artifacts_for(list(request.models), sel, convert_progress)
    for art in (a for g in groups for a in g if a.backend == "llama.cpp"):
        verify_gguf(art.path)  # header checks, then a load in a child: before anything else
    report = BenchReport(fingerprint(), settings)
    total = sum(len(g) for g in groups)
    bandwidths = Bandwidths(_bandwidth(), *gpu_bandwidth(here))
    try:
        for group in groups:
            texts = _group_tokens(group, heldout, text_path)
            eval_tokens = texts[group[0].backend][:EVAL_TOKENS]
            prompt = (eval_tokens * (request.prompt_tokens // len(eval_tokens) + 1))[
                : request.prompt_tokens
            ]
            ref: Reference | None = None
            for art in group:
                if should_stop is not None and should_stop():
                    raise KeyboardInterrupt
                if progress is not None:
                    progress(f"{art.label}", len(report.rows) / total)
                own = texts[art.backend][:EVAL_TOKENS]
                res = _measure(art, request, prompt, own, planned_for or here, here)
                row = make_row(art, res, own, bandwidths, here)
                if ref is None:
                    ref = Reference(art.label, res.logits, own)
                    row.reference = True
                elif own != ref.tokens:
                    row.quality_note = (
                        f"no KL: {art.backend} tokenizes the held-out text unlike the "
                        f"reference {ref.label}"
                    )
                else:
                    compare_with(row, ref.label, ref.logits, res.logits)
                report.rows.append(row)
                report.warnings += noise_warnings(row, request.repeat)
        if progress is not None:
            progress("done", 1.0)
    except KeyboardInterrupt:
        report.complete = False
    return report


# Quality is measured on at most this many tokens of the held-out text.
EVAL_TOKENS = 1024


@dataclass(frozen=True)
class Reference:
    """A group's reference: its label, logits and the tokens they are for."""

    label: str
    logits: npt.NDArray[np.float32]
    tokens: list[int]


def uses_backend(refs: list[tuple[str | None, Any]], sel: Selection, backend: str) -> bool:
    """Whether any row of this request runs in ``backend`` (before converting)."""
    kinds = {r.kind for _, r in refs}
    own = "gguf" if backend == "llama.cpp" else "onnx"
    return own in kinds or ("hf" in kinds and backend in sel.checkpoint_backends())


def _group_tokens(group: list[Artifact], heldout: str, text_path: Path) -> dict[str, list[int]]:
    """The held-out text as each backend in the group tokenizes it (in a child:
    tokenizing loads the model), with the first artifact of that backend."""
    out: dict[str, list[int]] = {}
    for art in group:
        if art.backend not in out:
            what = f"{art.backend} tokenizing with {art.label}"
            out[art.backend] = run_isolated(_tokens, art, heldout, what=what)
    n = len(out[group[0].backend])
    if n < 16:
        raise UsageError(f"{text_path}: too short to measure quality ({n} tokens)")
    return out


def _measure(
    art: Artifact,
    request: BenchRequest,
    prompt: list[int],
    eval_tokens: list[int],
    planned_for: HardwareProfile,
    here: HardwareProfile,
) -> Measurement:
    """One artifact measured in its own child process."""
    what = f"{art.backend} benchmarking {art.label}"
    args = (str(art.path), prompt, eval_tokens, request.repeat)
    if art.backend == "onnx":
        ox = onnx_launch(art.path, request.device, planned_for, here)
        return run_isolated(
            measure_onnx,
            *args,
            request.threads or ox.threads,
            request.decode_tokens,
            ox.provider,
            what=what,
        )
    spec = bench_spec(art.path, request.device, request.threads, planned_for)
    if request.rpc:  # the measuring child is the isolation ggml-rpc's aborts need
        from edgeglm.rpc.client import lost_worker, rpc_spec

        spec = rpc_spec(spec.with_(rpc=request.rpc))
    try:
        return run_isolated(
            measure_llamacpp,
            *args,
            request.threads,
            request.decode_tokens,
            spec,
            request.device == "cpu",  # GPUs hidden: nothing runs there
            what=what,
        )
    except BackendError:
        lost = lost_worker(request.rpc) if request.rpc else None
        if lost is not None:
            raise lost from None
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: edgeglm bench")
