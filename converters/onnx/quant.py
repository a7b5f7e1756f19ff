"""Precisions as data, and the numpy block quantizer behind MatMulNBits.

MatMulNBits (com.microsoft) stores a linear layer's weight ``W`` [N, K] row
by row, cut along K into blocks of ``block_size``: per block one scale and
(optionally) one integer zero point, ``w = (q - zero_point) * scale``. The
4-bit codes are packed two per byte, the even element in the low nibble;
zero points are packed the same way across the blocks of a row. Without a
zero-point input the kernel assumes ``2**(bits - 1)`` (symmetric). See the
operator schema in onnxruntime's ContribOperators.md.
"""

from __future__ import annotations

import enum
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edgeglm.errors import QuantizationError, UsageError
from edgeglm.hardware.cpu import usable_threads

F32Array = npt.NDArray[np.float32]
U8Array = npt.NDArray[np.uint8]


class WeightFormat(enum.Enum):
    F32 = "float32"
    F16 = "float16"
    INT8 = "int8"
    INT4 = "int4"

    @property
    def bits(self) -> int:
        return {"float32": 32, "float16": 16, "int8": 8, "int4": 4}[self.value]

    @property
    def quantized(self) -> bool:
        return self in (WeightFormat.INT8, WeightFormat.INT4)


@dataclass(frozen=True)
class Precision:
    """How one ``--quant`` choice stores each kind of tensor and computes with it."""

    name: str
    # dtype of the matmul activations, attention and KV cache. Norms, the
    # residual stream and the logits are float32 at every precision: GLM's
    # residual stream carries outliers beyond float16's range (65504).
    compute: type[np.floating]
    linear: WeightFormat  # q/k/v/o, MLP and expert projections
    head: WeightFormat  # lm_head: the logits are the most sensitive matmul
    embedding: WeightFormat  # a Gather: its storage, never its speed, is at stake
    # int4: asymmetric (min/max) blocks lose less than Q4_0-style ones. 8-bit blocks
    # are always symmetric (Q8_0's rule), so a tied head and embedding share codes.
    symmetric: bool = False
    block_size: int = 32
    # MatMulNBits on CPU: 4 = quantize activations to int8 per block and use
    # integer dot products (what llama.cpp does for its Q4_0/Q8_0 matmuls).
    accuracy_level: int = 4


PRECISIONS: dict[str, Precision] = {
    "fp32": Precision("fp32", np.float32, WeightFormat.F32, WeightFormat.F32, WeightFormat.F32),
    "fp16": Precision("fp16", np.float16, WeightFormat.F16, WeightFormat.F16, WeightFormat.F16),
    # Weight-only int8: symmetric 8-bit blocks are already near-lossless.
    "int8": Precision(
        "int8", np.float32, WeightFormat.INT8, WeightFormat.INT8, WeightFormat.INT8, symmetric=True
    ),
    # int4 body, 8-bit output head (as llama.cpp's Q4 mixes keep output.weight at Q6_K/Q8_0).
    # Blocks of 128: asymmetric 4-bit blocks with a float32 scale and a 4-bit zero point
    # cost 4.28 bits a weight (Q4_0: 4.5), decode no slower than blocks of 32, and still
    # beat Q4_0's KL on every fixture (benchmarks/onnx_int4_kl.py); blocks of 32 cost 5.1.
    "int4": Precision(
        "int4", np.float32, WeightFormat.INT4, WeightFormat.INT8, WeightFormat.INT8, block_size=128
    ),
}


def precision(name: str) -> Precision:
    try:
        return PRECISIONS[name.lower()]
    except KeyError:
        raise UsageError(
            f"--quant {name!r} is not an ONNX precision; choose one of {', '.join(PRECISIONS)}"
        ) from None


@dataclass
class BlockQuantized:
    """MatMulNBits inputs B, scales and zero_points for one weight."""

    packed: U8Array  # [N, k_blocks, block_size * bits / 8]
    scales: F32Array  # [N, k_blocks]
    zero_points: U8Array | None  # [N, ceil(k_blocks * bits / 8)], None = symmetric
    bits: int
    block_size: int
    k: int


# Rows quantized at a time: bounds the float32 temporaries for a 150k-row head.
_ROWS = 1024
# Slices quantized at once: numpy's array ops release the GIL, so threads scale; the cap
# bounds memory (each slice's temporaries are a few times rows x K float32).
_WORKERS = 8


def quantize_blocks(
    w: npt.NDArray[np.floating], bits: int, block_size: int, *, symmetric: bool
) -> BlockQuantized:
    """Block quantization of ``w`` [N, K] along K.

    Symmetric blocks follow llama.cpp's Q4_0/Q8_0 rule: the value of largest
    magnitude maps to the most negative code, so the full code range is used.
    Asymmetric blocks map [min, max] (widened to include 0), or the narrower span
    of least squared error, onto [0, 2^bits - 1] (``_search_asymmetric``).
    """
    if bits not in (4, 8):
        raise QuantizationError(f"MatMulNBits: {bits}-bit weights are not supported here")
    if w.ndim != 2:
        raise QuantizationError(f"block quantization needs a 2-D weight, got shape {w.shape}")
    if not np.isfinite(w).all():
        raise QuantizationError("weight contains NaN or Inf values")
    starts = range(0, w.shape[0], _ROWS)
    workers = min(_WORKERS, usable_threads(), len(starts))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(
            lambda r: _quantize_rows(w[r : r + _ROWS], bits, block_size, symmetric), starts
        ))  # fmt: skip
    packed = np.concatenate([p[0] for p in parts])
    scales = np.concatenate([p[1] for p in parts])
    zero = None if symmetric else _pack_zero_points(np.concatenate([p[2] for p in parts]), bits)
    return BlockQuantized(packed, scales, zero, bits, block_size, w.shape[1])


# Asymmetric blocks: the fraction of [min, max] the codes span, tried per block (1.0 =
# plain min/max rounding, always a candidate, so the search is never worse than it).
_SPANS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75)


def _quantize_rows(
    w: npt.NDArray[np.floating], bits: int, block_size: int, symmetric: bool
) -> tuple[U8Array, F32Array, U8Array]:
    """(packed codes, scales, unpacked zero points) for a slice of rows."""
    n, k = w.shape
    n_blocks = -(-k // block_size)
    x = np.zeros((n, n_blocks * block_size), dtype=np.float32)
    x[:, :k] = w  # zero padding quantizes exactly and meets no activation
    x = x.reshape(n, n_blocks, block_size)
    qmax = (1 << bits) - 1
    if symmetric:
        mid = 1 << (bits - 1)
        idx = np.abs(x).argmax(axis=-1)[..., None]
        scale: F32Array = (np.take_along_axis(x, idx, axis=-1)[..., 0] / -mid).astype(np.float32)
        zero: F32Array = np.full(scale.shape, mid, dtype=np.float32)
        q = _codes(x, scale, zero, qmax)
    else:
        scale, zero, q = _search_asymmetric(x, qmax)
    packed = q if bits == 8 else _pack_nibbles(q)
    return packed, scale.astype(np.float32), zero.astype(np.uint8)


def _codes(x: F32Array, scale: F32Array, zero: F32Array, qmax: int) -> U8Array:
    safe = np.where(scale == 0, 1.0, scale).astype(np.float32)
    return np.clip(np.round(x / safe[..., None]) + zero[..., None], 0, qmax).astype(np.uint8)


def _search_asymmetric(x: F32Array, qmax: int) -> tuple[F32Array, F32Array, U8Array]:
    """Per block, the (scale, zero point) of least squared error among narrowed spans.

    Min/max rounding spends codes on a block's rare extremes; a narrower span clips
    them but rounds the bulk finer (llama.cpp's K-quants search the same way). For each
    span the codes are rounded, then the scale refitted to them by least squares with
    the integer zero point fixed, as MatMulNBits requires: for codes d = q - zero the
    best scale is <x, d> / <d, d>, leaving an error of <x, x> - <x, d>^2 / <d, d>.
    """
    lo = np.minimum(x.min(axis=-1), 0.0)  # widened to include 0: zero stays exact
    hi = np.maximum(x.max(axis=-1), 0.0)
    best_err = np.full(lo.shape, np.inf, dtype=np.float32)
    best_fit = np.zeros(lo.shape, dtype=np.float32)
    best_zero = np.zeros(lo.shape, dtype=np.float32)
    for span in _SPANS:
        scale = ((hi - lo) * np.float32(span / qmax)).astype(np.float32)
        zero = np.clip(np.round(-lo / np.where(scale == 0, 1.0, scale)), 0, qmax)
        d = _codes(x, scale, zero, qmax).astype(np.float32)
        d -= zero[..., None]
        xd = np.einsum("...k,...k->...", x, d)
        dd = np.einsum("...k,...k->...", d, d)
        # <x, x> is the same for every span: compare -<x, d>^2 / <d, d> alone
        err = np.where(dd > 0, -(xd * xd) / np.where(dd > 0, dd, 1.0), 0.0)
        take = err < best_err
        best_err = np.where(take, err, best_err)
        best_fit = np.where(take, np.where(dd > 0, xd / np.where(dd > 0, dd, 1.0), scale),
                            best_fit)  # fmt: skip
        best_zero = np.where(take, zero, best_zero)
    # The chosen zero point with the refitted scale: round the codes once more. Within
    # a chosen span the refit moves the scale little; the codes are recomputed so that
    # they are exactly what the stored scale and zero point reproduce best.
    return best_fit, best_zero, _codes(x, best_fit, best_zero, qmax)


def dequantize_blocks(bq: BlockQuantized) -> F32Array:
    """The weight MatMulNBits computes with (for tests and error reports)."""
    n, n_blocks = bq.scales.shape
    if bq.bits == 8:
        q = bq.packed.astype(np.float32)
    else:
        q = np.empty((n, n_blocks, bq.block_size), dtype=np.float32)
        q[..., 0::2] = bq.packed & 0x0F
        q[..., 1::2] = bq.packed >> 4
    if bq.zero_points is None:
        zero = np.full((n, n_blocks), 1 << (bq.bits - 1), dtype=np.float32)
    elif bq.bits == 8:
        zero = bq.zero_points.astype(np.float32)
    else:
        both = np.stack([bq.zero_points & 0x0F, bq.zero_points >> 4], axis=-1)
        zero = both.reshape(n, -1)[:, :n_blocks].astype(np.float32)
    w = (q - zero[..., None]) * bq.scales[..., None]
    return np.ascontiguousarray(w.reshape(n, -1)[:, : bq.k])


def _pack_nibbles(q: U8Array) -> U8Array:
    return (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)


def _pack_zero_points(zero: U8Array, bits: int) -> U8Array:
    if bits == 8:
        return zero
    if zero.shape[1] % 2:
        zero = np.concatenate([zero, np.zeros((zero.shape[0], 1), np.uint8)], axis=1)
    return _pack_nibbles(zero)
