"""Strict GGUF header reading: llama.cpp's own checks, in pure Python.

Every GGUF EdgeGLM reads in its own process goes through ``read_gguf`` first.
It mirrors ``gguf_init_from_file_impl`` in llama.cpp's ggml/src/gguf.cpp
(llama-cpp-python 0.3.36): magic, version, counts, string and array lengths,
key and value types, duplicate keys, ``general.alignment``, tensor names,
dimensions, element-count overflow, ggml types and block sizes, and tensor
offsets exactly where gguf.cpp expects them (each one the padded end of the
one before). It adds the check llama.cpp's model loader makes next: every
tensor's data lies inside the file. So a file this reader accepts gets past
llama.cpp's parser, and one it refuses, llama.cpp refuses too.

Counts are checked against the bytes left in the file before anything is
allocated or looped over: a claimed 2**63 keys, tensors or array elements is
refused at once, in constant time and memory. The file is read through a
small window (no memory map, no whole-file read).

Large values are not decoded. Arrays over ``EAGER_ARRAY_LIMIT`` elements
(``tokenizer.ggml.tokens``, ``.merges``, ``.token_type`` of a 150k vocab)
and strings over ``EAGER_STRING_LIMIT`` bytes are still walked and checked,
but the metadata holds a ``Deferred`` summary (type, count, file offset) in
their place; ``GGUFFile.load(key)`` decodes one on demand. Planning needs
none of them, so reading the header of a 150k-vocab model stays fast.
"""

from __future__ import annotations

import os
import struct
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

from edgeglm.errors import CheckpointError, ModelNotFoundError

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3  # the newest version llama.cpp reads
GGUF_DEFAULT_ALIGNMENT = 32
GGUF_MAX_STRING_LENGTH = 1024 * 1024 * 1024
GGUF_MAX_ARRAY_ELEMENTS = 1024 * 1024 * 1024
GGML_MAX_NAME = 64
GGML_MAX_DIMS = 4
INT64_MAX = 2**63 - 1
SIZE_MAX = 2**64 - 1  # size_t on the 64-bit platforms llama.cpp runs on

EAGER_ARRAY_LIMIT = 4096
EAGER_STRING_LIMIT = 1024 * 1024

# Smallest possible encodings, to bound claimed counts by the file's size.
_MIN_KV_BYTES = 8 + 1 + 4 + 1  # key length, a 1-byte key, type, a 1-byte value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8  # name length (empty name), n_dims 0, type, offset

_WINDOW = 1 << 20


class GGUFValueType(IntEnum):
    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# gguf.cpp's GGUF_TYPE_NAME and the struct code of each fixed-size type.
_TYPE_NAME = {
    0: "u8", 1: "i8", 2: "u16", 3: "i16", 4: "u32", 5: "i32", 6: "f32",
    7: "bool", 8: "str", 9: "arr", 10: "u64", 11: "i64", 12: "f64",
}  # fmt: skip
_FIXED = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "b", 10: "Q", 11: "q", 12: "d"}

# ggml.c type_traits: id -> (name as gguf-py spells it, block size, bytes per block).
# Ids 4, 5, 31-33 and 36-38 were removed from ggml; their block size is 0,
# which gguf.cpp refuses.
GGML_TYPE_COUNT = 43
GGML_TYPES: Mapping[int, tuple[str, int, int]] = MappingProxyType({
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17), 40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18), 42: ("Q2_0", 64, 18),
})  # fmt: skip

_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")


@dataclass(frozen=True)
class Deferred:
    """A value too large to decode up front (checked, not kept): see ``GGUFFile.load``."""

    type: str  # "str", or "arr[ELEMENT]" as gguf.cpp names types: "arr[str]", "arr[i32]"
    count: int  # array elements, or string bytes
    file_offset: int  # first element (or first string byte)

    def __len__(self) -> int:
        return self.count


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order (ne[0], the row length, first); n_dims entries
    ggml_type: int
    type_name: str  # "Q4_K", "F32" ... (gguf-py's GGMLQuantizationType names)
    offset: int  # from the start of the data section, as stored
    n_bytes: int  # ggml_nbytes

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class GGUFFile:
    """A GGUF header that passed every check. Immutable."""

    path: Path
    version: int
    metadata: Mapping[str, Any]  # key -> int | float | bool | str | tuple | Deferred
    tensors: tuple[TensorInfo, ...]
    alignment: int
    data_offset: int  # absolute file offset of the data section
    file_size: int
    _by_name: Mapping[str, TensorInfo] = field(repr=False, compare=False, default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    @property
    def architecture(self) -> str:
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else ""

    def tensor(self, name: str) -> TensorInfo | None:
        return self._by_name.get(name)

    def load(self, key: str) -> Any:
        """The full value of ``key``, decoding it from the file if it was deferred."""
        value = self.metadata[key]
        if not isinstance(value, Deferred):
            return value
        with _open(self.path) as f:
            cur = _Cursor(f, self.path, self.file_size)
            cur.pos = value.file_offset
            try:
                if value.type == "str":
                    return _text(bytes(cur.take(value.count, key)))
                elem = _ELEM_BY_NAME[value.type[4:-1]]
                return _read_array(cur, key, elem, value.count, keep=True)
            except (_Invalid, OSError) as e:
                raise CheckpointError(f"{self.path}: changed since it was read ({e})") from None

    def tensor_bytes(self, t: TensorInfo) -> bytes:
        """One tensor's raw data (the file is reopened; the header is trusted)."""
        with _open(self.path) as f:
            f.seek(self.data_offset + t.offset)
            data = f.read(t.n_bytes)
        if len(data) != t.n_bytes:
            raise CheckpointError(f"{self.path}: not a valid GGUF: tensor '{t.name}' is truncated")
        return data


_ELEM_BY_NAME = {name: GGUFValueType(i) for i, name in _TYPE_NAME.items()}


class _Invalid(Exception):
    """A check failed; read_gguf adds the path."""


def _open(path: Path) -> IO[bytes]:
    try:
        return open(path, "rb")
    except FileNotFoundError as e:
        raise ModelNotFoundError(f"{path}: no such file") from e
    except IsADirectoryError as e:
        raise CheckpointError(f"{path}: is a folder, not a GGUF file") from e
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from e


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _name(raw: bytes) -> str:
    """Keys and tensor names: distinct bytes stay distinct, printable in a message."""
    return raw.decode("utf-8", errors="backslashreplace")


class _Cursor:
    """Sequential reads through a window, every length checked against the file's size."""

    def __init__(self, f: IO[bytes], path: Path, size: int) -> None:
        self.f, self.path, self.size = f, path, size
        self.pos = 0
        self._buf = b""
        self._start = 0

    @property
    def remaining(self) -> int:
        return self.size - self.pos

    def take(self, n: int, what: str) -> bytes | memoryview:
        if n > self.size - self.pos:
            raise _Invalid(f"{what}: needs {n} bytes, {self.size - self.pos} left (truncated)")
        off = self.pos - self._start
        if off < 0 or off + n > len(self._buf):
            self.f.seek(self.pos)
            self._buf = self.f.read(max(n, min(_WINDOW, self.size - self.pos)))
            self._start, off = self.pos, 0
            if len(self._buf) < n:
                raise _Invalid(f"{what}: the file changed while it was read")
        self.pos += n
        return memoryview(self._buf)[off : off + n]

    def skip(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise _Invalid(f"{what}: needs {n} bytes, {self.size - self.pos} left (truncated)")
        self.pos += n

    def unpack(self, s: struct.Struct, what: str) -> Any:
        return s.unpack(self.take(s.size, what))[0]

    def string_length(self, what: str) -> int:
        n: int = self.unpack(_U64, what)
        if n > GGUF_MAX_STRING_LENGTH:
            raise _Invalid(
                f"{what}: string length {n} exceeds the maximum {GGUF_MAX_STRING_LENGTH}"
            )
        if n > self.remaining:
            raise _Invalid(
                f"{what}: string length {n} exceeds the {self.remaining} bytes left "
                "(truncated or corrupt)"
            )
        return n

    def skip_strings(self, n: int, what: str) -> None:
        """Walk n length-prefixed strings, checking each length: the hot loop of a
        150k-token vocabulary, so it runs on the window's bytes directly."""
        unpack_from = _U64.unpack_from
        i = 0
        while i < n:
            if self.pos + 8 > self.size:
                raise _Invalid(f"{what} element {i}: truncated")
            self.take(8, what)  # makes sure the window holds at least one length
            self.pos -= 8
            buf, base = self._buf, self._start
            p, end = self.pos - base, len(buf) - 8
            while i < n and p <= end:
                (length,) = unpack_from(buf, p)
                if length > GGUF_MAX_STRING_LENGTH or base + p + 8 + length > self.size:
                    self.pos = base + p
                    self.string_length(f"{what} element {i}")  # raises, with the reason
                p += 8 + length
                i += 1
            self.pos = base + p

    def string(self, what: str) -> bytes:
        return bytes(self.take(self.string_length(what), what))


def _read_array(cur: _Cursor, key: str, elem: GGUFValueType, n: int, *, keep: bool) -> Any:
    """n elements of type elem (the count already read); a tuple, or None when not kept."""
    what = f"key '{key}'"
    if n > GGUF_MAX_ARRAY_ELEMENTS:
        raise _Invalid(
            f"{what}: array of {n} elements exceeds the maximum {GGUF_MAX_ARRAY_ELEMENTS}"
        )
    if elem == GGUFValueType.STRING:
        if n * 8 > cur.remaining:
            raise _Invalid(
                f"{what}: array of {n} strings needs at least {n * 8} bytes, "
                f"{cur.remaining} left (truncated or corrupt)"
            )
        if keep:
            return tuple(_text(cur.string(f"{what} element {i}")) for i in range(n))
        cur.skip_strings(n, what)
        return None
    code = _FIXED[elem]
    size = struct.calcsize(code)
    if n * size > cur.remaining:
        raise _Invalid(
            f"{what}: array of {n} {_TYPE_NAME[elem]} values needs {n * size} bytes, "
            f"{cur.remaining} left (truncated or corrupt)"
        )
    if not keep:
        cur.skip(n * size, what)
        return None
    values = struct.unpack(f"<{n}{code}", cur.take(n * size, what))
    return tuple(v != 0 for v in values) if elem == GGUFValueType.BOOL else values


def _read_kv(cur: _Cursor, i: int, seen: set[bytes]) -> tuple[str, Any, GGUFValueType, bool]:
    raw = cur.string(f"key {i}")
    if not raw:
        raise _Invalid(f"key {i} is empty")
    if raw in seen:
        raise _Invalid(f"duplicate key '{_name(raw)}' for KV pair {i}")
    seen.add(raw)
    key = _name(raw)
    what = f"key '{key}'"
    t = cur.unpack(_I32, f"{what} type")
    is_array = t == GGUFValueType.ARRAY
    n = 1
    if is_array:
        t = cur.unpack(_I32, f"{what} array type")
        n = cur.unpack(_U64, f"{what} array length")
    if t not in _TYPE_NAME or t == GGUFValueType.ARRAY:
        raise _Invalid(f"{what} has invalid GGUF type {t}")
    vt = GGUFValueType(t)
    if is_array:
        start = cur.pos
        if n <= EAGER_ARRAY_LIMIT:
            return key, _read_array(cur, key, vt, n, keep=True), vt, True
        _read_array(cur, key, vt, n, keep=False)
        return key, Deferred(f"arr[{_TYPE_NAME[t]}]", n, start), vt, True
    if vt == GGUFValueType.STRING:
        n = cur.string_length(what)
        if n <= EAGER_STRING_LIMIT:
            return key, _text(bytes(cur.take(n, what))), vt, False
        start = cur.pos
        cur.skip(n, what)
        return key, Deferred("str", n, start), vt, False
    s = struct.Struct("<" + _FIXED[vt])
    value = cur.unpack(s, what)
    return key, (value != 0 if vt == GGUFValueType.BOOL else value), vt, False


def _read_tensor_info(cur: _Cursor, i: int, seen: set[bytes]) -> tuple[str, list[int], int, int]:
    raw = cur.string(f"tensor name {i}")
    if len(raw) >= GGML_MAX_NAME:
        raise _Invalid(f"tensor name {i} is too long: {len(raw)} >= {GGML_MAX_NAME}")
    if raw in seen:
        raise _Invalid(f"duplicate tensor name '{_name(raw)}' for tensor {i}")
    seen.add(raw)
    name = _name(raw)
    what = f"tensor '{name}'"
    n_dims = cur.unpack(_U32, f"{what} n_dims")
    if n_dims > GGML_MAX_DIMS:
        raise _Invalid(f"{what} has invalid number of dimensions: {n_dims} > {GGML_MAX_DIMS}")
    ne = [1] * GGML_MAX_DIMS
    for j in range(n_dims):
        ne[j] = cur.unpack(_I64, f"{what} dimension {j}")
        if ne[j] < 0:
            raise _Invalid(f"{what} dimension {j} has invalid number of elements: {ne[j]} < 0")
    # gguf.cpp: the element count must be representable in int64
    count = ne[0]
    for d in ne[1:]:
        if d > 1 and INT64_MAX // d < count:
            raise _Invalid(f"{what} has shape {tuple(ne)}: element count overflows int64")
        count *= d
    t = cur.unpack(_I32, f"{what} type")
    if not 0 <= t < GGML_TYPE_COUNT:
        raise _Invalid(f"{what} has invalid ggml type {t}, should be in 0..{GGML_TYPE_COUNT - 1}")
    _, blck, type_size = GGML_TYPES.get(t, ("", 0, 0))
    if blck == 0 or ne[0] % blck != 0:
        raise _Invalid(
            f"{what} of ggml type {t} has {ne[0]} elements per row, "
            f"not a multiple of the block size {blck}"
        )
    if count // blck > SIZE_MAX // type_size:
        raise _Invalid(f"{what} with shape {tuple(ne)} has a size in bytes over {SIZE_MAX}")
    offset = cur.unpack(_U64, f"{what} offset")
    return name, ne[:n_dims], t, offset


def _nbytes(ne: list[int], t: int) -> int:
    """ggml_nbytes of a contiguous tensor (0 when any dimension is 0)."""
    full = ne + [1] * (GGML_MAX_DIMS - len(ne))
    if any(d <= 0 for d in full):
        return 0
    _, blck, type_size = GGML_TYPES[t]
    rows = full[1] * full[2] * full[3]
    return full[0] // blck * type_size * rows


def _parse(f: IO[bytes], path: Path, size: int) -> GGUFFile:
    cur = _Cursor(f, path, size)
    if size < 4 or bytes(cur.take(4, "magic")) != GGUF_MAGIC:
        raise CheckpointError(f"{path}: not a GGUF file (no GGUF magic at its start)")
    version = cur.unpack(_U32, "version")
    if version == 0:
        raise _Invalid(f"bad GGUF version: {version}")
    if version & 0x0000FFFF == 0:
        raise _Invalid(f"GGUF version {version} is extremely large (a big-endian file?)")
    if version == 1:
        raise _Invalid("GGUFv1 is no longer supported")
    if version > GGUF_VERSION:
        raise _Invalid(f"GGUF version {version}, llama.cpp reads up to version {GGUF_VERSION}")
    n_tensors = cur.unpack(_I64, "number of tensors")
    n_kv = cur.unpack(_I64, "number of key-value pairs")
    if n_tensors < 0:
        raise _Invalid(f"number of tensors is {n_tensors}")
    if n_kv < 0:
        raise _Invalid(f"number of key-value pairs is {n_kv}")
    # Before any loop: what the counts claim must fit in what is left.
    needed = n_kv * _MIN_KV_BYTES + n_tensors * _MIN_TENSOR_INFO_BYTES
    if needed > cur.remaining:
        raise _Invalid(
            f"{n_kv} key-value pairs and {n_tensors} tensors cannot fit "
            f"in the {cur.remaining} bytes left (truncated or corrupt counts)"
        )

    metadata: dict[str, Any] = {}
    types: dict[str, tuple[GGUFValueType, bool]] = {}
    seen: set[bytes] = set()
    for i in range(n_kv):
        key, value, vt, is_array = _read_kv(cur, i, seen)
        metadata[key] = value
        types[key] = (vt, is_array)

    alignment = GGUF_DEFAULT_ALIGNMENT
    if "general.alignment" in metadata:
        vt, is_array = types["general.alignment"]
        if is_array or vt != GGUFValueType.UINT32:
            shown = "arr" if is_array else _TYPE_NAME[vt]
            raise _Invalid(f"key 'general.alignment' must be of type u32 but is {shown}")
        alignment = int(metadata["general.alignment"])
        if alignment == 0 or alignment & (alignment - 1):
            raise _Invalid(f"alignment {alignment} is not a power of 2")

    infos: list[tuple[str, list[int], int, int]] = []
    names: set[bytes] = set()
    for i in range(n_tensors):
        infos.append(_read_tensor_info(cur, i, names))

    data_offset = cur.pos
    if n_tensors > 0:
        data_offset = -(-cur.pos // alignment) * alignment
        if data_offset > size:
            raise _Invalid("the data section starts past the end of the file (truncated)")

    tensors: list[TensorInfo] = []
    expected = 0
    for name, ne, t, offset in infos:
        if offset != expected:
            raise _Invalid(f"tensor '{name}' has offset {offset}, expected {expected}")
        nbytes = _nbytes(ne, t)
        if nbytes > SIZE_MAX - (alignment - 1):
            raise _Invalid(f"tensor '{name}' size {nbytes} overflows after padding")
        padded = -(-nbytes // alignment) * alignment
        if SIZE_MAX - expected < padded:
            raise _Invalid(f"tensor '{name}' size overflows the data section")
        # llama.cpp's model loader: the data must lie inside the file
        if data_offset + offset + nbytes > size:
            raise _Invalid(
                f"tensor '{name}' data ends at byte {data_offset + offset + nbytes}, "
                f"past the end of the file ({size} bytes; truncated)"
            )
        tensors.append(TensorInfo(name, tuple(ne), t, GGML_TYPES[t][0], offset, nbytes))
        expected += padded

    return GGUFFile(
        path=path,
        version=version,
        metadata=MappingProxyType(metadata),
        tensors=tuple(tensors),
        alignment=alignment,
        data_offset=data_offset,
        file_size=size,
        _by_name=MappingProxyType({t.name: t for t in tensors}),
    )


# Parsed headers by file identity: a changed file (size, mtime or ctime; a
# rewrite always moves ctime) is parsed again. Files changed within the last
# second are not memoized (timestamps are coarse, a second rewrite could keep
# them). Bounded, and the values are immutable, so sharing them is safe.
_MEMO: OrderedDict[tuple[str, int, int, int, int, int], GGUFFile] = OrderedDict()
_MEMO_SIZE = 16


def read_gguf(path: Path) -> GGUFFile:
    """The checked header of the GGUF at ``path``.

    Raises ModelNotFoundError if it does not exist, CheckpointError if it is
    not a GGUF file or any check fails (one line, naming the first problem).
    """
    path = Path(path)
    with _open(path) as f:
        st = os.fstat(f.fileno())
        ident = (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        hit = _MEMO.get(ident)
        if hit is not None:
            _MEMO.move_to_end(ident)
            return hit
        try:
            parsed = _parse(f, path, st.st_size)
        except _Invalid as e:
            raise CheckpointError(f"{path}: not a valid GGUF: {e}") from None
        except OSError as e:
            raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from e
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > 1_000_000_000:
        _MEMO[ident] = parsed
    while len(_MEMO) > _MEMO_SIZE:
        _MEMO.popitem(last=False)
    return parsed


def is_gguf(path: Path) -> bool:
    """True when the file starts with the GGUF magic (nothing else is checked)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False
