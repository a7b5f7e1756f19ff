"""Decode roofline: how close decode came to the memory bandwidth it was bound by.

One decode step reads every weight the token passes through once. Where each
weight lives follows from the launch spec that ran, by llama.cpp's own rules
(llama-model.cpp ``load_tensors`` and llama-model-loader.cpp ``create_tensor``
in llama-cpp-python 0.3.36):

- ``n_gpu_layers`` counts the output layer first, then the last blocks: with
  ``n`` blocks, block ``i`` is on a GPU when ``i >= n + 1 - n_gpu_layers``, the
  output layer when ``n_gpu_layers >= 1``;
- the input layer (``token_embd``) stays on the CPU; a model without
  ``output.weight`` reads ``token_embd`` as its output matrix, placed with the
  output layer;
- a tensor override (regex searched in the tensor's name, first match wins)
  moves a weight to the device it names, whatever its layer;
- the MTP/NextN blocks after the last layer are not loaded (llama.cpp skips
  them unless asked for MTP), so nothing of them is read.

The fastest a step can be is then ``bytes_cpu / bw_cpu + bytes_gpu / bw_gpu``;
the efficiency is that time over the measured one. No bandwidth is invented:
where the memory a weight was read from has no known bandwidth, there is no
efficiency, and ``note`` says why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edgeglm.gguf_file import GGUFFile, read_gguf
from edgeglm.planner.launch import LaunchSpec

Placement = Literal["cpu", "gpu", "split"]


@dataclass(frozen=True)
class WeightReads:
    """Weight bytes one decode step reads, by the memory they were read from."""

    cpu_bytes: int
    gpu_bytes: int

    @property
    def total(self) -> int:
        return self.cpu_bytes + self.gpu_bytes

    @property
    def placement(self) -> Placement:
        if self.gpu_bytes and self.cpu_bytes:
            return "split"
        return "gpu" if self.gpu_bytes else "cpu"


@dataclass(frozen=True)
class Roofline:
    efficiency: float | None  # measured decode speed over the bandwidth bound
    note: str  # what the bound was computed from, or why there is none


def on_cpu_device(device: str) -> bool:
    """``-ot`` device names: ``CPU`` and the CPU's buffer types (``CPU_REPACK`` ...)."""
    return device.upper().startswith("CPU")


def _block(name: str) -> int | None:
    m = re.match(r"blk\.(\d+)\.", name)
    return int(m.group(1)) if m else None


def weight_reads(gguf: Path | GGUFFile, spec: LaunchSpec) -> WeightReads:
    """Bytes per decoded token from CPU RAM and from GPU memory under ``spec``."""
    g = read_gguf(gguf) if isinstance(gguf, Path) else gguf
    arch = g.architecture
    n_block = g.get(f"{arch}.block_count")
    n_nextn = g.get(f"{arch}.nextn_predict_layers")
    n_exp, n_used = g.get(f"{arch}.expert_count"), g.get(f"{arch}.expert_used_count")
    if not isinstance(n_block, int):
        raise ValueError(f"{arch}.block_count missing")
    n_trunk = n_block - (n_nextn if isinstance(n_nextn, int) else 0)
    share = 1.0
    if isinstance(n_exp, int) and isinstance(n_used, int) and 0 < n_used <= n_exp:
        share = n_used / n_exp  # routed experts: only those in use are read
    gpu_start = max(n_block + 1 - spec.n_gpu_layers, 0)
    output_on_gpu = spec.n_gpu_layers >= 1
    tied = not any(t.name == "output.weight" for t in g.tensors)
    cpu = gpu = 0.0
    for t in g.tensors:
        block = _block(t.name)
        if t.name == "token_embd.weight" and not tied:
            continue  # one row gathered per token
        if block is not None and block >= n_trunk:
            continue  # MTP/NextN: not loaded
        override = next((o for o in spec.tensor_overrides if re.search(o.pattern, t.name)), None)
        if override is not None:
            on_gpu = not on_cpu_device(override.device)
        elif block is not None:
            on_gpu = block >= gpu_start
        else:  # output layer (output, output_norm; token_embd when tied)
            on_gpu = output_on_gpu
        n = int(t.n_bytes) * (share if "_exps." in t.name else 1.0)
        if on_gpu:
            gpu += n
        else:
            cpu += n
    return WeightReads(int(cpu), int(gpu))


def roofline(
    reads: WeightReads,
    decode_tps: float,
    cpu_bandwidth: float | None,
    gpu_bandwidth: float | None,
    gpu_about: str,
) -> Roofline:
    """Efficiency from bandwidths in bytes/s (None: unknown). ``gpu_about``:
    where the GPU figure came from, or why there is none. The RAM figure is
    always one measured on this machine (hardware/bandwidth.py)."""
    if decode_tps <= 0 or reads.total <= 0:
        return Roofline(None, "nothing measured")
    parts: list[str] = []
    bound_s = 0.0
    for nbytes, bw, memory, about in (
        (reads.cpu_bytes, cpu_bandwidth, "RAM", "no measured RAM bandwidth"),
        (reads.gpu_bytes, gpu_bandwidth, "VRAM", gpu_about),
    ):
        if not nbytes:
            continue
        if not bw:
            return Roofline(None, f"{reads.placement}: {about}")
        bound_s += nbytes / bw
        source = " (measured)" if memory == "RAM" else f" ({about})"
        parts.append(f"{nbytes / 2**20:.1f} MiB/token from {memory} at {bw / 1e9:.0f} GB/s{source}")
    return Roofline(decode_tps * bound_s, f"{reads.placement}: " + " + ".join(parts))
