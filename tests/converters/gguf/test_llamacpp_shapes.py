"""Checkpoints transformers runs but llama.cpp's graphs abort on are refused at
conversion, in one line, before any GGUF is written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import HF_FIXTURES
from safetensors.numpy import load_file, save_file

from edgeglm.converters.gguf.convert import convert
from edgeglm.errors import CheckpointError, ExitCode


def _glm5_with_index_head_dim(out: Path, index_dim: int) -> Path:
    """The glm_moe_dsa fixture with its indexer heads cut to `index_dim` (consistent shapes)."""
    src = HF_FIXTURES / "glm_moe_dsa"
    shutil.copytree(src, out)
    cfg = json.loads((src / "config.json").read_text())
    heads, old = cfg["index_n_heads"], cfg["index_head_dim"]
    cfg["index_head_dim"] = index_dim
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    tensors = load_file(src / "model.safetensors")
    for name, t in list(tensors.items()):
        if ".indexer.wq_b." in name:
            t = t.reshape(heads, old, -1)[:, :index_dim].reshape(heads * index_dim, -1)
        elif ".indexer.wk." in name or ".indexer.k_norm." in name:
            t = t[:index_dim]
        tensors[name] = np.ascontiguousarray(t)
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    return out


@pytest.mark.parametrize("index_dim", [32, 96])
def test_glm5_index_head_dim_llama_cpp_cannot_run_is_refused(
    tmp_path: Path, index_dim: int
) -> None:
    model = _glm5_with_index_head_dim(tmp_path / "m", index_dim)
    with pytest.raises(CheckpointError, match=r"index_head_dim 64, 128, 256"):
        convert(model, tmp_path / "m.gguf", "F32")
    assert not (tmp_path / "m.gguf").exists()


def test_the_refusal_is_one_line_and_exit_4(tmp_path: Path) -> None:
    model = _glm5_with_index_head_dim(tmp_path / "m", 32)
    r = subprocess.run(
        [sys.executable, "-m", "edgeglm", "convert", str(model), "-o", str(tmp_path / "o.gguf"),
         "-q", "F32"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "400"},
    )  # fmt: skip
    assert r.returncode == ExitCode.BAD_CHECKPOINT, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert "index_head_dim 32" in r.stderr
    assert not (tmp_path / "o.gguf").exists()
