"""The real `edgeglm` command in a subprocess: exit codes, stdout data, stderr messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import HF_FIXTURES

from edgeglm.errors import ExitCode


def edgeglm(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgeglm", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_convert_json_summary(tmp_path: Path) -> None:
    out = tmp_path / "m.gguf"
    r = edgeglm(
        "convert",
        str(HF_FIXTURES / "glm4"),
        "-o",
        str(out),
        "--quant",
        "q4_k_m",
        "--json",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["quant"] == "Q4_K_M"
    assert summary["bytes"] == out.stat().st_size
    assert set(summary) >= {"output", "bits_per_weight", "tensor_types", "sha256", "seconds"}
    import hashlib

    assert summary["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()


def test_user_mistakes_get_one_line_and_an_exit_code(tmp_path: Path) -> None:
    cases = [
        (
            ["convert", str(tmp_path / "nope"), "-o", "x.gguf"],
            ExitCode.MODEL_NOT_FOUND,
            "no such model folder",
        ),
        (
            ["convert", str(HF_FIXTURES / "glm4"), "-o", "x.gguf", "-q", "Q9_K"],
            ExitCode.USAGE,
            "unknown quant type",
        ),
    ]
    pkl = tmp_path / "pkl"
    pkl.mkdir()
    (pkl / "config.json").write_text("{}")
    (pkl / "pytorch_model.bin").write_bytes(b"\x80\x04")
    cases.append((["convert", str(pkl), "-o", "x.gguf"], ExitCode.BAD_CHECKPOINT, "pickle"))
    for args, code, message in cases:
        r = edgeglm(*args, cwd=tmp_path)
        assert r.returncode == code, (args, r.stderr)
        assert message in r.stderr
        assert "Traceback" not in r.stderr
        assert r.stdout == ""
    assert not (tmp_path / "x.gguf").exists()
