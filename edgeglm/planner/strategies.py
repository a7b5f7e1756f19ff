"""Placement strategies: for one model, machine and context, the best placement of each kind.

Each strategy answers "can this run with everything on the GPU / with the
routed experts in RAM / with some layers on the GPU / on the CPU, and with
exactly which llama.cpp settings?". They differ only in which tensors they
move; fitting (what each device holds against what it may use) is shared.
The rule "experts leave the GPU before attention does" is the order in
policy.STRATEGIES plus gpu_partial keeping experts in RAM for MoE models.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from edgeglm.planner.machine import Budget, GiB
from edgeglm.planner.model import ModelFacts
from edgeglm.planner.placement import Layout, Placement, Settings, fits, lay_out


@dataclass(frozen=True)
class Placed:
    placement: Placement
    settings: Settings
    layout: Layout


def _split(b: Budget) -> tuple[float, ...]:
    """tensor_split by usable VRAM (GiB, 1 decimal), as users would type it."""
    if len(b.gpus) < 2:
        return ()
    return tuple(round(g.usable_bytes / GiB, 1) for g in b.gpus)


def _try(facts: ModelFacts, p: Placement, s: Settings, b: Budget) -> Placed | None:
    layout = lay_out(facts, p, s, b)
    if b.unified:
        # The GPU's memory *is* RAM: both limits apply, to the sum and to Metal's share.
        on_gpu = sum(d.total for d in layout.devices[1:])
        if layout.cpu.total + on_gpu > b.ram_usable or not fits(layout, b):
            return None
        return Placed(p, s, layout)
    return Placed(p, s, layout) if fits(layout, b) else None


def gpu_full(facts: ModelFacts, s: Settings, b: Budget) -> Placed | None:
    if not b.gpus or b.unified:
        return None
    return _try(facts, Placement("gpu_full", facts.n_layer_all + 1, tensor_split=_split(b)), s, b)


def unified(facts: ModelFacts, s: Settings, b: Budget) -> Placed | None:
    if not b.unified:
        return None
    return _try(facts, Placement("unified", facts.n_layer_all + 1), s, b)


def _moe_blocks(facts: ModelFacts) -> list[int]:
    return [i for i in range(facts.n_layer_dense_lead, facts.n_layer) if facts.blocks.experts[i]]


def gpu_moe_split(facts: ModelFacts, s: Settings, b: Budget) -> Placed | None:
    """All blocks on the GPU, routed experts in RAM; then as many blocks' experts
    back on the GPU as fit, from the last block down (llama.cpp's --n-cpu-moe
    keeps the *first* N blocks' experts on the CPU)."""
    if not b.gpus or b.unified or not facts.is_moe:
        return None
    moe = _moe_blocks(facts)
    split = _split(b)

    def place(n_back: int) -> Placement:
        on_cpu = tuple(moe[: len(moe) - n_back])
        return Placement(
            "gpu_moe_split",
            facts.n_layer_all + 1,
            cpu_expert_layers=on_cpu,
            all_experts_on_cpu=n_back == 0,
            tensor_split=split,
        )

    def gpu_fits(n_back: int) -> bool:
        layout = lay_out(facts, place(n_back), s, b)
        return all(
            d.total <= g.usable_bytes for d, g in zip(layout.devices[1:], b.gpus, strict=True)
        )

    if not gpu_fits(0):
        return None  # attention alone does not fit: gpu_partial moves whole blocks
    n_back = _max_true(gpu_fits, 0, len(moe) - 1)
    return _try(facts, place(n_back), s, b)


def gpu_partial(facts: ModelFacts, s: Settings, b: Budget) -> Placed | None:
    """The most blocks (with the output layer) that fit on the GPUs; MoE blocks on
    the GPU keep their experts in RAM, so attention gets the VRAM first."""
    if not b.gpus or b.unified:
        return None
    moe = set(_moe_blocks(facts))
    split = _split(b)

    def place(ngl: int) -> Placement:
        start = max(facts.n_layer_all + 1 - ngl, 0)
        on_cpu = tuple(i for i in range(start, facts.n_layer_all) if i in moe)
        return Placement("gpu_partial", ngl, cpu_expert_layers=on_cpu, tensor_split=split)

    def gpu_fits(ngl: int) -> bool:
        layout = lay_out(facts, place(ngl), s, b)
        return all(
            d.total <= g.usable_bytes for d, g in zip(layout.devices[1:], b.gpus, strict=True)
        )

    # ngl = 1 would offload only the output layer: not worth a GPU plan.
    if not gpu_fits(2):
        return None
    ngl = _max_true(gpu_fits, 2, facts.n_layer_all)
    return _try(facts, place(ngl), s, b)


def cpu(facts: ModelFacts, s: Settings, b: Budget) -> Placed | None:
    return _try(facts, Placement("cpu", 0), s, b)


def _max_true(ok: Callable[[int], bool], lo: int, hi: int) -> int:
    """Largest n in [lo, hi] with ok(n), given ok(lo) and ok monotone decreasing."""
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


STRATEGY_FUNCS: dict[str, Callable[[ModelFacts, Settings, Budget], Placed | None]] = {
    "gpu_full": gpu_full,
    "unified": unified,
    "gpu_moe_split": gpu_moe_split,
    "gpu_partial": gpu_partial,
    "cpu": cpu,
}
