"""A conversion never writes to, or replaces, a file of its input (converters/output.py
check_output, shared by both converters); a write that fails leaves nothing behind
and says why in one line: a full disk is exit 5, a place we cannot write is exit 2."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import HF_FIXTURES
from typer.testing import CliRunner

from edgeglm.cli import _register, app
from edgeglm.converters.gguf.convert import convert as gguf_convert
from edgeglm.converters.onnx import convert as onnx_convert
from edgeglm.errors import ExitCode, UsageError

_register()
SRC = HF_FIXTURES / "glm"


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    root.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(SRC / name, root / name)
    (root / "README.md").write_text("my notes")
    return root


def _cli(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.stderr


@pytest.mark.parametrize(
    "target",
    [
        "model/config.json",
        "model/tokenizer.json",
        "model/model.safetensors",
        "model/README.md",
        "model/../model/config.json",
        "link.gguf",  # a symlink to the checkpoint's config.json
        "hardlink.gguf",  # a hard link of its tokenizer.json
    ],
)
def test_gguf_output_is_never_an_input_file(src: Path, target: str) -> None:
    base = src.parent
    (base / "link.gguf").symlink_to(src / "config.json")
    os.link(src / "tokenizer.json", base / "hardlink.gguf")
    before = _digest(src)
    code, err = _cli("convert", str(src), "-o", str(base / target), "-q", "F16")
    assert code == ExitCode.USAGE and "would overwrite the input" in err
    assert _digest(src) == before
    assert not [p for p in base.rglob(".*edgeglm-tmp*")]


def test_a_new_file_in_the_model_folder_is_fine(src: Path) -> None:
    """llama.cpp's own converter writes its GGUF there by default."""
    before = _digest(src)
    result = gguf_convert(src, src / "model-F16.gguf", "F16")
    assert result.output.is_file()
    assert {k: v for k, v in _digest(src).items() if k != "model-F16.gguf"} == before
    # converting again replaces that earlier GGUF, which no converter reads
    assert gguf_convert(src, src / "model-F16.gguf", "Q8_0").quant == "Q8_0"
    # ... but a file merely named .gguf is not one
    (src / "notes.gguf").write_text("mine")
    with pytest.raises(UsageError, match="would overwrite the input"):
        gguf_convert(src, src / "notes.gguf", "F16")


def test_imatrix_and_calibration_text_are_inputs_too(src: Path, tmp_path: Path) -> None:
    text = tmp_path / "calib.txt"
    text.write_text("GLM models run on the machines people own.\n")
    code, err = _cli("convert", str(src), "-o", str(text), "--calibrate", str(text))
    assert code == ExitCode.USAGE and "would overwrite the input" in err
    assert text.read_text().startswith("GLM models")
    imatrix = src / "imatrix.gguf"  # a GGUF, in the model folder, but an input all the same
    imatrix.write_bytes(b"GGUF, not read: refused first")
    code, err = _cli("convert", str(src), "-o", str(imatrix), "--imatrix", str(imatrix))
    assert code == ExitCode.USAGE and "would overwrite the input" in err
    assert imatrix.read_bytes() == b"GGUF, not read: refused first"


def test_onnx_output_is_never_the_input_folder_or_holds_its_files(src: Path) -> None:
    base = src.parent
    before = _digest(base)
    for target, message in [
        (src, "input checkpoint folder"),
        (base, "input checkpoint folder"),
        (src / ".." / "model", "input checkpoint folder"),
        (src / "config.json", "is a file"),
    ]:
        with pytest.raises(UsageError, match=message):
            onnx_convert(src, target, "fp32")
    assert _digest(base) == before


def test_onnx_output_holding_linked_input_files(tmp_path: Path) -> None:
    """A Hugging Face cache snapshot links into blobs: the blobs folder is input too."""
    repo = tmp_path / "models--zai-org--glm"
    blobs, snap = repo / "blobs", repo / "snapshots" / ("0" * 40)
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    for f in ("config.json", "model.safetensors", "tokenizer.json"):
        shutil.copyfile(SRC / f, blobs / f"blob-{f}")
        (snap / f).symlink_to(os.path.relpath(blobs / f"blob-{f}", snap))
    with pytest.raises(UsageError, match="holds the input file"):
        onnx_convert(snap, blobs, "fp32")
    # an earlier ONNX folder that happens to hold a hard link of an input file
    out = tmp_path / "onnx"
    onnx_convert(snap, out, "fp32")
    os.link(blobs / "blob-config.json", out / "config-copy.json")
    with pytest.raises(UsageError, match="hard link of the input file"):
        onnx_convert(snap, out, "fp32")


# -- write failures ------------------------------------------------------------------

_LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
limit = int(sys.argv.pop(1))
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.argv[0] = "edgeglm"
from edgeglm.cli import main
main()
"""


@pytest.mark.parametrize("fmt", ["gguf", "onnx"])
def test_disk_full_mid_conversion(fmt: str, src: Path, tmp_path: Path) -> None:
    """A real failed write: the file-size limit makes write() fail as a full disk does."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / ("m.gguf" if fmt == "gguf" else "onnx")
    args = [
        "convert",
        str(src),
        "-o",
        str(out),
        "-f",
        fmt,
        "-q",
        "F16" if fmt == "gguf" else "fp32",
    ]
    r = subprocess.run(
        [sys.executable, "-c", _LIMITED, str(256 * 1024), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "400"},
    )
    assert r.returncode == ExitCode.CONVERSION_FAILED, r.stderr
    assert r.stderr.strip().splitlines() == [f"error: {out}: not enough disk space to write it "
                                             "(File too large)"]  # fmt: skip
    assert list(out_dir.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0o555 folder anyway")
@pytest.mark.parametrize("fmt", ["gguf", "onnx"])
def test_read_only_output_folder(fmt: str, src: Path, tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        out = ro / ("m.gguf" if fmt == "gguf" else "onnx")
        code, err = _cli("convert", str(src), "-o", str(out), "-f", fmt)
        assert code == ExitCode.USAGE and "cannot write there" in err
        assert len(err.strip().splitlines()) == 1 and list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("fmt", ["gguf", "onnx"])
def test_output_under_a_file(fmt: str, src: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    code, err = _cli("convert", str(src), "-o", str(tmp_path / "notes.txt" / "m"), "-f", fmt)
    assert code == ExitCode.USAGE and "is not a folder" in err
    assert (tmp_path / "notes.txt").read_text() == "mine"
