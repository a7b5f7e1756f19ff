"""Our reader accepts and refuses what the safetensors library does (its Rust
read_metadata and Metadata::validate), checked side by side on the same bytes;
it also refuses a tensor name given twice, which the library lets the last win."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from edgeglm.checkpoint.safetensors import SafetensorsFile
from edgeglm.errors import CheckpointError


def _file(tmp_path: Path, header: object, data: bytes, *, length: int | None = None) -> Path:
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    p = tmp_path / "t.safetensors"
    p.write_bytes(struct.pack("<Q", len(head) if length is None else length) + head + data)
    return p


def _library_accepts(p: Path) -> bool:
    try:
        with safe_open(str(p), "np") as f:
            list(f.keys())
    except SafetensorError:
        return False
    return True


def _f32(begin: int, end: int, shape: list[int] | None = None) -> dict[str, object]:
    return {"dtype": "F32", "shape": [(end - begin) // 4] if shape is None else shape,
            "data_offsets": [begin, end]}  # fmt: skip


REFUSED: dict[str, tuple[object, bytes, str]] = {
    "gap": ({"a": _f32(0, 4), "b": _f32(8, 12)}, b"\0" * 12, "unused bytes after tensor 'a'"),
    "not_from_zero": ({"a": _f32(4, 8)}, b"\0" * 8, "before the first tensor"),
    "trailing": ({"a": _f32(0, 4)}, b"\0" * 8, "4 trailing bytes"),
    "overlap": ({"a": _f32(0, 8), "b": _f32(4, 12)}, b"\0" * 12, "overlap"),
    "same_range": ({"a": _f32(0, 4), "b": _f32(0, 4)}, b"\0" * 8, "overlap"),
    "truncated": ({"a": _f32(0, 16)}, b"\0" * 8, "truncated"),
    "end_before_begin": (
        {"a": {"dtype": "F32", "shape": [0], "data_offsets": [4, 0]}},
        b"\0" * 4,
        "ends before it begins",
    ),
    "size_mismatch": ({"a": _f32(0, 8, [1])}, b"\0" * 8, "inconsistent shape"),
    "overflow": ({"a": _f32(0, 4, [2**32, 2**32, 2])}, b"\0" * 4, "overflows 64-bit"),
    "float_shape": ({"a": _f32(0, 4, [1.0])}, b"\0" * 4, "shape is not a list"),  # type: ignore[list-item]
    "bool_shape": ({"a": _f32(0, 4, [True])}, b"\0" * 4, "shape is not a list"),
    "negative_shape": ({"a": _f32(0, 4, [-1])}, b"\0" * 4, "shape is not a list"),
    "three_offsets": (
        {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 4]}},
        b"\0" * 4,
        "not a pair",
    ),
    "no_offsets": ({"a": {"dtype": "F32", "shape": [1]}}, b"\0" * 4, "not a pair"),
    "string_offsets": (
        {"a": {"dtype": "F32", "shape": [1], "data_offsets": ["0", "4"]}},
        b"\0" * 4,
        "not a pair",
    ),
    "unknown_dtype": (
        {"a": {"dtype": "F7", "shape": [1], "data_offsets": [0, 1]}},
        b"\0",
        "cannot read",
    ),
    "entry_not_object": ({"a": [0, 4]}, b"\0" * 4, "not an object"),
    "metadata_not_strings": (
        {"__metadata__": {"n": 1}, "a": _f32(0, 4)},
        b"\0" * 4,
        "__metadata__",
    ),
    "header_is_a_list": ([1, 2], b"", "not a JSON object"),
    "not_json": (b"{nope", b"", "not valid JSON"),
    "not_utf8": (b'{"\xff": 1}', b"", "not UTF-8"),
    "nan": (b'{"a": NaN}', b"", "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_like_the_library(tmp_path: Path, case: str) -> None:
    header, data, message = REFUSED[case]
    p = _file(tmp_path, header, data)
    assert not _library_accepts(p)
    with pytest.raises(CheckpointError, match=message) as e:
        SafetensorsFile(p)
    assert str(p) in str(e.value)


@pytest.mark.parametrize(
    ("length", "message"),
    [(100_000_001, "over 100 MB"), (2**64 - 1, "over 100 MB"), (4099, "past the end")],
)
def test_header_length_field(tmp_path: Path, length: int, message: str) -> None:
    p = _file(tmp_path, {"a": _f32(0, 4)}, b"\0" * 4, length=length)
    assert not _library_accepts(p)
    with pytest.raises(CheckpointError, match=message) as e:
        SafetensorsFile(p)
    # the field is the file's own first bytes: not echoed
    assert str(length) not in str(e.value).removeprefix(str(p))


ACCEPTED: dict[str, tuple[object, bytes]] = {
    "empty": ({}, b""),
    "zero_sized_tensor_between": (
        {"a": _f32(0, 4), "z": _f32(4, 4, [0, 3]), "b": _f32(4, 8)},
        b"\0" * 8,
    ),
    "scalar": ({"s": _f32(0, 4, [])}, b"\0" * 4),
    "any_order_in_json": ({"b": _f32(4, 8), "a": _f32(0, 4)}, b"\0" * 8),
    "extra_fields": ({"a": {**_f32(0, 4), "note": "x"}}, b"\0" * 4),
    "null_metadata": ({"__metadata__": None, "a": _f32(0, 4)}, b"\0" * 4),
    "padded_header": (
        b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}    ',
        b"\0" * 4,
    ),
}


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_accepted_like_the_library(tmp_path: Path, case: str) -> None:
    header, data = ACCEPTED[case]
    p = _file(tmp_path, header, data)
    assert _library_accepts(p)
    st = SafetensorsFile(p)
    assert set(st) == {k for k in (header if isinstance(header, dict) else {"a": 0})} - {
        "__metadata__"
    }


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    entry = json.dumps(_f32(0, 4))
    p = _file(tmp_path, f'{{"a": {entry}, "a": {entry}}}'.encode(), b"\0" * 4)
    with pytest.raises(CheckpointError, match="names 'a' twice"):
        SafetensorsFile(p)


def test_every_dtype_the_library_writes(tmp_path: Path) -> None:
    arrays = {
        d: np.arange(6, dtype=d).reshape(2, 3)
        for d in ("float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8")
    }
    arrays["bool"] = np.array([True, False])
    save_file(arrays, str(tmp_path / "m.safetensors"), metadata={"format": "np"})
    st = SafetensorsFile(tmp_path / "m.safetensors")
    for name, a in arrays.items():
        np.testing.assert_array_equal(st.load(name), a)
