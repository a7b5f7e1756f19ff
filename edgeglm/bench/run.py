"""``edgeglm bench``: every artifact measured for speed and quality in one run.

For each model, the artifacts are its GGUF quants (converted on first use)
plus the highest-precision one, whose logits are the quality reference.
Each artifact is measured in its own child process (measure.py); quality is
KL divergence of next-token distributions against the reference on a
held-out text, computed here in float64.

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
from edgeglm.artifacts import ensure_gguf, ensure_onnx, resolve, verify_gguf
from edgeglm.backends.isolated import run_isolated
from edgeglm.bench.measure import (
    DECODE_TOKENS,
    PROMPT_TOKENS,
    Measurement,
    measure_llamacpp,
    measure_onnx,
)
from edgeglm.bench.report import BenchReport, BenchRow, Spread
from edgeglm.bench.roofline import roofline, weight_reads
from edgeglm.bench.vram import planned_vram
from edgeglm.converters.gguf.quant_types import quant_name
from edgeglm.errors import HardwareError, UsageError
from edgeglm.gguf_file import GGUFFile, read_gguf
from edgeglm.metrics import kl_divergence, log_softmax
from edgeglm.planner.launch import LaunchSpec

if TYPE_CHECKING:
    from edgeglm.hardware.profile import HardwareProfile

ONNX_QUANTS = ("fp32", "fp16", "int8", "int4")

HELDOUT = Path(__file__).with_name("heldout.txt")
# Precision order for choosing the reference artifact (best first).
_PRECISION = ["F32", "BF16", "F16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q4_K_M"]

Progress = Callable[[str, float], None]
# Timed runs per artifact: a median of more says nothing new, and takes hours.
MAX_REPEAT = 1000
DEVICES = ("auto", "cpu", "gpu")


@dataclass(frozen=True)
class BenchRequest:
    """What to benchmark and how; the CLI, the TUI and the demo all build one."""

    models: tuple[str | None, ...] = (None,)  # None: the bundled demo model
    quants: tuple[str, ...] = ("Q8_0", "Q4_K_M")  # for Hugging Face models
    backends: tuple[str, ...] = ("llama.cpp",)
    text: Path | None = None  # held-out text for quality; None: the bundled one
    repeat: int = 3  # timed runs per artifact (the median is reported)
    threads: int | None = None
    prompt_tokens: int = PROMPT_TOKENS
    decode_tokens: int = DECODE_TOKENS
    # "auto" the plan's placement and provider, "cpu" nothing on a GPU, "gpu" all on the GPU
    device: str = "auto"
    # plan the auto rows for this hardware profile instead of this machine (measured here)
    hardware: Path | None = None

    def __post_init__(self) -> None:
        """The bounds every benchmark is held to, whoever builds the request."""
        from edgeglm.backends.base import INT32_MAX, check_count, check_threads

        check_count("repeat", self.repeat, 1, MAX_REPEAT)
        check_threads(self.threads)
        check_count("prompt_tokens", self.prompt_tokens, 1, INT32_MAX)
        check_count("decode_tokens", self.decode_tokens, 1, INT32_MAX)
        if self.device not in DEVICES:
            raise UsageError(f"--device {self.device!r}: choose one of {', '.join(DEVICES)}")
        if not self.models or not self.backends:
            raise UsageError("a benchmark needs at least one model and one backend")


@dataclass(frozen=True)
class Artifact:
    label: str
    model: str
    quant: str
    backend: str
    path: Path


def _file_quant(path: Path) -> str:
    file_type = read_gguf(path).get("general.file_type")
    name = quant_name(file_type) if isinstance(file_type, int) else None
    return name or "unknown"


def _text_key(g: GGUFFile, key: str) -> str:
    v = g.get(key)
    return v if isinstance(v, str) else ""


def _gguf_identity(path: Path) -> tuple[str, str]:
    g = read_gguf(path)
    return _text_key(g, "general.architecture"), _text_key(g, "general.name")


def artifacts_for(
    models: list[str | None], quants: list[str], backends: list[str]
) -> list[list[Artifact]]:
    """Groups of artifacts of one model each, the reference (highest precision) first.

    A Hugging Face model yields one artifact per quant (converted on first
    use) plus a full-precision reference; GGUF files of the same model (same
    architecture and general.name) given together form one group.
    """
    unknown = [b for b in backends if b not in ("llama.cpp", "onnx", "auto")]
    if unknown:
        raise UsageError(f"unknown backend(s) {unknown}; choose llama.cpp and/or onnx")
    use_llama = any(b in ("llama.cpp", "auto") for b in backends)
    use_onnx = "onnx" in backends
    groups: dict[tuple[str, ...], list[Artifact]] = {}
    for ref in models:
        art = resolve(ref)
        if art.kind == "gguf":
            key = ("gguf", *_gguf_identity(art.path))
            a = Artifact(art.path.stem, str(ref), _file_quant(art.path), "llama.cpp", art.path)
            groups.setdefault(key, []).append(a)
        elif art.kind == "hf":
            name, label = art.path.name, str(ref or "demo")
            gguf_q = [q.upper() for q in quants if q.lower() not in ONNX_QUANTS]
            onnx_q = [q.lower() for q in quants if q.lower() in ONNX_QUANTS] or ["int4"]
            if not any(q in ("F32", "BF16", "F16") for q in gguf_q):
                gguf_q.insert(0, "F32")  # the quality reference, for every backend
            items = [
                Artifact(f"{name} {q}", label, q, "llama.cpp", ensure_gguf(art.path, q))
                for q in gguf_q
                if use_llama or q == gguf_q[0]
            ]
            if use_onnx:
                items += [
                    Artifact(f"{name} onnx {q}", label, q, "onnx", ensure_onnx(art.path, q))
                    for q in onnx_q
                ]
            groups[("hf", str(art.path))] = items
        else:
            groups[("onnx", str(art.path))] = [
                Artifact(art.path.name, str(ref), "onnx", "onnx", art.path)
            ]
    rank = {q: i for i, q in enumerate(_PRECISION)}
    return [
        sorted(g, key=lambda a: (rank.get(a.quant, len(rank)), a.backend)) for g in groups.values()
    ]


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
) -> BenchReport:
    if request.repeat < 1:
        raise UsageError("--repeat must be at least 1")
    text_path = request.text or HELDOUT
    try:
        heldout = text_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{text_path}: cannot read ({e})") from e
    settings = {
        "prompt_tokens": request.prompt_tokens,
        "decode_tokens": request.decode_tokens,
        "repeat": request.repeat,
        "threads": request.threads,
        "text": str(text_path),
        "sampling": "greedy",
        "warmup": True,
    }
    from edgeglm.hardware import load_profile, probe

    # Refused before anything is converted or measured: a profile that does
    # not load, and --device gpu where an engine that would run cannot reach a GPU.
    planned_for = load_profile(request.hardware) if request.hardware is not None else None
    here = probe(bandwidth=False)  # what runs here, and what `edgeglm run` plans for
    kinds = {resolve(m).kind for m in request.models}
    # GGUF files run in llama.cpp, ONNX folders in ONNX Runtime, and a Hugging
    # Face model's quality reference is a llama.cpp row whatever the backends.
    use_llama = bool(kinds & {"gguf", "hf"})
    use_onnx = "onnx" in kinds or ("onnx" in request.backends and "hf" in kinds)
    if request.device == "gpu":
        if use_llama:
            check_gpu_offload()
        if use_onnx:
            onnx_gpu_provider(here)
    settings["device"] = request.device
    settings["hardware"] = str(request.hardware) if request.hardware is not None else None
    groups = artifacts_for(list(request.models), list(request.quants), list(request.backends))
    for art in (a for g in groups for a in g if a.backend == "llama.cpp"):
        verify_gguf(art.path)  # header checks, then a load in a child: before anything else
    report = BenchReport(fingerprint(), settings)
    total = sum(len(g) for g in groups)
    bandwidths = Bandwidths(_bandwidth(), *gpu_bandwidth(here))
    done = 0
    try:
        for group in groups:
            tokens = run_isolated(
                _tokens,
                group[0],
                heldout,
                what=f"{group[0].backend} tokenizing with {group[0].label}",
            )
            eval_tokens = tokens[:1024]
            if len(eval_tokens) < 16:
                raise UsageError(
                    f"{text_path}: too short to measure quality ({len(tokens)} tokens)"
                )
            prompt = (tokens * (request.prompt_tokens // max(len(tokens), 1) + 1))[
                : request.prompt_tokens
            ]
            ref_logits: npt.NDArray[np.float32] | None = None
            for art in group:
                if should_stop is not None and should_stop():
                    raise KeyboardInterrupt
                if progress is not None:
                    progress(f"{art.label}", done / total)
                what = f"{art.backend} benchmarking {art.label}"
                args = (str(art.path), prompt, eval_tokens, request.repeat)
                if art.backend == "onnx":
                    ox = onnx_launch(art.path, request.device, planned_for or here, here)
                    res = run_isolated(
                        measure_onnx,
                        *args,
                        request.threads or ox.threads,
                        request.decode_tokens,
                        ox.provider,
                        what=what,
                    )
                else:
                    spec = bench_spec(
                        art.path, request.device, request.threads, planned_for or here
                    )
                    res = run_isolated(
                        measure_llamacpp,
                        *args,
                        request.threads,
                        request.decode_tokens,
                        spec,
                        request.device == "cpu",  # GPUs hidden: nothing runs there
                        what=what,
                    )
                row = _row(art, res, ref_logits, eval_tokens, bandwidths, here)
                report.rows.append(row)
                if ref_logits is None:
                    ref_logits = res.logits
                done += 1
        if progress is not None:
            progress("done", 1.0)
    except KeyboardInterrupt:
        report.complete = False
    return report


@dataclass(frozen=True)
class Bandwidths:
    """Bytes/s of the memories weights are read from (None: not known)."""

    cpu: float | None
    gpu: float | None
    gpu_about: str  # where the GPU figure came from, or why there is none


def _row(
    art: Artifact,
    res: Measurement,
    ref_logits: npt.NDArray[np.float32] | None,
    eval_tokens: list[int],
    bandwidths: Bandwidths,
    here: HardwareProfile,
) -> BenchRow:
    logits = res.logits
    lp = log_softmax(logits[:-1])
    nll = -lp[np.arange(len(eval_tokens) - 1), eval_tokens[1:]]
    row = BenchRow(
        label=art.label,
        model=art.model,
        quant=art.quant,
        backend=art.backend,
        device=res.device,
        file_bytes=_size(art.path),
        bits_per_weight=_bpw(art.path) if art.backend != "onnx" else None,
        load_s=res.load_s,
        ttft_s=Spread.of(res.ttft_s),
        prefill_tps=Spread.of(res.prefill_tps),
        decode_tps=Spread.of(res.decode_tps),
        peak_rss_bytes=res.peak_rss_bytes,
        vram_bytes=res.vram_bytes,
        ppl=float(np.exp(nll.mean())),
        bytes_per_token=None,
        reference=ref_logits is None,
        provider=res.provider,
        vram_model_bytes=res.vram_model_bytes,
    )
    vram_note = res.vram_note or "not measured"
    if ref_logits is not None:
        kl = kl_divergence(ref_logits, logits)
        row.kl_mean = float(kl.mean())
        row.kl_p99 = float(np.percentile(kl, 99))
        row.top1 = float((ref_logits.argmax(-1) == logits.argmax(-1)).mean())
    if art.backend == "onnx":
        row.roofline_note = "ONNX Runtime: the bytes read per token are not derived"
        row.vram_note = f"{vram_note}; planned: the ONNX plan estimates RAM only"
        return row
    ran = LaunchSpec.from_dict(res.launch) if res.launch is not None else None
    row.vram_note = vram_note
    if ran is not None:
        row.vram_planned_bytes, planned_note = planned_vram(art.path, ran, here)
        row.vram_note = f"{vram_note}; planned: {planned_note}"
        row.launch = res.launch
        reads = weight_reads(art.path, ran)
        row.device = reads.placement  # where the weights were read from: cpu, gpu or split
        row.bytes_per_token = reads.total
        row.bytes_per_token_cpu = reads.cpu_bytes
        row.bytes_per_token_gpu = reads.gpu_bytes
        row.bandwidth_cpu_gbps = bandwidths.cpu / 1e9 if bandwidths.cpu else None
        row.bandwidth_gpu_gbps = bandwidths.gpu / 1e9 if bandwidths.gpu else None
        roof = roofline(
            reads, row.decode_tps.median, bandwidths.cpu, bandwidths.gpu, bandwidths.gpu_about
        )
        row.decode_efficiency, row.roofline_note = roof.efficiency, roof.note
    return row


def _size(path: Path) -> int:
    """A GGUF file, or an ONNX folder's files."""
    if path.is_dir():
        return sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    return path.stat().st_size


def _bpw(path: Path) -> float:
    tensors = read_gguf(path).tensors
    n = sum(t.n_elements for t in tensors)
    return sum(t.n_bytes for t in tensors) * 8 / max(n, 1)


def main_table(report: BenchReport) -> Any:
    """A rich Table for the terminal."""
    from rich.table import Table

    from edgeglm.bench.report import pareto_front, vram_cell

    front = {id(r) for r in pareto_front(report.rows)}
    t = Table(
        title="latency against quality" + ("" if report.complete else " (interrupted: partial)")
    )
    cols = ["artifact", "device", "MiB", "bpw", "load s", "TTFT ms", "prefill t/s", "decode t/s"]
    cols += ["RSS MiB", "VRAM MiB (model / plan)", "mean KL", "p99 KL", "top-1", "PPL"]
    cols += ["roofline"]
    for col in cols:
        t.add_column(col, justify="left" if col == "artifact" else "right")
    for r in report.rows:
        spread = (r.decode_tps.max - r.decode_tps.min) / 2
        quality = (
            ["ref", "", ""]
            if r.reference
            else [f"{r.kl_mean:.5f}", f"{r.kl_p99:.4f}", f"{r.top1:.3f}"]
        )
        t.add_row(
            r.label + (" *" if id(r) in front else ""),
            r.device + (f" ({r.provider.removesuffix('ExecutionProvider')})" if r.provider else ""),
            f"{r.file_bytes / 2**20:.1f}",
            f"{r.bits_per_weight or 0:.2f}",
            f"{r.load_s:.2f}",
            f"{r.ttft_s.median * 1000:.0f}",
            f"{r.prefill_tps.median:.0f}",
            f"{r.decode_tps.median:.1f} ±{spread:.1f}",
            f"{r.peak_rss_bytes / 2**20:.0f}",
            vram_cell(r),
            *quality,
            f"{r.ppl:.2f}" if r.ppl else "–",
            f"{r.decode_efficiency * 100:.0f}%" if r.decode_efficiency else "–",
        )
    if any((r.decode_efficiency or 0) > 1 for r in report.rows):
        t.caption = (
            "roofline above 100%: the weights fit in CPU caches, so memory bandwidth "
            "is not what limits decode"
        )
    return t


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: edgeglm bench")
