"""Sparse mixture of experts: DeepSeek-V3-style routing in the graph, experts in one ORT op.

GLM-4.5/4.6/4.7, GLM-4.7-Flash and GLM-5.x route alike (transformers'
``route_tokens_to_experts``, DeepSeek's noaux_tc)::

    x --> router (float32) --> Sigmoid --> scores ----------------------------+
                                      \\-> +e_score_correction_bias --> choice |
    choice --> [group-limited: keep the topk_group best groups, 0 elsewhere]   |
           --> TopK(k) --> indices --> GatherElements(scores) <----------------+
           --> [/ sum (norm_topk_prob)] --> * routed_scaling_factor
           --> ScatterElements --> weights [tokens, n_expert], 0 off the top k

The bias only chooses; the weights come from the unbiased scores. The dense
``weights`` carry both the choice (the only nonzero entries) and the mixing
weights, and the expert op is fed them so that it picks exactly the graph's
experts and runs only those:

- quantized experts: QMoE, with ``router_weights`` (its DeepSeek mode: the
  first input only selects, the second mixes) set to ``weights`` for both;
- float experts: MoE, which softmaxes its router input. Fed ``log(weights)``
  (-inf off the top k) it mixes with ``weights / sum(weights)``, so its output
  is scaled back by ``sum(weights)``.

Both ops on ORT's CPU provider take SwiGLU only with gate and up interleaved
row by row (``swiglu_fusion=1``; 0 and 2 are refused at session creation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edgeglm.checkpoint.config import Config
from edgeglm.converters.onnx.graph import GraphBuilder
from edgeglm.converters.onnx.ops import make_linear, stored
from edgeglm.converters.onnx.quant import Precision, WeightFormat, quantize_blocks
from edgeglm.errors import CheckpointError, ConversionError

F32Array = npt.NDArray[np.float32]
# One routed expert's (gate [ff, hidden], up [ff, hidden], down [hidden, ff]), float32.
ExpertWeights = Callable[[int], tuple[F32Array, F32Array, F32Array]]

_F32 = WeightFormat.F32
# The router picks experts: float32 at every precision (llama.cpp keeps it F32 too).
ROUTER = Precision("router", np.float32, _F32, _F32, _F32)


@dataclass(frozen=True)
class Routing:
    """The routing hyperparameters, as config.json names them."""

    n_expert: int  # n_routed_experts
    top_k: int  # num_experts_per_tok
    n_group: int = 1
    topk_group: int = 1
    norm_topk_prob: bool = True
    scaling: float = 1.0  # routed_scaling_factor

    @classmethod
    def from_config(cls, c: Config) -> Routing:
        r = cls(
            n_expert=int(c.need("n_routed_experts")),
            top_k=int(c.need("num_experts_per_tok")),
            n_group=int(c.get("n_group", default=1) or 1),
            topk_group=int(c.get("topk_group", default=1) or 1),
            norm_topk_prob=bool(c.get("norm_topk_prob", default=True)),
            scaling=float(c.get("routed_scaling_factor", default=1.0)),
        )
        if r.n_expert % r.n_group or not 0 < r.topk_group <= r.n_group:
            raise CheckpointError(
                f"{c.where}: n_group={r.n_group}, topk_group={r.topk_group} do not divide "
                f"n_routed_experts={r.n_expert} into groups"
            )
        if not 0 < r.top_k <= r.topk_group * (r.n_expert // r.n_group):
            raise CheckpointError(
                f"{c.where}: num_experts_per_tok={r.top_k} is more than the "
                f"{r.topk_group * (r.n_expert // r.n_group)} experts routing can choose from"
            )
        return r


def make_router(
    g: GraphBuilder,
    name: str,
    x32: str,
    gate: F32Array,
    bias: F32Array | None,
    r: Routing,
    wname: str,
) -> str:
    """Mixing weights [tokens, n_expert] (tokens flattened), nonzero on the chosen experts."""
    logits = make_linear(g, f"{name}/router", x32, gate, None, _F32, ROUTER, wname + ".weight")
    logits = g.one("Reshape", [logits, g.const([-1, r.n_expert])], f"{name}/router/tokens")
    scores = g.one("Sigmoid", [logits], f"{name}/router")
    choice = scores
    if bias is not None:
        b = g.weight(wname + ".e_score_correction_bias", bias.astype(np.float32))
        choice = g.one("Add", [scores, b], f"{name}/router/choice")
    if r.n_group > 1 and r.topk_group < r.n_group:
        choice = _limit_groups(g, f"{name}/router/groups", choice, r)
    _, idx = g.node("TopK", [choice, g.const([r.top_k])], f"{name}/router", n_out=2, axis=-1)
    w = g.one("GatherElements", [scores, idx], f"{name}/router", axis=-1)
    if r.norm_topk_prob:
        total = g.one("ReduceSum", [w, g.const([-1])], f"{name}/router/norm", keepdims=1)
        total = g.one("Add", [total, g.const(1e-20, np.float32)], f"{name}/router/norm")
        w = g.one("Div", [w, total], f"{name}/router/norm")
    w = g.one("Mul", [w, g.const(r.scaling, np.float32)], f"{name}/router/scale")
    zeros = g.one("Mul", [scores, g.const(0.0, np.float32)], f"{name}/router/zeros")
    return g.one("ScatterElements", [zeros, idx, w], f"{name}/router", axis=-1)


def _limit_groups(g: GraphBuilder, name: str, choice: str, r: Routing) -> str:
    """Zero the choice scores outside the ``topk_group`` groups whose two best experts
    sum highest (transformers' masked_fill(~mask, 0.0): zero, not -inf)::

    choice --> Reshape [t, groups, per] --> TopK(2) --> ReduceSum --> TopK(topk_group)
           --> ScatterElements(ones) --> mask [t, groups, 1] --> Where(choice, -inf)
    """
    per = r.n_expert // r.n_group
    grouped = g.one("Reshape", [choice, g.const([-1, r.n_group, per])], name)
    best2, _ = g.node("TopK", [grouped, g.const([2])], f"{name}/best2", n_out=2, axis=-1)
    group_scores = g.one("ReduceSum", [best2, g.const([-1])], name, keepdims=0)
    _, keep = g.node("TopK", [group_scores, g.const([r.topk_group])], name, n_out=2, axis=-1)
    zeros = g.one("Mul", [group_scores, g.const(0.0, np.float32)], f"{name}/zeros")
    ones = g.one("Add", [g.one("Mul", [keep, g.const(0)], f"{name}/ones"), g.const(1)],
                 f"{name}/ones")  # fmt: skip
    ones = g.one("Cast", [ones], f"{name}/ones", to=1)  # FLOAT
    mask = g.one("ScatterElements", [zeros, keep, ones], name, axis=-1)
    mask = g.one("Cast", [g.one("Unsqueeze", [mask, g.const([-1])], name)], name, to=9)  # BOOL
    # -inf, as transformers and llama.cpp mask: with a negative correction bias an
    # in-group score can be below 0, and a 0 would let a left-out group's expert win.
    dropped = g.const(float("-inf"), np.float32)
    kept = g.one("Where", [mask, grouped, dropped], name)
    return g.one("Reshape", [kept, g.const([-1, r.n_expert])], f"{name}/flat")


def make_sparse_experts(
    g: GraphBuilder,
    name: str,
    x32: str,
    weights: str,
    experts: ExpertWeights,
    r: Routing,
    ff: int,
    hidden: int,
    prec: Precision,
    wname: str,
) -> str:
    """sum over the chosen experts of weights[t, e] * expert_e(x[t]), float32 out.

    ``weights`` is make_router's output; ``experts(e)`` is called once per expert,
    so a layer's experts are never held in float32 twice. ``wname`` prefixes the
    stacked initializers (``{wname}.fc1`` = gate|up interleaved, ``{wname}.fc2`` = down).
    """
    c, fmt = prec.compute, prec.linear
    x = g.cast(x32, c, f"{name}/input", have=np.float32)
    # Tokens flattened, as the router's weights are; shaped back at the end.
    tokens = g.one("Reshape", [x, g.const([-1, hidden])], f"{name}/tokens")
    g.formats[fmt.value] += 2 * r.n_expert
    if fmt.quantized:
        y = _qmoe(g, name, tokens, weights, experts, r, ff, hidden, prec, wname)
    else:
        y = _moe(g, name, tokens, weights, experts, r, ff, hidden, prec, wname)
    shape = g.one("Shape", [x32], f"{name}/output")
    return g.one("Reshape", [y, shape], f"{name}/output")


def _moe(
    g: GraphBuilder,
    name: str,
    x: str,
    weights: str,
    experts: ExpertWeights,
    r: Routing,
    ff: int,
    hidden: int,
    prec: Precision,
    wname: str,
) -> str:
    c, fmt = prec.compute, prec.linear
    dtype = np.float16 if fmt is WeightFormat.F16 else np.float32
    fc1 = np.empty((r.n_expert, 2 * ff, hidden), dtype)
    fc2 = np.empty((r.n_expert, hidden, ff), dtype)
    for e in range(r.n_expert):
        gate, up, down = experts(e)
        fc1[e] = stored(_interleave(gate, up), dtype, f"{wname}.{e}.gate_up")
        fc2[e] = stored(down, dtype, f"{wname}.{e}.down")
    # MoE softmaxes its router input: log(w) gives w / sum(w) on the chosen experts.
    logw = g.cast(g.one("Log", [weights], f"{name}/route"), c, f"{name}/route", have=np.float32)
    y = g.one(
        "MoE",
        [x, logw, g.weight(f"{wname}.fc1", fc1), "", g.weight(f"{wname}.fc2", fc2)],
        name,
        domain="com.microsoft",
        k=r.top_k,
        activation_type="swiglu",
        swiglu_fusion=1,
        normalize_routing_weights=0,
        activation_alpha=1.0,
        activation_beta=0.0,
    )
    y32 = g.cast(y, np.float32, f"{name}/output", have=c)
    total = g.one("ReduceSum", [weights, g.const([-1])], f"{name}/route/sum", keepdims=1)
    return g.one("Mul", [y32, total], f"{name}/unnormalize")


def _qmoe(
    g: GraphBuilder,
    name: str,
    x: str,
    weights: str,
    experts: ExpertWeights,
    r: Routing,
    ff: int,
    hidden: int,
    prec: Precision,
    wname: str,
) -> str:
    fmt, c = prec.linear, prec.compute
    # QMoE's blocks must tile both widths (no padded last block): halve down to 16 if needed.
    bs = prec.block_size
    while bs > 16 and (hidden % bs or ff % bs):
        bs //= 2
    if hidden % bs or ff % bs:
        raise ConversionError(
            f"{wname}: QMoE needs hidden ({hidden}) and moe_intermediate_size ({ff}) to be "
            "multiples of 16"
        )
    sym = prec.symmetric or fmt is WeightFormat.INT8
    stacks: dict[str, list[npt.NDArray[np.generic]]] = {}
    for e in range(r.n_expert):
        gate, up, down = experts(e)
        for part, w in (("fc1", _interleave(gate, up)), ("fc2", down)):
            bq = quantize_blocks(w, fmt.bits, bs, symmetric=sym)
            stacks.setdefault(part, []).append(bq.packed.reshape(w.shape[0], -1))
            stacks.setdefault(f"{part}.scales", []).append(bq.scales.astype(c))
            if bq.zero_points is not None:
                stacks.setdefault(f"{part}.zero_points", []).append(bq.zero_points)

    def stacked(key: str) -> str:
        if key not in stacks:
            return ""
        return g.weight(f"{wname}.{key}", np.stack(stacks.pop(key)))

    route = g.cast(weights, c, f"{name}/route", have=np.float32)
    inputs = [x, route, stacked("fc1"), stacked("fc1.scales"), "", stacked("fc2"),
              stacked("fc2.scales"), "", "", "", "", stacked("fc1.zero_points"),
              stacked("fc2.zero_points"), "", route]  # fmt: skip
    y = g.one(
        "QMoE",
        inputs,
        name,
        domain="com.microsoft",
        k=r.top_k,
        activation_type="swiglu",
        swiglu_fusion=1,
        normalize_routing_weights=0,
        activation_alpha=1.0,
        activation_beta=0.0,
        expert_weight_bits=fmt.bits,
        block_size=bs,
        accuracy_level=prec.accuracy_level,
    )
    return g.cast(y, np.float32, f"{name}/output", have=c)


def _interleave(gate: F32Array, up: F32Array) -> F32Array:
    """Rows gate[0], up[0], gate[1], up[1], ...: swiglu_fusion=1's fc1 layout."""
    return np.stack([gate, up], axis=1).reshape(-1, gate.shape[1])
