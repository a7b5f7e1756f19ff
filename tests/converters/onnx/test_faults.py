"""Bad input gets a typed, clear error; interrupted conversions leave nothing at the
target; external data must stay inside the model folder, on save and on load."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import HF_FIXTURES, load_reference, write_safetensors

from edgeglm.backends.onnx import OnnxModel, check_external_data
from edgeglm.checkpoint.hf import HFCheckpoint
from edgeglm.converters.onnx import convert, pipeline
from edgeglm.errors import (
    BackendError,
    CheckpointError,
    ConversionError,
    InsufficientDiskError,
    UnsupportedArchitectureError,
    UsageError,
)
from edgeglm.metrics import kl_divergence

SRC = HF_FIXTURES / "glm"


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(SRC, tmp_path / "src"))


# -- interruption and placement ---------------------------------------------------


def test_interrupt_mid_write_leaves_nothing(tmp_path: Path) -> None:
    before = _digest(SRC)

    def stop(name: str, i: int, n: int, done: int, total: int) -> None:
        if i == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert(SRC, tmp_path / "out", "int4", progress=stop)
    assert list(tmp_path.iterdir()) == []
    assert _digest(SRC) == before


_SLOW = """
import sys, time
from pathlib import Path
from edgeglm.converters.onnx import convert
def slow(name, i, n, done, total):
    if i == 2:
        Path(sys.argv[3]).touch()
    time.sleep(0.3)
convert(sys.argv[1], Path(sys.argv[2]), "int4", progress=slow)
"""


def test_killed_conversion_leaves_nothing_and_is_cleaned_up_next_time(tmp_path: Path) -> None:
    out, marker = tmp_path / "out", tmp_path / "started"
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW, str(SRC), str(out), str(marker)], cwd=tmp_path
    )
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    marker.unlink()
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert not out.exists() and leftovers and all(".edgeglm-tmp-" in n for n in leftovers)
    convert(SRC, out, "fp32")  # the next conversion to this target removes the dead one's temp
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_replaces_an_earlier_model_folder_but_nothing_else(tmp_path: Path) -> None:
    out = tmp_path / "out"
    convert(SRC, out, "fp32")
    assert convert(SRC, out, "int4").quant == "int4"
    meta = {p.key: p.value for p in onnx.load(str(out / "model.onnx")).metadata_props}
    assert meta["edgeglm.quant"] == "int4" and [p.name for p in tmp_path.iterdir()] == ["out"]
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("mine")
    with pytest.raises(UsageError, match="not an ONNX model folder"):
        convert(SRC, other, "fp32")
    assert (other / "todo.txt").read_text() == "mine"
    with pytest.raises(UsageError, match="is a file"):
        convert(SRC, other / "todo.txt", "fp32")


def test_refuses_to_write_over_its_input(tmp_path: Path) -> None:
    src = _copy(tmp_path)
    with pytest.raises(UsageError, match="input checkpoint"):
        convert(src, src, "fp32")
    with pytest.raises(UsageError, match="input checkpoint"):  # the target holds the input
        convert(src, tmp_path, "fp32")


def test_insufficient_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # pipeline reads free space through the shutil module, so patching it there is enough
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1, 1, 0))
    with pytest.raises(InsufficientDiskError, match="GiB free"):
        convert(SRC, tmp_path / "out", "fp32")
    assert list(tmp_path.iterdir()) == []


# -- bad checkpoints ------------------------------------------------------------------


def test_unsupported_rope_scaling(tmp_path: Path) -> None:
    src = _copy(tmp_path)
    cfg = json.loads((src / "config.json").read_text())
    cfg["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0}
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedArchitectureError, match="rope_type 'yarn'"):
        convert(src, tmp_path / "out", "fp32")


def test_tensor_with_no_place_in_the_graph(tmp_path: Path) -> None:
    src = _copy(tmp_path)
    ckpt = HFCheckpoint(src)
    tensors = {n: ckpt.load(n) for n in ckpt}
    ckpt.close()
    tensors["model.layers.0.self_attn.q_norm.weight"] = np.ones(64, np.float32)
    write_safetensors(src / "model.safetensors", tensors)
    with pytest.raises(CheckpointError, match=r"no place for: model\.layers\.0\.self_attn\.q_norm"):
        convert(src, tmp_path / "out", "fp32")
    assert not (tmp_path / "out").exists()


def test_nan_weights_and_missing_tokenizer(tmp_path: Path) -> None:
    src = _copy(tmp_path)
    ckpt = HFCheckpoint(src)
    tensors = {n: np.array(ckpt.load(n)) for n in ckpt}
    ckpt.close()
    tensors["model.layers.1.mlp.down_proj.weight"][0, 0] = np.nan
    write_safetensors(src / "model.safetensors", tensors)
    with pytest.raises(ConversionError, match="NaN"):
        convert(src, tmp_path / "out", "int4")
    shutil.copytree(SRC, src, dirs_exist_ok=True)
    (src / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match=r"no tokenizer\.json"):
        convert(src, tmp_path / "out", "fp32")
    assert {p.name for p in tmp_path.iterdir()} == {"src"}


# -- external data ----------------------------------------------------------------


@pytest.fixture
def external(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The glm fixture converted as if it were over 2 GB: weights in model.onnx.data."""
    monkeypatch.setattr(pipeline, "EXTERNAL_ABOVE", 0)
    r = convert(SRC, tmp_path / "ext", "fp32")
    assert r.external_data and r.data_sha256 and "model.onnx.data" in r.files
    return r.output


def test_external_data_model_matches_the_reference(external: Path) -> None:
    assert (external / "model.onnx.data").stat().st_size > (external / "model.onnx").stat().st_size
    tokens, ref_logits, _ = load_reference(SRC)
    m = OnnxModel(external, n_threads=1)
    assert kl_divergence(ref_logits, m.score(tokens)).mean() < 1e-6


def _relocate(folder: Path, location: str) -> None:
    """Point every external tensor of model.onnx at ``location``."""
    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    (folder / "model.onnx").write_bytes(model.SerializeToString())


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("/etc/passwd", "is not relative"),
        ("C:\\\\weights.bin", "is not relative"),
        ("../model.onnx.data", "leaves"),
        ("sub/../../x.data", "leaves"),
        ("nowhere.data", "is missing"),
    ],
)
def test_external_data_paths_are_checked_on_load(
    external: Path, location: str, message: str
) -> None:
    _relocate(external, location)
    with pytest.raises(BackendError, match=message):
        OnnxModel(external)


def test_external_data_symlinks_and_truncation(external: Path, tmp_path: Path) -> None:
    data = external / "model.onnx.data"
    elsewhere = tmp_path / "elsewhere.data"
    shutil.move(data, elsewhere)
    data.symlink_to(elsewhere)
    with pytest.raises(BackendError, match="symlink"):
        OnnxModel(external)
    data.unlink()
    data.write_bytes(elsewhere.read_bytes()[:1000])
    with pytest.raises(BackendError, match="truncated"):
        OnnxModel(external)


def test_external_data_is_checked_on_save(external: Path) -> None:
    model = onnx.load(str(external / "model.onnx"), load_external_data=False)
    check_external_data(model, external, error=ConversionError)  # what convert() runs
    _relocate(external, "../escape.data")
    model = onnx.load(str(external / "model.onnx"), load_external_data=False)
    with pytest.raises(ConversionError, match="leaves"):
        check_external_data(model, external, error=ConversionError)


# -- corrupt and foreign model files ------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return convert(SRC, tmp_path / "m", "fp32").output


def test_corrupt_model_file(folder: Path) -> None:
    model = folder / "model.onnx"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    with pytest.raises(BackendError, match="not a valid ONNX model"):
        OnnxModel(folder)
    model.write_bytes(os.urandom(4096))
    with pytest.raises(BackendError, match="not a valid ONNX model"):
        OnnxModel(folder)


def test_foreign_onnx_model(folder: Path) -> None:
    h = onnx.helper
    g = h.make_graph(
        [h.make_node("Relu", ["x"], ["y"])], "classifier",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])],
    )  # fmt: skip
    onnx.save(h.make_model(g, ir_version=10), str(folder / "model.onnx"))
    with pytest.raises(BackendError, match=r"not a decoder with a KV cache.*input_ids"):
        OnnxModel(folder)


def test_not_a_model_folder(folder: Path, tmp_path: Path) -> None:
    (folder / "genai_config.json").unlink()
    with pytest.raises(BackendError, match=r"no genai_config\.json"):
        OnnxModel(folder)
    with pytest.raises(BackendError, match="no such ONNX model folder"):
        OnnxModel(tmp_path / "missing")
