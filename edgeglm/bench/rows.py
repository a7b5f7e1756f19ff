"""One report row from one measurement: sizes, speed spreads, quality against
the group's reference, VRAM against the plan, and the roofline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from edgeglm.bench.measure import Measurement
from edgeglm.bench.report import BenchRow, Spread
from edgeglm.bench.roofline import roofline, weight_reads
from edgeglm.bench.select import Artifact
from edgeglm.bench.vram import planned_vram
from edgeglm.gguf_file import read_gguf
from edgeglm.metrics import kl_divergence, log_softmax
from edgeglm.planner.launch import LaunchSpec

if TYPE_CHECKING:
    from edgeglm.hardware.profile import HardwareProfile


@dataclass(frozen=True)
class Bandwidths:
    """Bytes/s of the memories weights are read from (None: not known)."""

    cpu: float | None
    gpu: float | None
    gpu_about: str  # where the GPU figure came from, or why there is none


def make_row(
    art: Artifact,
    res: Measurement,
    eval_tokens: list[int],
    bandwidths: Bandwidths,
    here: HardwareProfile,
) -> BenchRow:
    """The row without quality against a reference (``compare_with`` adds it)."""
    lp = log_softmax(res.logits[:-1])
    nll = -lp[np.arange(len(eval_tokens) - 1), eval_tokens[1:]]
    row = BenchRow(
        label=art.label,
        model=art.model,
        quant=art.quant,
        backend=art.backend,
        device=res.device,
        file_bytes=_size(art.path),
        bits_per_weight=bits_per_weight(art),
        load_s=res.load_s,
        ttft_s=Spread.of(res.ttft_s),
        prefill_tps=Spread.of(res.prefill_tps),
        decode_tps=Spread.of(res.decode_tps),
        peak_rss_bytes=res.peak_rss_bytes,
        vram_bytes=res.vram_bytes,
        ppl=float(np.exp(nll.mean())),
        bytes_per_token=None,
        provider=res.provider,
        vram_model_bytes=res.vram_model_bytes,
    )
    vram_note = res.vram_note or "not measured"
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


def compare_with(
    row: BenchRow,
    reference: str,
    ref_logits: npt.NDArray[np.float32],
    logits: npt.NDArray[np.float32],
) -> None:
    """KL divergence and top-1 agreement against the reference's logits
    (the same tokens: the caller checked)."""
    kl = kl_divergence(ref_logits, logits)
    row.reference_label = reference
    row.kl_mean = float(kl.mean())
    row.kl_p99 = float(np.percentile(kl, 99))
    row.top1 = float((ref_logits.argmax(-1) == logits.argmax(-1)).mean())


def noise_warnings(row: BenchRow, repeat: int) -> list[str]:
    """A spread wider than a quarter of its median: the machine was busy."""
    out = []
    for what, s, unit in (
        ("decode", row.decode_tps, "tok/s"),
        ("prefill", row.prefill_tps, "tok/s"),
    ):
        if s.noisy and s.iqr is not None:
            out.append(
                f"{row.label}: {what} speed varied widely over {repeat} runs (interquartile "
                f"range {s.iqr:.1f} on a median of {s.median:.1f} {unit}; runs "
                f"{s.min:.1f} to {s.max:.1f}): another program was probably using the "
                "machine. The median is reported; measure again on a quiet machine, or "
                "with more --repeat"
            )
    return out


def _size(path: Path) -> int:
    """A GGUF file, or an ONNX folder's files."""
    if path.is_dir():
        return sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    return path.stat().st_size


def bits_per_weight(art: Artifact) -> float | None:
    """A GGUF's tensor bytes over its elements; an ONNX model's weight bytes
    over its parameters (onnx_weights.py)."""
    if art.backend == "onnx":
        from edgeglm.bench.onnx_weights import onnx_weights

        return onnx_weights(art.path).bits_per_weight
    tensors = read_gguf(art.path).tensors
    n = sum(t.n_elements for t in tensors)
    return sum(t.n_bytes for t in tensors) * 8 / max(n, 1)
