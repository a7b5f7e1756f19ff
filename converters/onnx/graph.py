"""A small ONNX graph builder with deterministic names and streamed weights.

Naming follows onnxruntime-genai's builder (its DESIGN.md): a node is named
by its place in the model, ``/model/layers.3/attn/qkv_proj/MatMul``, and its
outputs are ``{node name}/output_{i}``, so two conversions of one checkpoint
give byte-identical graphs and a failing node names its own location.

Weights never pile up in memory: each initializer is written as soon as it is
made, either inline (small models) or appended, aligned, to one external data
file beside model.onnx (models over protobuf's 2 GB limit).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper

from edgeglm.errors import ConversionError

# onnxruntime 1.31 refuses IR 14, which onnx 1.23 writes by default; IR 10 /
# opset 21 is what onnxruntime-genai's builder emits and ORT >= 1.20 loads.
IR_VERSION = 10
OPSETS = {"": 21, "com.microsoft": 1}
# Tensors this small stay inline even in external-data models (onnx does the same).
_INLINE_BELOW = 1024
# Big tensors start on a 64 KiB boundary so ORT can memory-map them on every OS.
_ALIGN = 1 << 16
_ALIGN_ABOVE = 1 << 20


class TensorStore:
    """Where initializer bytes go: into the proto, or onto the end of one data file."""

    def __init__(self, data_file: Path | None) -> None:
        self.data_file = data_file
        self._f: BinaryIO | None = open(data_file, "wb") if data_file else None  # noqa: SIM115
        self.bytes_written = 0

    def tensor(self, name: str, array: npt.NDArray[Any]) -> TensorProto:
        array = np.ascontiguousarray(array)
        if self._f is None or array.nbytes < _INLINE_BELOW:
            return onnx.numpy_helper.from_array(array, name)
        assert self.data_file is not None
        t = TensorProto()
        t.name = name
        t.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
        t.dims.extend(array.shape)
        offset = self._f.tell()
        if array.nbytes >= _ALIGN_ABOVE and offset % _ALIGN:
            self._f.write(b"\0" * (_ALIGN - offset % _ALIGN))
            offset = self._f.tell()
        if sys.byteorder != "little":  # ONNX stores tensor data little-endian
            array = array.byteswap()
        self._f.write(array.data)  # the buffer itself: no copy of a multi-GB tensor
        t.data_location = TensorProto.EXTERNAL
        for key, value in (
            ("location", self.data_file.name),
            ("offset", str(offset)),
            ("length", str(array.nbytes)),
        ):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        self.bytes_written += array.nbytes
        return t

    def close(self) -> None:
        if self._f is not None:
            self._f.flush()
            self._f.close()
            self._f = None


class GraphBuilder:
    """Nodes, initializers and graph IO, named by place in the model."""

    def __init__(self, store: TensorStore) -> None:
        self.store = store
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._names: set[str] = set()
        self._constants: dict[str, str] = {}
        # Storage format -> number of matrices (embedding, projections, head) in it.
        self.formats: Counter[str] = Counter()

    def node(
        self,
        op_type: str,
        inputs: list[str],
        name: str,
        *,
        domain: str = "",
        n_out: int = 1,
        outputs: list[str] | None = None,
        **attrs: Any,
    ) -> list[str]:
        """Add ``op_type`` named ``{name}/{op_type}``; returns its output names."""
        full = f"{name}/{op_type}"
        if full in self._names:
            raise ConversionError(f"ONNX graph: node {full} made twice (a builder bug)")
        self._names.add(full)
        outs = outputs or [f"{full}/output_{i}" for i in range(n_out)]
        self.nodes.append(
            helper.make_node(op_type, inputs, outs, name=full, domain=domain or None, **attrs)
        )
        return outs

    def one(self, op_type: str, inputs: list[str], name: str, **kw: Any) -> str:
        return self.node(op_type, inputs, name, **kw)[0]

    def weight(self, name: str, array: npt.NDArray[Any]) -> str:
        if name in self._names:
            raise ConversionError(f"ONNX graph: initializer {name} made twice (a builder bug)")
        self._names.add(name)
        self.initializers.append(self.store.tensor(name, array))
        return name

    def has(self, name: str) -> bool:
        return name in self._names

    def const(self, value: Any, dtype: type[np.generic] = np.int64) -> str:
        """A small shared constant named by its value (one initializer per value)."""
        array = np.array(value, dtype=dtype)
        key = f"/model/constants/{np.dtype(dtype).name}/{array.tolist()}"
        if key not in self._constants:
            self._constants[key] = self.weight(key, array)
        return self._constants[key]

    def cast(self, x: str, to: type[np.generic], name: str, have: type[np.generic]) -> str:
        """Cast when the dtypes differ; no node at all when they already match."""
        if np.dtype(to) == np.dtype(have):
            return x
        return self.one("Cast", [x], name, to=helper.np_dtype_to_tensor_dtype(np.dtype(to)))

    def rename_output(self, old: str, new: str) -> None:
        """Give a node output its graph-output name (``logits``) without an Identity copy."""
        for n in self.nodes:
            for i, o in enumerate(n.output):
                if o == old:
                    n.output[i] = new
                    return
        raise ConversionError(f"ONNX graph: no node produces {old}")

    def add_input(self, name: str, dtype: type[np.generic], shape: list[Any]) -> str:
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        self.inputs.append(helper.make_tensor_value_info(name, elem, shape))
        return name

    def add_output(self, name: str, dtype: type[np.generic], shape: list[Any]) -> None:
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        self.outputs.append(helper.make_tensor_value_info(name, elem, shape))

    def check_wiring(self) -> None:
        """Every node input and graph output must be produced before it is used."""
        known = {"", *(i.name for i in self.inputs), *(t.name for t in self.initializers)}
        for n in self.nodes:
            missing = [i for i in n.input if i not in known]
            if missing:
                raise ConversionError(f"ONNX graph: {n.name} reads undefined {missing}")
            known.update(n.output)
        for o in self.outputs:
            if o.name not in known:
                raise ConversionError(f"ONNX graph: output {o.name} is never produced")

    def model(self, graph_name: str, metadata: dict[str, str]) -> onnx.ModelProto:
        self.check_wiring()
        graph = helper.make_graph(
            self.nodes, graph_name, self.inputs, self.outputs, self.initializers
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid(d, v) for d, v in OPSETS.items()],
            ir_version=IR_VERSION,
            producer_name="edgeglm",
        )
        helper.set_model_props(model, metadata)
        return model
