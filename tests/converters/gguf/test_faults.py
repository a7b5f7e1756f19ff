"""Bad input gets a clear error and loses nothing; interrupted conversions
leave nothing at the final path and never touch the inputs."""

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

import pytest
from helpers import HF_FIXTURES

from edgeglm.converters.gguf.convert import convert
from edgeglm.errors import (
    CheckpointError,
    InsufficientDiskError,
    QuantizationError,
    UnsupportedArchitectureError,
    UsageError,
)

SRC = HF_FIXTURES / "glm4"


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _copy(tmp_path: Path) -> Path:
    dst = tmp_path / "src"
    shutil.copytree(SRC, dst)
    return dst


def test_interrupt_mid_write_leaves_nothing(tmp_path: Path) -> None:
    before = _digest(SRC)
    out = tmp_path / "m.gguf"

    def stop(name: str, i: int, n: int, done: int, total: int) -> None:
        if i == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert(SRC, out, "Q4_K_M", progress=stop)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []
    assert _digest(SRC) == before


_SLOW_CONVERT = """
import sys, time
from pathlib import Path
from edgeglm.cli import _sigterm_as_interrupt
from edgeglm.converters.gguf.convert import convert
_sigterm_as_interrupt()
def slow(name, i, n, done, total):
    if i == 2:
        Path(sys.argv[3]).touch()
    time.sleep(0.3)
try:
    convert(sys.argv[1], Path(sys.argv[2]), "Q8_0", progress=slow)
except KeyboardInterrupt:
    sys.exit(130)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_conversion_leaves_nothing_at_the_target(
    tmp_path: Path, sig: signal.Signals
) -> None:
    out, marker = tmp_path / "m.gguf", tmp_path / "started"
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_CONVERT, str(SRC), str(out), str(marker)], cwd=tmp_path
    )
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    marker.unlink()
    os.kill(proc.pid, sig)
    proc.wait(timeout=60)
    assert not out.exists()
    leftovers = list(tmp_path.iterdir())
    if sig == signal.SIGTERM:
        assert leftovers == []  # unwound and cleaned up
    else:
        # SIGKILL cannot be caught: a hidden temp file may stay; the next
        # conversion to the same target removes it.
        assert all(p.name.startswith(".m.gguf.edgeglm-tmp-") for p in leftovers)
        convert(SRC, out, "Q8_0")
        assert [p.name for p in tmp_path.iterdir()] == ["m.gguf"]


def test_not_enough_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the converter reads free space through the shutil module: patch it there
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 1024))
    with pytest.raises(InsufficientDiskError, match="GiB free"):
        convert(SRC, tmp_path / "m.gguf", "F16")
    assert list(tmp_path.iterdir()) == []


def test_config_that_disagrees_with_tensors(tmp_path: Path) -> None:
    src = _copy(tmp_path)
    cfg = json.loads((src / "config.json").read_text())
    cfg["hidden_size"] = cfg["hidden_size"] * 2
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"config\.json.*hidden_size"):
        convert(src, tmp_path / "m.gguf", "F16")


def test_missing_layer_is_reported(tmp_path: Path) -> None:
    src = _copy(tmp_path)
    cfg = json.loads((src / "config.json").read_text())
    cfg["num_hidden_layers"] += 1
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="blocks"):
        convert(src, tmp_path / "m.gguf", "F16")


def test_unknown_architecture_lists_supported(tmp_path: Path) -> None:
    src = _copy(tmp_path)
    cfg = json.loads((src / "config.json").read_text())
    cfg["architectures"] = ["LlamaForCausalLM"]
    (src / "config.json").write_text(json.dumps(cfg))
    supported = r"Glm4ForCausalLM.*GlmMoeDsaForCausalLM"
    with pytest.raises(UnsupportedArchitectureError, match=supported):
        convert(src, tmp_path / "m.gguf", "F16")


def test_truncated_weights_file(tmp_path: Path) -> None:
    src = _copy(tmp_path)
    st = src / "model.safetensors"
    st.write_bytes(st.read_bytes()[: st.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: truncated"):
        convert(src, tmp_path / "m.gguf", "F16")


def test_low_bit_iq_needs_an_imatrix(tmp_path: Path) -> None:
    with pytest.raises(QuantizationError, match="importance matrix"):
        convert(SRC, tmp_path / "m.gguf", "IQ2_XS")


def test_output_paths(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is a directory"):
        convert(SRC, tmp_path, "F16")
    with pytest.raises(UsageError, match="does not exist"):
        convert(SRC, tmp_path / "no" / "m.gguf", "F16")
    src = _copy(tmp_path)
    with pytest.raises(UsageError, match="overwrite the input"):
        convert(src, src / "model.safetensors", "F16")


def test_float16_overflow_is_refused_not_silently_inf(tmp_path: Path) -> None:
    import numpy as np
    from helpers import write_safetensors

    from edgeglm.checkpoint.hf import HFCheckpoint
    from edgeglm.errors import ConversionError

    src = _copy(tmp_path)
    ck = HFCheckpoint(src)
    tensors = {n: np.array(ck.load(n)) for n in ck}
    ck.close()
    tensors["model.layers.0.mlp.down_proj.weight"][0, 0] = 1e5
    write_safetensors(src / "model.safetensors", tensors)
    with pytest.raises(ConversionError, match="float16's range"):
        convert(src, tmp_path / "m.gguf", "F16")
    assert convert(src, tmp_path / "m.gguf", "BF16").output.exists()
