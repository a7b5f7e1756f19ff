"""Bits per weight of an ONNX model, from its weights as stored.

bits per weight = 8 x (bytes of the weight tensors) / (parameters they hold),
the figure a GGUF row gives (every tensor's bytes over its elements):

- weight tensors are the graph's initializers, inline or in external data
  (their ``length``), quantization scales and zero points included: they
  are part of what a quantized weight costs, as a GGUF block's scales are;
- parameters are the weights' own elements: a float tensor's elements, a
  MatMulNBits weight's K x N, a GatherBlockQuantized table's codes (two per
  byte at 4 bits), a DequantizeLinear/MatMulInteger weight's int8 elements;
  scales and zero points add bytes, not parameters;
- not weights: integer shape constants, and the rotary cos/sin tables
  attention reads (computed from the config, not trained; llama.cpp computes
  them on the fly).

The model is read without its external data: only headers are parsed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# (op type, input index) that are a weight's scales or zero points: bytes only
_QUANT_PARAMS = {
    ("MatMulNBits", 2),
    ("MatMulNBits", 3),
    ("GatherBlockQuantized", 2),
    ("GatherBlockQuantized", 3),
    ("DequantizeLinear", 1),
    ("DequantizeLinear", 2),
    ("MatMulInteger", 3),
    ("DynamicQuantizeMatMul", 2),
    ("DynamicQuantizeMatMul", 3),
}
# (op type, input index) holding rotary tables: not weights
_ROTARY = {
    ("GroupQueryAttention", 7),
    ("GroupQueryAttention", 8),
    ("RotaryEmbedding", 1),  # ONNX opset 23: X, cos_cache, sin_cache
    ("RotaryEmbedding", 2),
}
_MS_ROTARY = {2, 3}  # com.microsoft RotaryEmbedding: input, position_ids, cos, sin


@dataclass(frozen=True)
class OnnxWeights:
    weight_bytes: int
    parameters: int

    @property
    def bits_per_weight(self) -> float | None:
        return self.weight_bytes * 8 / self.parameters if self.parameters else None


def _model_file(folder: Path) -> Path:
    from edgeglm.backends.onnx import load_model_folder

    return load_model_folder(folder)[0]


def _load(folder: Path) -> Any:
    import onnx

    return onnx.load(str(_model_file(folder)), load_external_data=False)


def onnx_metadata(folder: Path) -> dict[str, str]:
    """The model's metadata_props (EdgeGLM's exports carry edgeglm.quant)."""
    return {p.key: p.value for p in _load(folder).metadata_props}


def _nbytes(t: Any, numel: int) -> int:
    import onnx
    from onnx import helper

    if t.data_location == onnx.TensorProto.EXTERNAL:
        info = {e.key: e.value for e in t.external_data}
        if "length" in info:
            return int(info["length"])
    if t.raw_data:
        return len(t.raw_data)
    if t.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
        return (numel + 1) // 2
    return numel * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize


def _attr(node: Any, name: str, default: int) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), default)


def onnx_weights(folder: Path) -> OnnxWeights:
    """Weight bytes and parameters of the ONNX model in ``folder`` (see above)."""
    import onnx

    graph = _load(folder).graph
    uses: dict[str, list[tuple[Any, int]]] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            uses.setdefault(name, []).append((node, i))
    floats = {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.BFLOAT16,
        onnx.TensorProto.DOUBLE,
    }
    total_bytes = params = 0
    for t in graph.initializer:
        numel = math.prod(t.dims)
        roles = _roles(t.name, uses)
        if any(_is_rotary(n, i) for n, i in roles):
            continue
        if any((n.op_type, i) in _QUANT_PARAMS for n, i in roles):
            total_bytes += _nbytes(t, numel)
            continue
        count = _quantized_count(t, numel, roles)
        if count is None and t.data_type not in floats:
            continue  # a shape constant, an index table: not a weight
        total_bytes += _nbytes(t, numel)
        params += numel if count is None else count
    return OnnxWeights(total_bytes, params)


# Ops that only reshape a tensor: a weight's role is where their output goes
# (the int4 embedding's scales reach GatherBlockQuantized through an Unsqueeze).
_RESHAPES = {"Unsqueeze", "Squeeze", "Reshape", "Identity"}


def _roles(name: str, uses: dict[str, list[tuple[Any, int]]]) -> list[tuple[Any, int]]:
    """The (node, input index) pairs that consume ``name``, through reshapes."""
    out: list[tuple[Any, int]] = []
    for node, i in uses.get(name, []):
        if node.op_type in _RESHAPES and i == 0:
            out += _roles(node.output[0], uses)
        else:
            out.append((node, i))
    return out


def _is_rotary(node: Any, i: int) -> bool:
    if node.op_type == "RotaryEmbedding" and node.domain == "com.microsoft":
        return i in _MS_ROTARY
    return (node.op_type, i) in _ROTARY


def _quantized_count(t: Any, numel: int, roles: list[tuple[Any, int]]) -> int | None:
    """Parameters in a quantized weight (None: not one)."""
    import onnx

    packed = t.data_type == onnx.TensorProto.UINT8
    for node, i in roles:
        if node.op_type == "MatMulNBits" and i == 1:
            return _attr(node, "K", 0) * _attr(node, "N", 0)
        if node.op_type == "GatherBlockQuantized" and i == 0:
            bits = _attr(node, "bits", 4)
            return numel * (8 // bits) if packed and bits < 8 else numel
        if (node.op_type, i) in (
            ("DequantizeLinear", 0),
            ("MatMulInteger", 1),
            ("DynamicQuantizeMatMul", 1),
        ):
            return numel
    return None
