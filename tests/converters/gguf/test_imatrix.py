"""Importance matrices: llama.cpp's two file formats, and our own calibration."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader, GGUFWriter
from helpers import HF_FIXTURES

from edgeglm.converters.gguf.calibrate import calibrate
from edgeglm.converters.gguf.convert import convert
from edgeglm.converters.gguf.imatrix import Imatrix, read_imatrix
from edgeglm.errors import CheckpointError


def _legacy(
    path: Path, entries: dict[str, tuple[int, np.ndarray]], chunks: int, dataset: str
) -> None:
    """tools/imatrix's legacy layout: values are mean x^2 * ncall."""
    out = struct.pack("<i", len(entries))
    for name, (ncall, mean_sq) in sorted(entries.items()):
        raw = name.encode()
        out += struct.pack("<i", len(raw)) + raw + struct.pack("<ii", ncall, mean_sq.size)
        out += (mean_sq.astype("<f4") * ncall).tobytes()
    out += struct.pack("<i", chunks) + struct.pack("<i", len(dataset)) + dataset.encode()
    path.write_bytes(out)


def test_reads_legacy_dat(tmp_path: Path) -> None:
    a = np.linspace(0.1, 2.0, 256, dtype=np.float32)
    experts = np.abs(np.random.default_rng(0).standard_normal(4 * 64)).astype(np.float32)
    _legacy(
        tmp_path / "m.dat",
        {"blk.0.attn_q.weight": (10, a), "blk.1.ffn_up_exps.weight": (10, experts)},
        10,
        "wiki.txt",
    )
    im = read_imatrix(tmp_path / "m.dat")
    np.testing.assert_allclose(im.weights["blk.0.attn_q.weight"], a, rtol=1e-6)
    got = im.get("blk.1.ffn_up_exps.weight", 64, 4)
    assert got is not None and got.shape == (4, 64)
    assert (im.chunks, im.datasets) == (10, ["wiki.txt"])


def test_reads_gguf_imatrix_and_reports_dead_experts(tmp_path: Path) -> None:
    """tools/imatrix's GGUF layout: raw sums and per-expert counts."""
    w = GGUFWriter(tmp_path / "m.gguf", arch="imatrix")
    w.add_type("imatrix")
    w.add_array("imatrix.datasets", ["calib.txt"])
    w.add_uint32("imatrix.chunk_count", 3)
    w.add_uint32("imatrix.chunk_size", 512)
    sums = np.arange(3 * 8, dtype=np.float32).reshape(3, 8)
    counts = np.array([[4.0], [0.0], [2.0]], dtype=np.float32)
    w.add_tensor("blk.1.ffn_down_exps.weight.in_sum2", sums)
    w.add_tensor("blk.1.ffn_down_exps.weight.counts", counts)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    im = read_imatrix(tmp_path / "m.gguf")
    got = im.get("blk.1.ffn_down_exps.weight", 8, 3)
    assert got is not None
    np.testing.assert_allclose(got[0], sums[0] / 4)
    np.testing.assert_allclose(got[1], 1.0)  # never fired: uniform weights
    np.testing.assert_allclose(got[2], sums[2] / 2)
    assert im.unseen_experts == {"blk.1.ffn_down_exps.weight": [1]}
    assert im.chunks == 3 and im.datasets == ["calib.txt"]


def test_garbage_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.dat").write_bytes(b"\xff\xff\xff\x7f")
    with pytest.raises(CheckpointError, match="not an imatrix"):
        read_imatrix(tmp_path / "x.dat")


@pytest.fixture(scope="module")
def calib_text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import pydoc_data.topics

    p = tmp_path_factory.mktemp("calib") / "calib.txt"
    p.write_text("\n".join(list(pydoc_data.topics.topics.values())[:12]), encoding="utf-8")
    return p


def test_calibration_collects_every_matmul_and_expert(calib_text: Path) -> None:
    im = calibrate(HF_FIXTURES / "glm4_moe", calib_text, chunk=128)
    assert im.chunks >= 4
    assert "blk.0.attn_q.weight" in im.weights  # dense block
    exps = im.get("blk.1.ffn_gate_exps.weight", 256, 4)  # routed experts, one row each
    assert exps is not None and exps.shape == (4, 256) and np.isfinite(exps).all()
    assert "blk.1.ffn_gate_shexp.weight" in im.weights
    assert all((w > 0).all() for w in im.weights.values())


def test_imatrix_is_used_and_recorded(calib_text: Path, tmp_path: Path) -> None:
    im = calibrate(HF_FIXTURES / "glm4", calib_text, chunk=128)
    with_im = convert(HF_FIXTURES / "glm4", tmp_path / "a.gguf", "Q4_K_M", imatrix=im).output
    without = convert(HF_FIXTURES / "glm4", tmp_path / "b.gguf", "Q4_K_M").output
    assert with_im.read_bytes() != without.read_bytes()
    fields = {f.name for f in GGUFReader(with_im).fields.values()}
    assert {"quantize.imatrix.dataset", "quantize.imatrix.chunks_count"} <= fields


@pytest.fixture(scope="module")
def moe_calibrated(
    calib_text: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Imatrix, Path]:
    """glm4_moe's imatrix and its F32 GGUF, shared by the four byte comparisons."""
    src = HF_FIXTURES / "glm4_moe"
    f32 = convert(src, tmp_path_factory.mktemp("moe") / "f32.gguf", "F32").output
    return calibrate(src, calib_text, chunk=128), f32


@pytest.mark.parametrize("quant", ["Q4_K_M", "Q2_K", "IQ4_XS", "Q4_0"])
def test_imatrix_application_is_byte_identical_to_llama_quantize(
    quant: str, moe_calibrated: tuple[Imatrix, Path], tmp_path: Path
) -> None:
    """Same importance matrix, same bytes as llama.cpp's quantizer (and its imatrix-aware mix)."""
    from helpers import gguf_tensors, llama_quantize_with_imatrix

    from edgeglm.backends.isolated import run_isolated
    from edgeglm.converters.gguf.quant_types import scheme

    im, f32 = moe_calibrated
    ours = convert(HF_FIXTURES / "glm4_moe", tmp_path / "ours.gguf", quant, imatrix=im).output
    theirs = tmp_path / "theirs.gguf"
    ftype = int(scheme(quant).ftype)
    assert run_isolated(llama_quantize_with_imatrix, str(f32), str(theirs), ftype, im.weights) == 0
    assert gguf_tensors(ours) == gguf_tensors(theirs)
