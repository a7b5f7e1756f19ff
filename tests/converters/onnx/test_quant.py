"""The numpy block quantizer against ORT's own MatMulNBits kernel, and the precision table."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeglm.converters.onnx.quant import (
    PRECISIONS,
    WeightFormat,
    dequantize_blocks,
    precision,
    quantize_blocks,
)
from edgeglm.errors import QuantizationError, UsageError


def _matmulnbits(
    x: np.ndarray, w: np.ndarray, bits: int, symmetric: bool, block: int = 32, level: int = 0
) -> np.ndarray:
    """Run one MatMulNBits node (level 0: the exact fp32 path) on our packing."""
    n, k = w.shape
    bq = quantize_blocks(w, bits, block, symmetric=symmetric)
    inits = [numpy_helper.from_array(bq.packed, "B"), numpy_helper.from_array(bq.scales, "S")]
    if bq.zero_points is not None:
        inits.append(numpy_helper.from_array(bq.zero_points, "Z"))
    node = helper.make_node(
        "MatMulNBits", ["x", "B", "S", "Z" if bq.zero_points is not None else ""], ["y"],
        domain="com.microsoft", K=k, N=n, bits=bits, block_size=block, accuracy_level=level,
    )  # fmt: skip
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["s", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["s", n])], inits,
    )  # fmt: skip
    model = helper.make_model(
        graph, ir_version=10,
        opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)],
    )  # fmt: skip
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"x": x})[0])


# K = 80: a padded last block; 3 blocks per row: an odd count of packed 4-bit zero points.
@pytest.mark.parametrize("k", [64, 80])
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_ort_computes_with_exactly_the_weights_we_quantized(
    k: int, bits: int, symmetric: bool
) -> None:
    rng = np.random.default_rng(bits * k)
    w = rng.standard_normal((24, k)).astype(np.float32)
    x = rng.standard_normal((3, k)).astype(np.float32)
    deq = dequantize_blocks(quantize_blocks(w, bits, 32, symmetric=symmetric))
    np.testing.assert_allclose(_matmulnbits(x, w, bits, symmetric), x @ deq.T, atol=1e-4)


@pytest.mark.parametrize("block", [32, 64, 128])
@pytest.mark.parametrize("level", [0, 4])
@pytest.mark.parametrize("symmetric", [True, False])
def test_every_block_size_and_accuracy_level_runs(block: int, level: int, symmetric: bool) -> None:
    """K = 320: blocks of 128 leave a padded last block. Level 4 quantizes the
    activations to int8 per block: close, not exact."""
    rng = np.random.default_rng(block + level)
    w = rng.standard_normal((48, 320)).astype(np.float32)
    x = rng.standard_normal((5, 320)).astype(np.float32)
    deq = dequantize_blocks(quantize_blocks(w, 4, block, symmetric=symmetric))
    want = x @ deq.T
    got = _matmulnbits(x, w, 4, symmetric, block, level)
    tol = 1e-4 if level == 0 else 0.02 * np.abs(want).max()
    np.testing.assert_allclose(got, want, atol=tol)


@pytest.mark.parametrize("bits", [4, 8])
def test_symmetric_error_is_at_most_half_a_step(bits: int) -> None:
    w = np.random.default_rng(1).standard_normal((16, 96)).astype(np.float32)
    bq = quantize_blocks(w, bits, 32, symmetric=True)
    err = np.abs(dequantize_blocks(bq) - w).reshape(16, 3, 32)
    step = np.abs(bq.scales)[..., None]
    # Symmetric codes span [-2^(b-1), 2^(b-1) - 1] steps (Q4_0's rule): a value near
    # minus the block's extreme clips to the last code, up to one step away.
    edge = np.abs(w.reshape(16, 3, 32)) > (2 ** (bits - 1) - 1) * step
    bound = np.where(edge, step, step / 2)
    assert (err <= bound + 1e-6).all()


@pytest.mark.parametrize("block", [32, 128])
def test_asymmetric_blocks_beat_min_max_rounding_in_every_block(block: int) -> None:
    """The span search never loses to plain [min, max] rounding, and wins on average
    (asymmetric blocks are int4's; 8-bit blocks are always symmetric)."""
    bits = 4
    w = np.random.default_rng(2).standard_normal((64, 256)).astype(np.float32)
    w[::7, 5] *= 6  # outliers: where min/max rounding wastes its codes
    x = w.reshape(64, -1, block)
    lo, hi = np.minimum(x.min(-1), 0)[..., None], np.maximum(x.max(-1), 0)[..., None]
    step = (hi - lo) / (2**bits - 1)
    zero = np.round(-lo / step)
    plain = (np.clip(np.round(x / step) + zero, 0, 2**bits - 1) - zero) * step
    ours = dequantize_blocks(quantize_blocks(w, bits, block, symmetric=False)).reshape(x.shape)
    sse_plain, sse_ours = ((plain - x) ** 2).sum(-1), ((ours - x) ** 2).sum(-1)
    assert (sse_ours <= sse_plain * (1 + 1e-5) + 1e-9).all()
    assert sse_ours.sum() < 0.97 * sse_plain.sum()


def test_zero_blocks_and_bad_input() -> None:
    bq = quantize_blocks(np.zeros((2, 32), np.float32), 4, 32, symmetric=False)
    assert not dequantize_blocks(bq).any()
    with pytest.raises(QuantizationError, match="NaN"):
        quantize_blocks(np.full((2, 32), np.nan, np.float32), 4, 32, symmetric=True)
    with pytest.raises(QuantizationError, match="3-bit"):
        quantize_blocks(np.zeros((2, 32), np.float32), 3, 32, symmetric=True)


def test_precision_table() -> None:
    assert list(PRECISIONS) == ["fp32", "fp16", "int8", "int4"]
    int4 = precision("INT4")
    assert int4.linear is WeightFormat.INT4 and int4.head.bits >= 8
    assert (int4.block_size, int4.accuracy_level) == (128, 4)
    assert all(p.head.bits >= 8 for p in PRECISIONS.values())
    with pytest.raises(UsageError, match="fp32, fp16, int8, int4"):
        precision("Q4_K_M")


@pytest.mark.parametrize("block", [32, 128])
@pytest.mark.parametrize("hidden", [64, 80])  # 80: a padded last block the graph slices off
def test_quantized_embedding_gathers_the_dequantized_rows(hidden: int, block: int) -> None:
    import dataclasses

    from edgeglm.converters.onnx.graph import GraphBuilder, TensorStore
    from edgeglm.converters.onnx.ops import make_quantized_gather

    table = np.random.default_rng(hidden).standard_normal((10, hidden)).astype(np.float32)
    g = GraphBuilder(TensorStore(None))
    ids = g.add_input("ids", np.int64, [1, "s"])
    prec = dataclasses.replace(PRECISIONS["int4"], block_size=block)
    out = make_quantized_gather(g, "/emb", ids, table, prec, "emb")
    g.rename_output(out, "rows")
    g.add_output("rows", np.float32, [1, "s", hidden])
    sess = ort.InferenceSession(g.model("t", {}).SerializeToString())
    got = sess.run(None, {"ids": np.array([[3, 0, 9, 3]], np.int64)})[0]
    want = dequantize_blocks(quantize_blocks(table, 8, block, symmetric=True))[[3, 0, 9, 3]]
    np.testing.assert_allclose(got[0], want, rtol=1e-6, atol=1e-6)
