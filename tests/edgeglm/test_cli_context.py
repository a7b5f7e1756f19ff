"""A context past the model's trained one, said plainly in one line by every
command that takes one (llama.cpp itself only logs "possible training context
overflow" and goes on); and the long silent step before a checkpoint runs
(its conversion) shown on a terminal, not on a pipe."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from helpers import HF_FIXTURES, edgeglm
from terminal import CTRL_D, Terminal

from edgeglm.converters.gguf.convert import convert
from edgeglm.errors import ExitCode

CHECKPOINT = str(HF_FIXTURES / "glm4")  # trained context: 2048 tokens
PAST = "past the model's trained context of 2048 tokens"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from edgeglm.converters.onnx import convert as onnx_convert

    folder = tmp_path_factory.mktemp("models")
    return {
        "gguf": str(convert(HF_FIXTURES / "glm4", folder / "glm4.gguf", "Q8_0").output),
        "onnx": str(onnx_convert(HF_FIXTURES / "glm4", folder / "onnx", "int4").output),
        "checkpoint": CHECKPOINT,
        "config": str(HF_FIXTURES / "glm4" / "config.json"),
    }


def _one_line(r: object, fragment: str) -> None:
    import subprocess

    assert isinstance(r, subprocess.CompletedProcess)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == ExitCode.USAGE, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], r.stderr
    assert "llama_context" not in r.stderr and "overflow" not in r.stderr  # no raw log line


@pytest.mark.parametrize(
    ("command", "model", "args"),
    [
        ("run", "gguf", ["-c", "100000", "-p", "Hi"]),
        ("run", "onnx", ["-c", "4096", "-p", "Hi"]),
        ("run", "checkpoint", ["-c", "4096", "-p", "Hi"]),
        ("run", "gguf", ["-c", "2049", "-p", "Hi", "--no-plan"]),
        ("run", "gguf", ["-c", "4096", "--dry-run"]),
        ("chat", "gguf", ["--cli", "-c", "100000"]),
        ("plan", "gguf", ["--ctx", "100000"]),
        ("plan", "checkpoint", ["--ctx", "2050"]),
        ("plan", "config", ["--ctx", "3000"]),
        ("plan", "onnx", ["--ctx", "4096"]),
    ],
)
def test_a_context_past_the_trained_one_is_refused_in_one_plain_line(
    command: str,
    model: str,
    args: list[str],
    models: dict[str, str],
    tmp_path: Path,
    env: dict[str, str],
) -> None:
    r = edgeglm(command, models[model], *args, cwd=tmp_path, env=env)
    _one_line(r, PAST)
    assert not (tmp_path / "cache" / "artifacts").exists()  # refused before converting


def test_plan_never_pads_a_context_past_the_trained_one(
    models: dict[str, str], tmp_path: Path, env: dict[str, str]
) -> None:
    r = edgeglm("plan", models["checkpoint"], "--ctx", "2000", "--json", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["settings"]["n_ctx"] == 2048 and plan["warnings"] == []


def test_score_says_a_text_is_longer_than_the_trained_context(
    models: dict[str, str], tmp_path: Path, env: dict[str, str]
) -> None:
    text = tmp_path / "long.txt"
    text.write_text("def add(a, b):\n    return a + b\n" * 600, encoding="utf-8")
    r = edgeglm(
        "score", models["gguf"], "--text", str(text), "-o", str(tmp_path / "s.npz"),
        cwd=tmp_path, env=env,
    )  # fmt: skip
    _one_line(r, "more than the model's trained context of 2048 tokens")
    assert not (tmp_path / "s.npz").exists()


@pytest.mark.parametrize("command", ["run", "chat", "score", "bench"])
def test_converting_a_checkpoint_shows_progress_on_a_terminal_only(
    command: str, tmp_path: Path, env: dict[str, str]
) -> None:
    text = tmp_path / "text.txt"
    text.write_text("def add(a, b):\n    return a + b\n", encoding="utf-8")
    args = {
        "run": ["run", CHECKPOINT, "-p", "Hello", "-n", "2", "-q", "Q4_K_M"],
        "chat": ["chat", "--cli", CHECKPOINT, "-q", "Q4_K_M"],
        "score": ["score", CHECKPOINT, "--text", str(text), "-o", "s.npz", "-q", "Q4_K_M"],
        "bench": ["bench", CHECKPOINT, "--quants", "Q4_K_M", "--repeat", "1"],
    }[command]
    tty_env = {k: v for k, v in env.items() if k != "NO_COLOR"} | {"TERM": "xterm"}
    t = Terminal([sys.executable, "-m", "edgeglm", *args], cwd=tmp_path, env=tty_env)
    try:
        t.expect(r"converting glm4 to (F32|Q4_K_M)")  # the bar, while the checkpoint converts
        if command == "chat":
            t.expect(r"> ")  # the chat's prompt: the model is loaded
            t.send(CTRL_D)
        assert t.wait() == 0
    finally:
        t.close()
    if command == "chat":
        return
    # on a pipe (and with --json), no bar: stderr keeps its one-line messages
    piped_env = {**env, "EDGEGLM_CACHE_DIR": str(tmp_path / "other-cache")}
    r = edgeglm(*args, cwd=tmp_path, env=piped_env)
    assert r.returncode == 0, r.stderr
    assert "converting glm4" not in r.stderr and "━" not in r.stderr, r.stderr
