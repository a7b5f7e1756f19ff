"""ggml's quantizers, called in process through ctypes.

llama-cpp-python ships libggml-base, which exports ``ggml_quantize_chunk``:
the same kernels ``llama-quantize`` runs. Calling it per tensor lets us
quantize while converting, with no full-precision intermediate file. ctypes
releases the GIL during the call, so a thread pool splitting the rows keeps
every core busy.
"""

from __future__ import annotations

import ctypes
import importlib.util
import threading
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from edgeglm.errors import QuantizationError

_F32P = ctypes.POINTER(ctypes.c_float)


def _lib_dir() -> Path:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        raise QuantizationError("llama-cpp-python is not installed; it provides libggml")
    return Path(next(iter(spec.submodule_search_locations))) / "lib"


@cache
def libggml() -> ctypes.CDLL:
    """libggml-base from the installed llama-cpp-python (same build llama.cpp runs)."""
    lib_dir = _lib_dir()
    for name in ("libggml-base.so", "libggml-base.dylib", "ggml-base.dll"):
        if (lib_dir / name).exists():
            lib = ctypes.CDLL(str(lib_dir / name))
            break
    else:
        raise QuantizationError(f"libggml-base not found in {lib_dir}")
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [
        ctypes.c_int,
        _F32P,
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_int64,
        _F32P,
    ]
    lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
    lib.ggml_quantize_init.restype = None
    lib.ggml_quantize_init.argtypes = [ctypes.c_int]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    return lib


_init_lock = threading.Lock()
_initialized: set[int] = set()


def row_size(qtype: GGMLQuantizationType, n_per_row: int) -> int:
    block, size = GGML_QUANT_SIZES[qtype]
    if n_per_row % block:
        raise QuantizationError(f"{qtype.name} needs rows divisible by {block}, got {n_per_row}")
    return n_per_row // block * size


def requires_imatrix(qtype: GGMLQuantizationType) -> bool:
    return bool(libggml().ggml_quantize_requires_imatrix(int(qtype)))


def quantize(
    data: npt.NDArray[np.float32],
    qtype: GGMLQuantizationType,
    *,
    imatrix: npt.NDArray[np.float32] | None = None,
) -> npt.NDArray[np.uint8]:
    """Quantize float32 rows (the last axis) to raw ggml bytes, ``[..., row_bytes]``.

    ``imatrix``: one importance weight per column, applied to every row; for
    stacked experts call once per expert with that expert's weights. Thread
    safe: the convert pipeline calls it from several threads on disjoint rows.
    """
    data = np.ascontiguousarray(data, dtype=np.float32)
    n_per_row = int(data.shape[-1])
    nrows = int(data.size // n_per_row) if n_per_row else 0
    rsize = row_size(qtype, n_per_row)
    out = np.empty((*data.shape[:-1], rsize), dtype=np.uint8)
    if nrows == 0:
        return out
    lib = libggml()
    with _init_lock:  # ggml_quantize_init builds lookup tables once per type
        if int(qtype) not in _initialized:
            lib.ggml_quantize_init(int(qtype))
            _initialized.add(int(qtype))
    weights = None
    if imatrix is not None:
        imatrix = np.ascontiguousarray(imatrix, dtype=np.float32)
        if imatrix.shape != (n_per_row,):
            raise QuantizationError(
                f"imatrix has shape {imatrix.shape}, tensor rows have {n_per_row} columns"
            )
        weights = imatrix.ctypes.data_as(_F32P)
    src = data.ctypes.data_as(_F32P)
    written = int(
        lib.ggml_quantize_chunk(int(qtype), src, out.ctypes.data, 0, nrows, n_per_row, weights)
    )
    if written != nrows * rsize:
        raise QuantizationError(
            f"ggml wrote {written} bytes quantizing to {qtype.name}, expected {nrows * rsize}"
        )
    return out
