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
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import Any

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
    pool: ThreadPoolExecutor | None = None,
    rows_per_task: int = 0,
) -> npt.NDArray[np.uint8]:
    """Quantize a float32 tensor (rows along the last axis) to raw ggml bytes.

    ``imatrix`` holds one importance weight per column (shape ``[n_per_row]``)
    or, for stacked experts, one row of them per expert (``[n_expert, n_per_row]``).
    Returns a uint8 array of shape ``[..., row_bytes]``, the layout GGUF stores.
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

    # For 3-D stacked experts each expert has its own importance vector, so a
    # task never spans two experts.
    n_groups = 1
    if imatrix is not None:
        imatrix = np.ascontiguousarray(imatrix, dtype=np.float32)
        if imatrix.shape[-1] != n_per_row:
            raise QuantizationError(
                f"imatrix has {imatrix.shape[-1]} columns, tensor rows have {n_per_row}"
            )
        n_groups = int(imatrix.size // n_per_row)
        if nrows % n_groups:
            raise QuantizationError("imatrix expert count does not divide the tensor's rows")
    rows_per_group = nrows // n_groups
    if rows_per_task <= 0:
        # Big enough to amortize the call, small enough to balance threads.
        rows_per_task = max(1, min(rows_per_group, (1 << 20) // max(n_per_row, 1)))

    src_base = data.ctypes.data
    dst_base = out.ctypes.data
    tasks: list[tuple[int, int, Any]] = []
    for g in range(n_groups):
        imat_ptr = None
        if imatrix is not None:
            imat_ptr = ctypes.cast(imatrix.ctypes.data + g * n_per_row * 4, _F32P)
        for r0 in range(g * rows_per_group, (g + 1) * rows_per_group, rows_per_task):
            n = min(rows_per_task, (g + 1) * rows_per_group - r0)
            tasks.append((r0, n, imat_ptr))

    def run(task: tuple[int, int, Any]) -> int:
        r0, n, imat_ptr = task
        # ggml_quantize_chunk writes at dst + start_row * row_size itself, and
        # reads src from start; we pass offset pointers so it sees start=0.
        src = ctypes.cast(src_base + r0 * n_per_row * 4, _F32P)
        dst = ctypes.c_void_p(dst_base + r0 * rsize)
        return int(lib.ggml_quantize_chunk(int(qtype), src, dst, 0, n, n_per_row, imat_ptr))

    written = (
        sum(pool.map(run, tasks))
        if pool is not None and len(tasks) > 1
        else sum(run(t) for t in tasks)
    )
    if written != nrows * rsize:
        raise QuantizationError(
            f"ggml wrote {written} bytes quantizing to {qtype.name}, expected {nrows * rsize}"
        )
    return out
