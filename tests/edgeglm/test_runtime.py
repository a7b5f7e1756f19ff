from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import HF_FIXTURES

from edgeglm.errors import UsageError
from edgeglm.runtime import Artifact, ensure_gguf, resolve, verify_gguf


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEGLM_CACHE_DIR", str(tmp_path / "cache"))


def test_resolve_kinds(tmp_path: Path) -> None:
    assert resolve(str(HF_FIXTURES / "glm4")) == Artifact("hf", HF_FIXTURES / "glm4")
    assert resolve(None).kind == "hf"  # the bundled demo model
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 16)
    assert resolve(str(gguf)) == Artifact("gguf", gguf)
    onnx = tmp_path / "onnx"
    onnx.mkdir()
    (onnx / "genai_config.json").write_text("{}")
    assert resolve(str(onnx)).kind == "onnx"
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UsageError, match="not a GGUF"):
        resolve(str(tmp_path / "notes.txt"))


def test_hf_checkpoints_convert_once_and_reconvert_when_changed(tmp_path: Path) -> None:
    src = tmp_path / "glm4"
    shutil.copytree(HF_FIXTURES / "glm4", src)
    a = ensure_gguf(src, "Q8_0")
    mtime = a.stat().st_mtime_ns
    assert ensure_gguf(src, "Q8_0") == a and a.stat().st_mtime_ns == mtime  # cached
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps(cfg, indent=1))  # the checkpoint changed
    assert ensure_gguf(src, "Q8_0") != a


def test_verified_files_are_remembered(tmp_path: Path) -> None:
    gguf = ensure_gguf(HF_FIXTURES / "glm4", "Q8_0")
    verify_gguf(gguf)
    verdicts = json.loads((tmp_path / "cache" / "verified-gguf.json").read_text())
    assert any(k.startswith(str(gguf.resolve())) for k in verdicts)
