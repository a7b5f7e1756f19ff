"""The sparse MoE subgraph (converters/onnx/moe.py) in real onnxruntime, against numpy.

The numpy side transcribes transformers' Glm4MoeTopkRouter / route_tokens_to_experts
(sigmoid, bias only for choosing, group-limited top-k with masked_fill 0.0,
norm_topk_prob, routed_scaling_factor) and a dense loop over the chosen experts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgeglm.converters.onnx.graph import GraphBuilder, TensorStore
from edgeglm.converters.onnx.moe import Routing, make_router, make_sparse_experts
from edgeglm.converters.onnx.quant import (
    PRECISIONS,
    Precision,
    WeightFormat,
    dequantize_blocks,
    quantize_blocks,
)

H, FF = 64, 32
Experts = list[tuple[np.ndarray, np.ndarray, np.ndarray]]


def _route(x: np.ndarray, gate: np.ndarray, bias: np.ndarray | None, r: Routing) -> np.ndarray:
    """Dense [tokens, n_expert] mixing weights, as transformers computes them."""
    scores = 1 / (1 + np.exp(-(x @ gate.T).astype(np.float64)))
    choice = scores + (bias if bias is not None else 0)
    if r.n_group > 1:
        grouped = choice.reshape(len(x), r.n_group, -1)
        group_scores = np.sort(grouped, axis=-1)[..., -2:].sum(-1)
        keep = np.argsort(-group_scores, axis=-1)[:, : r.topk_group]
        mask = np.zeros_like(group_scores, dtype=bool)
        np.put_along_axis(mask, keep, True, axis=-1)
        choice = np.where(mask[..., None], grouped, -np.inf).reshape(len(x), -1)
    idx = np.argsort(-choice, axis=-1)[:, : r.top_k]
    w = np.take_along_axis(scores, idx, axis=-1)
    if r.norm_topk_prob:
        w = w / (w.sum(-1, keepdims=True) + 1e-20)
    out: np.ndarray = np.zeros_like(scores)
    np.put_along_axis(out, idx, w * r.scaling, axis=-1)
    return out


def _experts(n: int, seed: int) -> Experts:
    rng = np.random.default_rng(seed)

    def one(shape: tuple[int, int]) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32) * 0.2

    return [(one((FF, H)), one((FF, H)), one((H, FF))) for _ in range(n)]


def _run(
    r: Routing,
    prec: Precision,
    x: np.ndarray,
    gate: np.ndarray,
    bias: np.ndarray | None,
    ex: Experts,
) -> tuple[np.ndarray, np.ndarray]:
    """(router weights, MoE output) of the subgraph for x [1, tokens, H]."""
    g = GraphBuilder(TensorStore(None))
    xin = g.add_input("x", np.float32, [1, "s", H])
    w = make_router(g, "/moe", xin, gate, bias, r, "gate")
    y = make_sparse_experts(g, "/moe/experts", xin, w, lambda e: ex[e], r, FF, H, prec, "experts")
    g.node("Identity", [w], "/test", outputs=["weights"])  # w also feeds the experts
    g.rename_output(y, "y")
    g.add_output("weights", np.float32, ["s", r.n_expert])
    g.add_output("y", np.float32, [1, "s", H])
    model = g.model("moe", {})
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    weights, out = sess.run(["weights", "y"], {"x": x[None]})
    return np.asarray(weights), np.asarray(out)[0]


def _reference(x: np.ndarray, weights: np.ndarray, ex: Experts) -> np.ndarray:
    out = np.zeros_like(x, dtype=np.float64)
    for t in range(len(x)):
        for e in np.flatnonzero(weights[t]):
            gate, up, down = ex[e]
            a, b = gate @ x[t], up @ x[t]
            out[t] += weights[t, e] * (down @ (a / (1 + np.exp(-a)) * b))
    return out


ROUTINGS = [
    Routing(8, 2, norm_topk_prob=True, scaling=2.5),
    Routing(8, 3, norm_topk_prob=False, scaling=1.0),
    Routing(16, 4, n_group=4, topk_group=2, scaling=1.8),  # group-limited, as DeepSeek-V3
    Routing(16, 2, n_group=8, topk_group=1),
]


@pytest.mark.parametrize("r", ROUTINGS, ids=str)
@pytest.mark.parametrize("with_bias", [True, False])
def test_float_experts_match_transformers_routing(r: Routing, with_bias: bool) -> None:
    rng = np.random.default_rng(r.n_expert + r.top_k)
    x = rng.standard_normal((7, H)).astype(np.float32)
    gate = rng.standard_normal((r.n_expert, H)).astype(np.float32) * 0.3
    # a bias large enough to change the choice, as trained GLM biases do
    bias = rng.standard_normal(r.n_expert).astype(np.float32) * 0.5 if with_bias else None
    ex = _experts(r.n_expert, 1)
    weights, y = _run(r, PRECISIONS["fp32"], x, gate, bias, ex)
    expect = _route(x, gate, bias, r)
    np.testing.assert_allclose(weights, expect, atol=1e-6)
    assert ((weights > 0).sum(-1) == r.top_k).all()
    np.testing.assert_allclose(y, _reference(x, expect, ex), atol=2e-5)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_qmoe_computes_with_exactly_the_weights_we_quantized(bits: int, symmetric: bool) -> None:
    """accuracy_level 0 (float activations): QMoE must equal the dequantized experts."""
    fmt = WeightFormat.INT4 if bits == 4 else WeightFormat.INT8
    prec = Precision("t", np.float32, fmt, fmt, fmt, symmetric=symmetric, accuracy_level=0)
    r = Routing(8, 2, scaling=2.5)
    rng = np.random.default_rng(bits)
    x = rng.standard_normal((5, H)).astype(np.float32)
    gate = rng.standard_normal((8, H)).astype(np.float32)
    ex = _experts(8, 2)
    weights, y = _run(r, prec, x, gate, None, ex)
    sym = symmetric or bits == 8

    def deq(w: np.ndarray) -> np.ndarray:
        return dequantize_blocks(quantize_blocks(w, bits, 32, symmetric=sym))

    deq_ex = [(deq(a), deq(b), deq(c)) for a, b, c in ex]
    ref = _reference(x, weights, deq_ex)
    # 8-bit experts always run with int8 activations (no float kernel): a looser bound
    atol = 1e-4 if bits == 4 else 0.05 * np.abs(ref).max()
    np.testing.assert_allclose(y, ref, atol=atol)


@pytest.mark.parametrize("quant", ["int4", "int8", "fp16"])
def test_every_precision_runs_sparse(quant: str) -> None:
    r = Routing(8, 2, n_group=2, topk_group=1)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, H)).astype(np.float32)
    gate = rng.standard_normal((8, H)).astype(np.float32)
    ex = _experts(8, 4)
    weights, y = _run(r, PRECISIONS[quant], x, gate, None, ex)
    ref = _reference(x, weights, ex)
    rel = np.abs(y - ref).max() / np.abs(ref).max()
    assert rel < {"fp16": 2e-3, "int8": 0.05, "int4": 0.2}[quant], rel


@pytest.mark.parametrize(("quant", "op"), [("fp32", "MoE"), ("int4", "QMoE")])
def test_glm4_moe_runs_its_experts_in_one_sparse_node(
    quant: str, op: str, onnx_model: Callable[[str, str], Path]
) -> None:
    m = onnx.load(str(onnx_model("glm4_moe", quant) / "model.onnx"))
    moe = [n for n in m.graph.node if n.op_type == op]
    assert [n.name for n in moe] == ["/model/layers.1/moe/experts/" + op]  # layer 0 is dense
    assert not [n.name for n in m.graph.node if "/experts." in n.name]  # no expert of its own
