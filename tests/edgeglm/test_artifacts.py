from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from helpers import HF_FIXTURES
from malformed.gguf_cases import build_gguf_base

from edgeglm.artifacts import Artifact, ensure_gguf, ensure_onnx, resolve, verify_gguf
from edgeglm.errors import CheckpointError, ModelNotFoundError


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEGLM_CACHE_DIR", str(tmp_path / "cache"))


def test_resolve_kinds(tmp_path: Path) -> None:
    assert resolve(str(HF_FIXTURES / "glm4")) == Artifact("hf", HF_FIXTURES / "glm4")
    assert resolve(None).kind == "hf"  # the bundled demo model
    gguf = build_gguf_base(tmp_path)
    assert resolve(str(gguf)) == Artifact("gguf", gguf)
    by_magic = tmp_path / "model.bin"
    shutil.copyfile(gguf, by_magic)
    assert resolve(str(by_magic)) == Artifact("gguf", by_magic)
    onnx = tmp_path / "onnx"
    onnx.mkdir()
    (onnx / "genai_config.json").write_text("{}")
    assert resolve(str(onnx)).kind == "onnx"


def test_resolve_refuses_what_it_cannot_read_and_what_is_not_there(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "notes.gguf").write_text("hello")
    (tmp_path / "bad.gguf").write_bytes(b"GGUF" + (3).to_bytes(4, "little") + bytes(6))
    (tmp_path / "empty").mkdir()
    for name, says in [
        ("notes.txt", "not a GGUF file"),
        ("notes.gguf", "not a GGUF file"),
        ("bad.gguf", "not a valid GGUF: number of tensors"),
        ("empty", "no config.json"),
    ]:
        with pytest.raises(CheckpointError, match=says):
            resolve(str(tmp_path / name))
    with pytest.raises(ModelNotFoundError):
        resolve(str(tmp_path / "missing.gguf"))


def test_hf_checkpoints_convert_once_and_reconvert_when_changed(tmp_path: Path) -> None:
    src = tmp_path / "glm4"
    shutil.copytree(HF_FIXTURES / "glm4", src)
    a = ensure_gguf(src, "Q8_0")
    mtime = a.stat().st_mtime_ns
    assert ensure_gguf(src, "Q8_0") == a and a.stat().st_mtime_ns == mtime  # cached
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps(cfg, indent=1))  # the checkpoint changed
    assert ensure_gguf(src, "Q8_0") != a


def test_a_failed_conversion_leaves_nothing_in_the_cache(tmp_path: Path) -> None:
    src = tmp_path / "glm4"
    shutil.copytree(HF_FIXTURES / "glm4", src)
    cfg = json.loads((src / "config.json").read_text())
    cfg["num_hidden_layers"] += 1  # a block the checkpoint does not have
    (src / "config.json").write_text(json.dumps(cfg))
    for make in (ensure_gguf, ensure_onnx):
        with pytest.raises(CheckpointError, match="blocks"):
            make(src)
    artifacts = tmp_path / "cache" / "artifacts"
    assert not artifacts.exists() or list(artifacts.iterdir()) == []


def test_verified_files_are_remembered_by_content(tmp_path: Path) -> None:
    gguf = ensure_gguf(HF_FIXTURES / "glm4", "Q8_0")
    verify_gguf(gguf)
    verdicts = json.loads((tmp_path / "cache" / "verified-gguf.json").read_text())
    assert verdicts["entries"] == {hashlib.sha256(gguf.read_bytes()).hexdigest(): "ok"}
