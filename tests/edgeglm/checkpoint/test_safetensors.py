from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from helpers import write_safetensors
from safetensors.numpy import save_file

from edgeglm.checkpoint.safetensors import SafetensorsFile, bf16_to_f32
from edgeglm.errors import CheckpointError


def test_reads_what_the_reference_library_wrote(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 5)).astype(np.float32)
    b = rng.standard_normal((7,)).astype(np.float16)
    save_file({"a": a, "b": b}, str(tmp_path / "m.safetensors"), metadata={"format": "pt"})
    st = SafetensorsFile(tmp_path / "m.safetensors")
    assert set(st) == {"a", "b"}
    assert st.metadata == {"format": "pt"}
    np.testing.assert_array_equal(st.load("a"), a)
    np.testing.assert_array_equal(st.load("b"), b)
    assert st.tensors["a"].shape == (3, 5)


def test_bf16_widens_exactly(tmp_path: Path) -> None:
    x = np.array([1.0, -2.5, 3.140625, 1e-3], dtype=np.float32)
    truncated = (x.view(np.uint32) & 0xFFFF0000).view(np.float32)
    write_safetensors(tmp_path / "m.safetensors", {"w": x}, bf16={"w"})
    st = SafetensorsFile(tmp_path / "m.safetensors")
    assert st.tensors["w"].dtype == "BF16"
    np.testing.assert_array_equal(st.load("w"), truncated)
    np.testing.assert_array_equal(bf16_to_f32(np.array([0x3F80], dtype=np.uint16)), [1.0])


def _raw(tmp_path: Path, header: object, data: bytes = b"") -> Path:
    head = json.dumps(header).encode()
    p = tmp_path / "bad.safetensors"
    p.write_bytes(struct.pack("<Q", len(head)) + head + data)
    return p


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a safetensors file"),
        (struct.pack("<Q", 10**6) + b"{}", "truncated or corrupt safetensors header"),
        (struct.pack("<Q", 5) + b"{nope", "not valid JSON"),
    ],
)
def test_broken_headers_name_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    p = tmp_path / "bad.safetensors"
    p.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as e:
        SafetensorsFile(p)
    assert str(p) in str(e.value)


def test_truncated_data_is_reported(tmp_path: Path) -> None:
    p = _raw(
        tmp_path, {"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}}, b"\0" * 10
    )
    with pytest.raises(CheckpointError, match="truncated: tensor 'w'"):
        SafetensorsFile(p)


def test_shape_and_offsets_must_agree(tmp_path: Path) -> None:
    p = _raw(
        tmp_path, {"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 60]}}, b"\0" * 64
    )
    with pytest.raises(CheckpointError, match="inconsistent shape"):
        SafetensorsFile(p)


def test_overlapping_tensors_are_refused(tmp_path: Path) -> None:
    h = {
        "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
        "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]},
    }
    with pytest.raises(CheckpointError, match="overlap"):
        SafetensorsFile(_raw(tmp_path, h, b"\0" * 24))


def test_unknown_dtype(tmp_path: Path) -> None:
    h = {"w": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}}
    with pytest.raises(CheckpointError, match="F8_E4M3"):
        SafetensorsFile(_raw(tmp_path, h, b"\0" * 4))


def test_reading_never_modifies_the_file(tmp_path: Path) -> None:
    p = tmp_path / "m.safetensors"
    save_file({"a": np.ones((2, 2), np.float32)}, str(p))
    before = p.read_bytes()
    st = SafetensorsFile(p)
    st.load("a")
    st.close()
    assert p.read_bytes() == before
