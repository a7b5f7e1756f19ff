"""A lazy, validating reader for .safetensors files.

Why not ``safetensors.safe_open``: its numpy frontend cannot return bf16,
the dtype most GLM checkpoints ship in, and its errors do not say which file
of a sharded checkpoint is broken. The format is simple (8-byte little-endian
header length, a JSON header, then raw little-endian tensor data), so we read
the header ourselves, check it against the file, and memory-map the data so a
tensor costs no RAM until it is touched.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import mmap
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeglm.errors import CheckpointError

# Safetensors dtype -> (numpy dtype of the stored bits, bytes per element).
# BF16 is stored as uint16 and widened to float32 on read.
_DTYPES: dict[str, tuple[npt.DTypeLike, int]] = {
    "F64": (np.float64, 8),
    "F32": (np.float32, 4),
    "F16": (np.float16, 2),
    "BF16": (np.uint16, 2),
    "I64": (np.int64, 8),
    "I32": (np.int32, 4),
    "I16": (np.int16, 2),
    "I8": (np.int8, 1),
    "U8": (np.uint8, 1),
    "BOOL": (np.bool_, 1),
}
# A header larger than this is not a real checkpoint (the format caps it at 100 MB).
_MAX_HEADER = 100_000_000


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    nbytes: int
    path: Path

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def bf16_to_f32(bits: npt.NDArray[np.uint16]) -> npt.NDArray[np.float32]:
    """Widen raw bf16 bits to float32 exactly (bf16 is the top half of f32)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


class SafetensorsFile:
    """One .safetensors file: validated header, memory-mapped tensor data."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tensors, self.metadata, self._data_start = _read_header(path)
        self._mmap: mmap.mmap | None = None
        self._fd: int | None = None

    def __contains__(self, name: object) -> bool:
        return name in self.tensors

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def _buffer(self) -> mmap.mmap:
        if self._mmap is None:
            with open(self.path, "rb") as f:
                # An empty data section cannot be mapped; such files hold only
                # zero-sized tensors, which never reach here.
                self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return self._mmap

    def raw(self, name: str) -> npt.NDArray[Any]:
        """The tensor's stored bits as a read-only array view (no copy)."""
        info = self.tensors[name]
        np_dtype, _ = _DTYPES[info.dtype]
        if info.nbytes == 0:
            return np.zeros(info.shape, dtype=np_dtype)
        arr = np.frombuffer(self._buffer(), dtype=np_dtype, count=info.numel, offset=info.start)
        return arr.reshape(info.shape)

    def load(self, name: str) -> npt.NDArray[Any]:
        """The tensor as a numpy array; bf16 is widened to float32."""
        info = self.tensors[name]
        arr = self.raw(name)
        if info.dtype == "BF16":
            return bf16_to_f32(arr)
        return arr

    def read_rows(self, name: str, r0: int, r1: int) -> npt.NDArray[Any]:
        """Rows [r0, r1) of the tensor seen as 2-D [rows, last dim], read with pread.

        Unlike the memory map, a read copy is freed as soon as the caller drops
        it, so streaming a large checkpoint keeps resident memory flat. Safe to
        call from several threads (pread has no shared file position).
        """
        info = self.tensors[name]
        np_dtype, esize = _DTYPES[info.dtype]
        row = info.shape[-1] if info.shape else 1
        start = info.start + r0 * row * esize
        nbytes = (r1 - r0) * row * esize
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        buf = os.pread(self._fd, nbytes, start)
        if len(buf) != nbytes:
            raise CheckpointError(f"{self.path}: short read in tensor {name!r} (file changed?)")
        arr = np.frombuffer(buf, dtype=np_dtype).reshape(r1 - r0, row)
        if info.dtype == "BF16":
            return bf16_to_f32(arr)
        return arr

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._mmap is not None:
            # numpy views still alive keep the map open; the OS reclaims it.
            with contextlib.suppress(BufferError):
                self._mmap.close()
            self._mmap = None


def _read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str], int]:
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: not a safetensors file (only {size} bytes)")
            (hlen,) = struct.unpack("<Q", head)
            if hlen > _MAX_HEADER or 8 + hlen > size:
                raise CheckpointError(
                    f"{path}: truncated or corrupt safetensors header "
                    f"(header claims {hlen} bytes, file has {size})"
                )
            raw = f.read(hlen)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e.strerror or e}") from e
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: safetensors header is not valid JSON ({e})") from e
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: safetensors header is not a JSON object")

    data_start = 8 + hlen
    data_size = size - data_start
    metadata = header.pop("__metadata__", None) or {}
    tensors: dict[str, TensorInfo] = {}
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        try:
            dtype = entry["dtype"]
            shape = tuple(int(d) for d in entry["shape"])
            begin, end = (int(x) for x in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: malformed header entry for tensor {name!r}") from e
        if dtype not in _DTYPES:
            raise CheckpointError(
                f"{path}: tensor {name!r} has dtype {dtype}, which EdgeGLM cannot read "
                f"(supported: {', '.join(_DTYPES)})"
            )
        info = TensorInfo(name, dtype, shape, data_start + begin, end - begin, path)
        if (
            any(d < 0 for d in shape)
            or end < begin
            or info.nbytes != info.numel * _DTYPES[dtype][1]
        ):
            raise CheckpointError(
                f"{path}: tensor {name!r} has inconsistent shape {list(shape)} "
                f"and byte range [{begin}, {end}) for dtype {dtype}"
            )
        if end > data_size:
            raise CheckpointError(
                f"{path}: truncated: tensor {name!r} ends at byte {end} of the data "
                f"section, but the file holds only {data_size} bytes of data"
            )
        tensors[name] = info
        spans.append((begin, end, name))
    spans.sort()
    for (_, e1, n1), (b2, _, n2) in itertools.pairwise(spans):
        if b2 < e1:
            raise CheckpointError(f"{path}: tensors {n1!r} and {n2!r} overlap in the file")
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path}: __metadata__ is not a JSON object")
    return tensors, {str(k): str(v) for k, v in metadata.items()}, data_start
