"""Subgraphs every GLM family uses: linear layers at any precision, RMS norms, SwiGLU.

Each ``make_*`` takes the builder, a node-name prefix and input names, and
returns output names; none of them knows about layers or families.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edgeglm.converters.onnx.graph import GraphBuilder
from edgeglm.converters.onnx.quant import Precision, WeightFormat, quantize_blocks
from edgeglm.errors import ConversionError

F32Array = npt.NDArray[np.float32]


def make_linear(
    g: GraphBuilder,
    name: str,
    x: str,
    weight: F32Array,
    bias: F32Array | None,
    fmt: WeightFormat,
    prec: Precision,
    wname: str,
) -> str:
    """y = x @ weight.T + bias, with ``weight`` [N, K] as the checkpoint stores it.

    Float formats::

        x --> MatMul(W.T) --> Add(bias) --> y

    int8/int4::

        x --> MatMulNBits(B, scales, zero_points, bias) --> y

    ``x`` must already be in ``prec.compute``; so is ``y``.
    """
    if not np.isfinite(weight).all():
        raise ConversionError(f"{wname}: contains NaN or Inf values")
    n, k = weight.shape
    compute = prec.compute
    g.formats[fmt.value] += 1
    if fmt.quantized:
        bq = quantize_blocks(weight, fmt.bits, prec.block_size, symmetric=_symmetric(fmt, prec))
        # A tied head finds the embedding's 8-bit codes and scales already stored: kept once.
        codes, scales = f"{wname}.q{fmt.bits}", f"{wname}.scales"
        inputs = [
            x,
            codes if g.has(codes) else g.weight(codes, bq.packed),
            scales if g.has(scales) else g.weight(scales, bq.scales.astype(compute)),
            g.weight(f"{wname}.zero_points", bq.zero_points) if bq.zero_points is not None else "",
        ]
        if bias is not None:
            inputs += ["", g.weight(f"{wname}.bias", bias.astype(compute))]  # "" = no g_idx
        return g.one(
            "MatMulNBits",
            inputs,
            name,
            domain="com.microsoft",
            K=k,
            N=n,
            bits=fmt.bits,
            block_size=prec.block_size,
            accuracy_level=prec.accuracy_level,
        )
    dtype = np.float16 if fmt is WeightFormat.F16 else np.float32
    if dtype != compute:
        raise ConversionError(f"{wname}: {fmt.value} weights with {np.dtype(compute)} compute")
    w_t = stored(weight.T, dtype, wname)
    y = g.one("MatMul", [x, g.weight(f"{wname}.T", w_t)], name)
    if bias is None:
        return y
    return g.one("Add", [y, g.weight(f"{wname}.bias", bias.astype(dtype))], name)


def make_quantized_gather(
    g: GraphBuilder, name: str, ids: str, table: F32Array, prec: Precision, wname: str
) -> str:
    """Embedding rows from 8-bit blocks, in float32 (codes and scales shared with a tied
    head, which stores them as MatMulNBits does: scales [vocab, blocks])::

    ids --> GatherBlockQuantized(codes [vocab, blocks, block], Unsqueeze(scales)) --> Reshape
        --> [Slice]
    """
    hidden = table.shape[1]
    bq = quantize_blocks(table, 8, prec.block_size, symmetric=True)
    scales = g.weight(f"{wname}.scales", bq.scales.astype(np.float32))
    rows = g.one(
        "GatherBlockQuantized",
        [
            g.weight(f"{wname}.q8", bq.packed),
            ids,
            g.one("Unsqueeze", [scales, g.const([-1])], f"{name}/scales"),
        ],
        name,
        domain="com.microsoft",
        bits=8,
        block_size=prec.block_size,
        gather_axis=0,
        quantize_axis=2,
    )
    flat = g.one("Reshape", [rows, g.const([0, 0, -1])], name)
    if bq.packed.shape[1] * prec.block_size == hidden:
        return flat
    ends = g.const([hidden])  # drop the zero padding of a short last block
    return g.one("Slice", [flat, g.const([0]), ends, g.const([-1])], name)


def _symmetric(fmt: WeightFormat, prec: Precision) -> bool:
    return prec.symmetric or fmt is WeightFormat.INT8


def stored(array: F32Array, dtype: type[np.floating], wname: str) -> npt.NDArray[np.floating]:
    """``array`` as a C-ordered ``dtype`` initializer; float16 overflow is an error, not inf."""
    if dtype == np.float16 and array.size and np.abs(array).max() > np.finfo(np.float16).max:
        raise ConversionError(
            f"{wname}: values beyond float16's range (65504); convert with --quant fp32"
        )
    return np.ascontiguousarray(array, dtype=dtype)


def make_rms_norm(
    g: GraphBuilder, name: str, x: str, gamma: F32Array, eps: float, wname: str
) -> str:
    """RMSNorm in float32 (ORT's SimplifiedLayerNormalization, ONNX domain)."""
    return g.one(
        "SimplifiedLayerNormalization",
        [x, g.weight(wname, gamma.astype(np.float32))],
        name,
        axis=-1,
        epsilon=eps,
        stash_type=1,
    )


def make_skip_rms_norm(
    g: GraphBuilder, name: str, x: str, skip: str, gamma: F32Array, eps: float, wname: str
) -> tuple[str, str]:
    """Residual add fused with the next RMSNorm; returns (normed, new residual)::

    x ----+
          SkipSimplifiedLayerNorm --> normed
    skip -+                      \\--> x + skip (the residual stream, float32)
    """
    full = f"{name}/SkipSimplifiedLayerNormalization"
    normed, residual = f"{full}/output_0", f"{full}/output_3"
    g.node(
        "SkipSimplifiedLayerNormalization",
        [x, skip, g.weight(wname, gamma.astype(np.float32))],
        name,
        domain="com.microsoft",
        outputs=[normed, "", "", residual],
        epsilon=eps,
    )
    return normed, residual


def make_swiglu(g: GraphBuilder, name: str, gate_up: str, ff: int) -> str:
    """silu(gate) * up over the fused [gate | up] projection (transformers' chunk(2))::

    gate_up --> Split --> gate --> Sigmoid --> Mul(gate) --> Mul --> out
                      \\-> up ----------------------------/
    """
    gate, up = g.node("Split", [gate_up, g.const([ff, ff])], name, n_out=2, axis=-1)
    sig = g.one("Sigmoid", [gate], name)
    # ORT fuses Sigmoid+Mul into one SiLU-style kernel (QuickGelu fusion).
    silu = g.one("Mul", [gate, sig], f"{name}/silu")
    return g.one("Mul", [silu, up], name)
