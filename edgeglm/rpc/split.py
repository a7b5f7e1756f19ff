"""Where layers go when ``--rpc`` names workers and the plan has not said.

STAND-IN: the planner's RPC split (``edgeglm plan --rpc``: layers in
proportion to each device's free memory) replaces ``stand_in_split`` when it
lands; only ``with_rpc_split`` is called from outside.

llama.cpp's semantics, which any split must follow: ``n_gpu_layers`` counts
the output layer and the last ``n - 1`` blocks; those go to the offload
devices in ``tensor_split`` proportions, the first blocks stay on this
machine's CPU. With no device list given, llama.cpp orders the offload
devices RPC first (each worker's devices, in ``--rpc`` order), then local
GPUs (src/llama.cpp, "add RPC servers at the front of the list").
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from edgeglm.planner.launch import LaunchSpec
from edgeglm.rpc.endpoints import WorkerInfo


def _block_count(gguf: Path) -> int:
    from edgeglm.gguf_file import read_gguf

    g = read_gguf(gguf)
    n = g.get(f"{g.architecture}.block_count")
    return int(n) if isinstance(n, int) else 0


def stand_in_split(n_blocks: int, workers: list[WorkerInfo]) -> tuple[int, tuple[float, ...]]:
    """An even share of the blocks for this machine and for each worker device."""
    devices = [d for w in workers for d in w.devices]
    share = n_blocks * len(devices) // (len(devices) + 1)
    return share + 1, tuple(1.0 for _ in devices)  # + 1: the output layer


def with_rpc_split(spec: LaunchSpec, workers: list[WorkerInfo]) -> LaunchSpec:
    """``spec`` with layers on the workers, unless it already places some."""
    if not spec.rpc or spec.n_gpu_layers or spec.tensor_split or spec.artifact is None:
        return spec
    ngl, split = stand_in_split(_block_count(Path(spec.artifact)), workers)
    return replace(spec, n_gpu_layers=ngl, tensor_split=split)
