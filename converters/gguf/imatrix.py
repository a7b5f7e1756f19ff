"""Importance matrices: per-column mean squared activations of each weight's input.

Reads both formats llama.cpp's ``llama-imatrix`` writes: the GGUF one
(``<name>.in_sum2`` and ``<name>.counts`` tensors) and the legacy ``.dat``.
Values are normalized as llama-quantize does (sum / count; 1.0 for experts
that never fired), giving one row of ``ne0`` weights per expert.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edgeglm.errors import CheckpointError

F32Array = npt.NDArray[np.float32]


@dataclass
class Imatrix:
    # tensor name -> [n_mat, ne0] importance weights (n_mat = experts, or 1)
    weights: dict[str, F32Array] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    chunks: int = 0
    # tensors (name -> expert ids) whose experts never saw a token
    unseen_experts: dict[str, list[int]] = field(default_factory=dict)

    def get(self, name: str, n_per_row: int, n_mat: int) -> F32Array | None:
        w = self.weights.get(name)
        if w is None:
            return None
        if w.size != n_per_row * n_mat:
            raise CheckpointError(
                f"imatrix entry {name} has {w.size} values, tensor needs {n_per_row * n_mat}"
            )
        return w.reshape(n_mat, n_per_row)


def from_sums(sums: dict[str, F32Array], counts: dict[str, npt.NDArray[np.int64]]) -> Imatrix:
    """Normalize raw sums of squares [n_mat, ne0] by token counts [n_mat]."""
    out = Imatrix()
    for name, s in sums.items():
        c = counts[name].astype(np.float64)
        w = np.where(c[:, None] > 0, s / np.maximum(c, 1)[:, None], 1.0).astype(np.float32)
        out.weights[name] = w
        dead = [int(i) for i in np.flatnonzero(c == 0)]
        if dead:
            out.unseen_experts[name] = dead
    return out


def read_imatrix(path: Path) -> Imatrix:
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read imatrix: {e.strerror or e}") from e
    if magic == b"GGUF":
        return _read_gguf(path)
    return _read_legacy(path)


def _read_gguf(path: Path) -> Imatrix:
    """llama-imatrix's GGUF: F32 ``<name>.in_sum2`` [n_mat, ne0] and ``<name>.counts``
    [n_mat] tensors. The header is strictly checked first (gguf_file.py)."""
    from edgeglm.gguf_file import read_gguf

    g = read_gguf(path)
    sums: dict[str, F32Array] = {}
    counts: dict[str, npt.NDArray[np.int64]] = {}
    for t in g.tensors:
        if not t.name.endswith((".in_sum2", ".counts")):
            continue
        if t.type_name != "F32":
            raise CheckpointError(f"{path}: imatrix tensor {t.name} is {t.type_name}, not F32")
        if not t.shape or t.shape[0] < 1:
            raise CheckpointError(f"{path}: imatrix tensor {t.name} is empty")
        data = np.frombuffer(g.tensor_bytes(t), dtype="<f4").astype(np.float32)
        if t.name.endswith(".in_sum2"):
            sums[t.name[: -len(".in_sum2")]] = data.reshape(-1, t.shape[0])
        else:
            counts[t.name[: -len(".counts")]] = np.rint(data.reshape(-1)).astype(np.int64)
    missing = sorted(set(sums) ^ set(counts))
    if missing:
        raise CheckpointError(f"{path}: imatrix entries without sums or counts: {missing[:5]}")
    for name, s in sums.items():
        if counts[name].shape[0] != s.shape[0]:
            raise CheckpointError(
                f"{path}: imatrix entry {name} has {s.shape[0]} rows of sums "
                f"but {counts[name].shape[0]} counts"
            )
    im = from_sums(sums, counts)
    chunks = g.get("imatrix.chunk_count")
    if chunks is not None:
        if not isinstance(chunks, int) or isinstance(chunks, bool):
            raise CheckpointError(f"{path}: imatrix.chunk_count is not a whole number")
        im.chunks = chunks
    datasets = g.get("imatrix.datasets")
    if datasets is not None:
        if isinstance(datasets, tuple) and all(isinstance(x, str) for x in datasets):
            im.datasets = list(datasets)
        elif isinstance(datasets, str):
            im.datasets = [datasets]
        else:
            raise CheckpointError(f"{path}: imatrix.datasets is not a list of strings")
    return im


def _read_legacy(path: Path) -> Imatrix:
    raw = path.read_bytes()
    pos = 0

    def take(fmt: str) -> tuple[int, ...]:
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(raw):
            raise CheckpointError(f"{path}: truncated imatrix file")
        vals = struct.unpack_from(fmt, raw, pos)
        pos += size
        return vals

    (n,) = take("<i")
    if n <= 0 or n > 1_000_000:
        raise CheckpointError(f"{path}: not an imatrix file (entry count {n})")
    im = Imatrix()
    for _ in range(n):
        (ln,) = take("<i")
        if ln <= 0 or pos + ln > len(raw):
            raise CheckpointError(f"{path}: corrupt imatrix entry name")
        name = raw[pos : pos + ln].decode("utf-8", errors="replace")
        pos += ln
        ncall, nval = take("<ii")
        if nval <= 0 or pos + 4 * nval > len(raw):
            raise CheckpointError(f"{path}: corrupt imatrix entry {name}")
        vals = np.frombuffer(raw, dtype="<f4", count=nval, offset=pos).astype(np.float32)
        pos += 4 * nval
        # Legacy values are mean x^2 times ncall; llama-quantize divides it back.
        im.weights[name] = (vals / ncall if ncall > 0 else vals).astype(np.float32)
    if pos + 4 <= len(raw):
        (im.chunks,) = take("<i")
        if pos + 4 <= len(raw):
            (ln,) = take("<i")
            im.datasets = [raw[pos : pos + ln].decode("utf-8", errors="replace")]
    return im
