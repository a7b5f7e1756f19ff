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
        self._end = max((t.start + t.nbytes for t in self.tensors.values()), default=0)
        self._mmap: mmap.mmap | None = None
        self._fd: int | None = None

    def __contains__(self, name: object) -> bool:
        return name in self.tensors

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def _buffer(self) -> mmap.mmap:
        if self._mmap is None:
            try:
                with open(self.path, "rb") as f:
                    # An empty data section cannot be mapped; such files hold only
                    # zero-sized tensors, which never reach here.
                    self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError) as e:
                raise CheckpointError(f"{self.path}: cannot read: {e}") from e
            if len(self._mmap) < self._end:
                raise CheckpointError(f"{self.path}: the file shrank after it was opened")
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
        # Reading errors are the checkpoint's, never a write error of the output.
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDONLY)
            buf = os.pread(self._fd, nbytes, start)
        except OSError as e:
            raise CheckpointError(f"{self.path}: cannot read: {e.strerror or e}") from e
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


# What the safetensors library accepts, checked the way its Rust reader does
# (safetensors/src/tensor.rs: read_metadata and Metadata::validate): a header
# of at most 100 MB of UTF-8 JSON; every tensor a dtype, a shape of
# non-negative integers and a [begin, end) pair; the ranges, sorted, tile the
# data section exactly (from 0, no gap, no overlap, nothing after the last);
# element and byte counts that fit 64 bits. We also refuse a tensor name given
# twice, which serde would silently resolve to the last one.
_U64_MAX = 2**64 - 1


def _read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str], int]:
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: not a safetensors file (only {size} bytes)")
            (hlen,) = struct.unpack("<Q", head)
            # The length is not echoed: in a file that is not safetensors it is
            # just the file's first 8 bytes.
            if hlen > _MAX_HEADER:
                raise CheckpointError(
                    f"{path}: not a safetensors file (its header length field is over 100 MB)"
                )
            if 8 + hlen > size:
                raise CheckpointError(
                    f"{path}: truncated or corrupt safetensors header (its length field "
                    f"points past the end of the {size}-byte file)"
                )
            raw = f.read(hlen)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e.strerror or e}") from e
    header = _parse_json(path, raw)
    data_start = 8 + hlen
    metadata = _metadata(path, header.pop("__metadata__", None))
    tensors: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        dtype, shape, begin, end = _entry(path, name, entry)
        tensors[name] = TensorInfo(name, dtype, shape, data_start + begin, end - begin, path)
    _check_tiling(path, tensors, data_start, size - data_start)
    return tensors, metadata, data_start


def _short(name: str) -> str:
    """A tensor name for a message (a hostile header can make one 100 MB long)."""
    return repr(name if len(name) <= 200 else name[:200] + "…")


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


def _no_constants(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def _parse_json(path: Path, raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        # The offending byte is not echoed: the file may not be ours to show.
        raise CheckpointError(
            f"{path}: safetensors header is not UTF-8 text (at byte {8 + e.start})"
        ) from None
    try:
        header = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except _DuplicateKey as e:
        raise CheckpointError(f"{path}: safetensors header names {_short(str(e))} twice") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(
            f"{path}: safetensors header is not valid JSON ({e.msg} at line {e.lineno} "
            f"column {e.colno})"
        ) from None
    except (ValueError, RecursionError):
        raise CheckpointError(f"{path}: safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: safetensors header is not a JSON object")
    return header


def _metadata(path: Path, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise CheckpointError(f"{path}: __metadata__ is not an object of strings")
    return value


def _is_u64(x: Any) -> bool:
    return type(x) is int and 0 <= x <= _U64_MAX


def _entry(path: Path, name: str, entry: Any) -> tuple[str, tuple[int, ...], int, int]:
    if not isinstance(entry, dict):
        raise CheckpointError(f"{path}: header entry for tensor {_short(name)} is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str):
        raise CheckpointError(f"{path}: tensor {_short(name)} has no dtype")
    if dtype not in _DTYPES:
        raise CheckpointError(
            f"{path}: tensor {_short(name)} has dtype {dtype[:20]!r}, which EdgeGLM cannot "
            f"read (supported: {', '.join(_DTYPES)})"
        )
    if not isinstance(shape, list) or not all(_is_u64(d) for d in shape):
        raise CheckpointError(
            f"{path}: tensor {_short(name)}: shape is not a list of non-negative integers"
        )
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_is_u64, offsets)):
        raise CheckpointError(
            f"{path}: tensor {_short(name)}: data_offsets is not a pair of offsets"
        )
    begin, end = offsets
    if end < begin:
        raise CheckpointError(f"{path}: tensor {_short(name)} ends before it begins")
    numel = 1
    for d in shape:
        numel *= d
    nbytes = numel * _DTYPES[dtype][1]
    if numel > _U64_MAX or nbytes > _U64_MAX:
        raise CheckpointError(
            f"{path}: tensor {_short(name)}: shape {shape} overflows 64-bit sizes"
        )
    if nbytes != end - begin:
        raise CheckpointError(
            f"{path}: tensor {_short(name)} has inconsistent shape {shape} and byte "
            f"range [{begin}, {end}) for dtype {dtype}"
        )
    return dtype, tuple(shape), begin, end


def _check_tiling(
    path: Path, tensors: dict[str, TensorInfo], data_start: int, data_size: int
) -> None:
    """Sorted by offset, the tensors must cover the data section exactly."""
    spans = sorted((t.start - data_start, t.start - data_start + t.nbytes, t.name)
                   for t in tensors.values())  # fmt: skip
    at, prev = 0, None
    for begin, end, name in spans:
        if begin < at:
            raise CheckpointError(
                f"{path}: tensors {_short(prev or '')} and {_short(name)} overlap in the file"
            )
        if begin > at:
            where = f"after tensor {_short(prev)}" if prev else "before the first tensor"
            raise CheckpointError(
                f"{path}: {begin - at} unused bytes {where} (at byte {at} of the data "
                "section); safetensors data must be contiguous"
            )
        if end > data_size:
            raise CheckpointError(
                f"{path}: truncated: tensor {_short(name)} ends at byte {end} of the data "
                f"section, but the file holds only {data_size} bytes of data"
            )
        at, prev = end, name
    if at != data_size:
        raise CheckpointError(
            f"{path}: {data_size - at} trailing bytes after the last tensor; "
            "safetensors data must end where the last tensor does"
        )
