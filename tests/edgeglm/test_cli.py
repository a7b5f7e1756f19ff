"""The real `edgeglm` command in a subprocess: exit codes, stdout data, stderr messages."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import HF_FIXTURES, edgeglm

from edgeglm.errors import ExitCode


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
        (
            ["convert", str(HF_FIXTURES / "glm4"), "-o", "x.gguf", "--imatrix", "no.dat"],
            ExitCode.USAGE,
            "--imatrix no.dat: no such file",
        ),
        (
            ["convert", str(HF_FIXTURES / "glm4"), "-o", "x.gguf", "--calibrate", "no.txt"],
            ExitCode.USAGE,
            "--calibrate no.txt: no such file",
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
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert r.stdout == ""
    assert not (tmp_path / "x.gguf").exists()


def test_run_streams_text_and_json_reports_timings(tmp_path: Path) -> None:
    model = str(HF_FIXTURES / "glm4")
    r = edgeglm("run", model, "-p", "Hello", "-n", "8", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "tok/s decode" in r.stderr
    r = edgeglm("run", model, "-p", "Hello", "-n", "8", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["backend"] == "llama.cpp" and data["finish_reason"] in ("stop", "length")
    assert data["timings"]["completion_tokens"] <= 8
    assert data["timings"]["prompt_tokens"] > 0


def test_score_saves_tokens_and_logits(tmp_path: Path) -> None:
    import numpy as np

    text = tmp_path / "t.txt"
    text.write_text("def f(x):\n    return x + 1\n", encoding="utf-8")
    gguf = tmp_path / "m.gguf"
    assert (
        edgeglm(
            "convert", str(HF_FIXTURES / "glm4"), "-o", str(gguf), "-q", "F32", cwd=tmp_path
        ).returncode
        == 0
    )
    r = edgeglm(
        "score", str(gguf), "--text", str(text), "-o", str(tmp_path / "s.npz"), cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    data = np.load(tmp_path / "s.npz")
    assert data["tokens"].dtype == np.int32 and data["logits"].dtype == np.float32
    assert data["logits"].shape == (len(data["tokens"]), 1024)


def test_convert_with_a_recipe(tmp_path: Path) -> None:
    out = tmp_path / "m.gguf"
    demo = str(Path(__file__).parents[2] / "edgeglm" / "demo_model")
    r = edgeglm("convert", demo, "-o", str(out), "--recipe", "edgeglm-demo", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "recipe edgeglm-demo:" in r.stderr
    assert json.loads(r.stdout)["quant"] in ("Q8_0", "Q6_K", "Q4_K_M")
    r = edgeglm("convert", demo, "-o", str(out), "--recipe", "no-such-recipe", cwd=tmp_path)
    assert r.returncode == 2 and "known: " in r.stderr
