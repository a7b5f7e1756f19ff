"""Where each tensor of a plan lives, what each device then holds, how fast it can decode.

The placement follows llama.cpp's own rules (src/llama-model.cpp,
``load_tensors``): ``n_gpu_layers = k`` puts the *output* layer and the last
k-1 blocks on the GPUs; blocks go to GPUs in order, split by the fractions
of ``tensor_split``; token embeddings always stay on the CPU; a tensor
override (``-ot PATTERN=CPU``) keeps matching weights in RAM while the rest
of their block runs on the GPU.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from edgeglm.planner.machine import Budget
from edgeglm.planner.memory import (
    DeviceMemory,
    compute_buffer_bytes,
    host_buffer_bytes,
    kv_cache_bytes,
    runtime_overhead_bytes,
)
from edgeglm.planner.model import ModelFacts

# GGUF routed-expert projections: what "experts to the CPU" moves.
EXPERT_PATTERN = r"ffn_(up|down|gate)_exps\.weight"


@dataclass(frozen=True)
class Settings:
    n_ctx: int
    type_k: str = "f16"
    type_v: str = "f16"
    flash_attn: bool = True
    n_batch: int = 512  # llama-cpp-python's default logical batch
    n_ubatch: int = 512


@dataclass(frozen=True)
class Placement:
    strategy: str
    n_gpu_layers: int  # llama.cpp semantics: output layer + the last (n - 1) blocks
    cpu_expert_layers: tuple[int, ...] = ()  # GPU blocks whose routed experts stay in RAM
    all_experts_on_cpu: bool = False  # every MoE block's experts: a shorter pattern says so
    tensor_split: tuple[float, ...] = ()

    def override_pairs(self) -> list[tuple[str, str]]:
        """(tensor name pattern, device) pairs for llama.cpp's tensor_buft_overrides."""
        if not self.cpu_expert_layers:
            return []
        if self.all_experts_on_cpu:
            block = r"\d+"
        else:
            block = "(" + "|".join(str(i) for i in self.cpu_expert_layers) + ")"
        return [(rf"blk\.{block}\.{EXPERT_PATTERN}", "CPU")]

    def tensor_overrides(self) -> list[str]:
        """llama.cpp -ot / --override-tensor values for this placement."""
        return [f"{pattern}={device}" for pattern, device in self.override_pairs()]


@dataclass
class Layout:
    """The result of placing a model: per-device memory and per-device bytes read per token."""

    devices: list[DeviceMemory]
    active_bytes: dict[str, float] = field(default_factory=dict)  # device -> weight bytes/token
    gpu_layer_count: int = 0
    output_on_gpu: bool = False

    @property
    def cpu(self) -> DeviceMemory:
        return self.devices[0]


def gpu_label(i: int) -> str:
    return f"GPU{i}"


def gpu_blocks(facts: ModelFacts, n_gpu_layers: int) -> range:
    """Block indices llama.cpp puts on GPUs for a given n_gpu_layers."""
    start = max(facts.n_layer_all + 1 - n_gpu_layers, 0)
    return range(start, facts.n_layer_all)


def lay_out(facts: ModelFacts, p: Placement, s: Settings, budget: Budget) -> Layout:
    b = facts.blocks
    total, experts, biggest, biggest_exp = b.total, b.experts, b.largest, b.largest_expert
    cats = facts.bytes_by_category
    n_gpus = len(budget.gpus)
    ngl = p.n_gpu_layers if n_gpus else 0
    blocks = gpu_blocks(facts, ngl) if ngl else range(0)
    cpu = DeviceMemory("CPU", weights=cats["token_embd"], overhead=runtime_overhead_bytes(facts))
    gpus = [DeviceMemory(gpu_label(i)) for i in range(n_gpus)]
    active: dict[str, float] = {"CPU": 0.0, **{g.device: 0.0 for g in gpus}}
    use = facts.n_expert_used / facts.n_expert if facts.is_moe else 1.0
    split = _split(p, budget)
    act = min(ngl, facts.n_layer_all + 1)
    cpu_expert = set(p.cpu_expert_layers)
    kv_layer = kv_cache_bytes(facts, s.n_ctx, s.type_k, s.type_v) / max(facts.n_layer, 1)
    largest_cpu_weight = 0
    for il in range(facts.n_layer_all):
        kv = kv_layer if il < facts.n_layer else 0.0
        if il in blocks:
            dev = gpus[bisect.bisect_right(split, (il - blocks.start) / max(act, 1))]
            stay = experts[il] if il in cpu_expert else 0
            dev.weights += total[il] - stay
            dev.kv_cache += int(kv)
            cpu.weights += stay
            active[dev.device] += total[il] - experts[il] + (experts[il] - stay) * use
            active["CPU"] += stay * use
            if stay:
                largest_cpu_weight = max(largest_cpu_weight, biggest_exp[il])
        else:
            cpu.weights += total[il]
            cpu.kv_cache += int(kv)
            active["CPU"] += total[il] - experts[il] * (1 - use)
            largest_cpu_weight = max(largest_cpu_weight, biggest[il])
    output = cats["output"]
    output_on_gpu = bool(gpus) and ngl >= 1
    if output_on_gpu:
        # Tied embeddings: the output layer's device gets its own copy of the
        # token table (llama.cpp loads the TENSOR_DUPLICATED head there).
        head = output + (cats["token_embd"] if facts.tied_embeddings else 0)
        gpus[-1].weights += head
        active[gpus[-1].device] += head
    else:
        cpu.weights += output
        active["CPU"] += output + (cats["token_embd"] if facts.tied_embeddings else 0)
    _compute(facts, s, cpu, gpus, blocks, largest_cpu_weight, output_on_gpu)
    return Layout([cpu, *gpus], active, len(blocks), output_on_gpu)


def _split(p: Placement, budget: Budget) -> list[float]:
    """Cumulative split points, as llama.cpp builds them from tensor_split."""
    weights = list(p.tensor_split) or [g.usable_bytes for g in budget.gpus] or [1.0]
    total = sum(weights) or 1.0
    cum, acc = [], 0.0
    for w in weights[:-1]:
        acc += w / total
        cum.append(acc)
    return cum


def _compute(
    facts: ModelFacts,
    s: Settings,
    cpu: DeviceMemory,
    gpus: list[DeviceMemory],
    blocks: range,
    largest_cpu_weight: int,
    output_on_gpu: bool,
) -> None:
    """Compute buffers: each GPU running blocks reserves the full graph (VRAM is
    committed on allocation); the CPU needs the resident part of the graph if
    any block runs there, else only the inputs it hands the GPU."""
    fa, ub = s.flash_attn, s.n_ubatch
    active_gpus = {g.device for g in gpus if g.weights}
    for i, g in enumerate(gpus):
        if g.device not in active_gpus:
            continue
        g.compute = compute_buffer_bytes(facts, s.n_ctx, flash_attn=fa, n_ubatch=ub)
        if i == 0 and largest_cpu_weight:
            # Prompt batches offload matmuls on RAM-resident weights to the
            # main GPU (op_offload), copying one weight tensor at a time.
            g.compute += largest_cpu_weight
    cpu_runs_blocks = len(blocks) < facts.n_layer_all or not output_on_gpu
    if cpu_runs_blocks or not gpus:
        cpu.compute = compute_buffer_bytes(
            facts, s.n_ctx, flash_attn=fa, n_ubatch=ub, resident=True
        )
    else:
        cpu.compute = host_buffer_bytes(facts, s.n_ctx, flash_attn=fa, n_ubatch=ub)


def fits(layout: Layout, budget: Budget) -> bool:
    if layout.cpu.total > budget.ram_usable:
        return False
    return all(
        d.total <= g.usable_bytes for d, g in zip(layout.devices[1:], budget.gpus, strict=True)
    )


def decode_ceiling(layout: Layout, budget: Budget) -> float | None:
    """Tokens/s if every device streamed its active weights at full bandwidth."""
    bw = {"CPU": budget.cpu_bandwidth_gbps}
    bw |= {gpu_label(i): g.bandwidth_gbps for i, g in enumerate(budget.gpus)}
    seconds = 0.0
    for dev, nbytes in layout.active_bytes.items():
        if nbytes <= 0:
            continue
        gbps = bw.get(dev)
        if not gbps:
            return None
        seconds += nbytes / (gbps * 1e9)
    return 1.0 / seconds if seconds > 0 else None
