"""Compute an importance matrix by running the model in llama.cpp.

What ``llama-imatrix`` does, in process: ggml's scheduler calls back before
and after each graph node (``cb_eval``); for every matrix multiply whose
weight is a block tensor we add up the squared input activations per column,
and for MoE (``MUL_MAT_ID``) per expert, using the routing ids. The model
runs from a temporary Q8_0 GGUF (close to full precision, no fp16 overflow)
in a child process, so a llama.cpp crash cannot take the caller down.
"""

from __future__ import annotations

import ctypes
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeglm.converters.gguf.imatrix import Imatrix, from_sums

# Tokens per evaluated chunk (llama-imatrix's default context).
CHUNK = 512
# llama-imatrix ignores matmuls over fewer tokens (warm-up, single-token decode).
MIN_TOKENS = 16


class GGMLTensor(ctypes.Structure):
    """struct ggml_tensor (ggml.h, as built into llama-cpp-python 0.3.36; 336 bytes)."""

    _fields_ = [
        ("type", ctypes.c_int32),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * 4),
        ("nb", ctypes.c_size_t * 4),
        ("op", ctypes.c_int32),
        ("op_params", ctypes.c_int32 * 16),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * 10),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * 64),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


assert ctypes.sizeof(GGMLTensor) == 336, "ggml_tensor layout changed; update GGMLTensor"
GGML_TYPE_F32, GGML_TYPE_I32 = 0, 26


@dataclass
class _Collector:
    lib: Any
    sums: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict)
    counts: dict[str, npt.NDArray[np.int64]] = field(default_factory=dict)
    op_names: dict[int, bytes] = field(default_factory=dict)

    def op(self, t: GGMLTensor) -> bytes:
        name = self.op_names.get(t.op)
        if name is None:
            name = self.op_names[t.op] = bytes(self.lib.ggml_op_name(t.op))
        return name

    def host_array(self, addr: int) -> npt.NDArray[np.float32]:
        """A tensor's data as a numpy array [ne3, ne2, ne1, ne0], copied to host if needed."""
        t = GGMLTensor.from_address(addr)
        ne, nb = list(t.ne), list(t.nb)
        itemsize = 4
        span = sum((n - 1) * s for n, s in zip(ne, nb, strict=True)) + itemsize
        if t.buffer and not self.lib.ggml_backend_buffer_is_host(t.buffer):
            buf = (ctypes.c_char * span)()
            self.lib.ggml_backend_tensor_get(addr, buf, 0, span)
        else:
            buf = (ctypes.c_char * span).from_address(t.data)
        dtype = np.int32 if t.type == GGML_TYPE_I32 else np.float32
        arr = np.ndarray((ne[3], ne[2], ne[1], ne[0]), dtype, buffer=buf, strides=nb[::-1])
        return np.array(arr)  # own the memory: ggml reuses its buffers

    def __call__(self, addr: int, ask: bool, user_data: Any) -> bool:
        t = GGMLTensor.from_address(addr)
        op = self.op(t)
        if op not in (b"MUL_MAT", b"MUL_MAT_ID"):
            return False
        src0 = GGMLTensor.from_address(t.src[0])
        src1 = GGMLTensor.from_address(t.src[1])
        name = src0.name.decode(errors="replace")
        if src1.type != GGML_TYPE_F32 or not name.startswith("blk."):
            return False
        if op == b"MUL_MAT" and src1.ne[1] < MIN_TOKENS:
            return False
        if ask:
            return True
        x = self.host_array(t.src[1])
        ne0 = int(src0.ne[0])
        if op == b"MUL_MAT_ID":
            n_expert = int(src0.ne[2])
            ids = self.host_array(t.src[2])[0, 0]  # [n_tokens, n_used]
            sums = self.sums.setdefault(name, np.zeros((n_expert, ne0)))
            counts = self.counts.setdefault(name, np.zeros(n_expert, dtype=np.int64))
            xs = x[0]  # [n_tokens, ne1 (n_used, or 1 when broadcast), ne0]
            for k in range(ids.shape[1]):
                sq = xs[:, k % xs.shape[1], :].astype(np.float64) ** 2
                np.add.at(sums, ids[:, k], sq)
                counts += np.bincount(ids[:, k], minlength=n_expert)
        else:
            n2, n3 = int(src0.ne[2]), int(src0.ne[3])
            sums = self.sums.setdefault(name, np.zeros((n2 * n3, ne0)))
            counts = self.counts.setdefault(name, np.zeros(1, dtype=np.int64))
            for i3 in range(x.shape[0]):
                for i2 in range(x.shape[1]):
                    mat = (i3 % n3) * n2 + (i2 % n2)
                    sums[mat] += (x[i3, i2].astype(np.float64) ** 2).sum(axis=0)
            counts += x.shape[0] * x.shape[1] * x.shape[2] // (n2 * n3)
        return True


def collect(gguf: str, text: str, chunk: int = CHUNK) -> tuple[dict[str, Any], dict[str, Any], int]:
    """Run in a child process: per-tensor sums of squared activations and counts."""
    import llama_cpp

    from edgeglm.backends.llamacpp import LlamaCppModel
    from edgeglm.converters.gguf.ggml import _lib_dir

    lib = ctypes.CDLL(str(_lib_dir() / "libggml-base.so"))
    lib.ggml_op_name.restype = ctypes.c_char_p
    lib.ggml_op_name.argtypes = [ctypes.c_int]
    lib.ggml_backend_buffer_is_host.restype = ctypes.c_bool
    lib.ggml_backend_buffer_is_host.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_tensor_get.argtypes = [
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_size_t,
    ]
    collector = _Collector(lib)
    callback = llama_cpp.ggml_backend_sched_eval_callback(collector)
    # Every position must produce output (as llama-imatrix asks), or llama.cpp
    # prunes the last block to the final token and its FFN goes unmeasured.
    model = LlamaCppModel(Path(gguf), n_ctx=chunk, logits_all=True, cb_eval=callback)
    tokens = model.tokenize(text)
    n_chunks = len(tokens) // chunk
    for c in range(n_chunks):
        model.llm.reset()  # type: ignore[no-untyped-call]
        model.llm.eval(tokens[c * chunk : (c + 1) * chunk])
    model.close()
    return collector.sums, collector.counts, n_chunks


def calibrate(src: Path, text_file: Path, *, chunk: int = CHUNK) -> Imatrix:
    """An importance matrix for the checkpoint at ``src`` from a calibration text."""
    from edgeglm.backends.isolated import run_isolated
    from edgeglm.converters.gguf.convert import convert
    from edgeglm.errors import UsageError

    try:
        text = text_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{text_file}: cannot read calibration text ({e})") from e
    with tempfile.TemporaryDirectory(prefix="edgeglm-calib-") as d:
        tmp = Path(d) / "calib-Q8_0.gguf"
        convert(src, tmp, "Q8_0")
        sums, counts, n_chunks = run_isolated(
            collect, str(tmp), text, chunk, what="llama.cpp (calibration)"
        )
    if n_chunks == 0:
        raise UsageError(f"{text_file}: calibration text is shorter than one {chunk}-token chunk")
    im = from_sums({k: v.astype(np.float32) for k, v in sums.items()}, counts)
    im.chunks = n_chunks
    im.datasets = [text_file.name]
    return im
