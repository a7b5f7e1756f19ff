"""Broken checkpoints of the corpus (tests/malformed/checkpoints.py) in real
processes, and what a refusal must never show. The whole corpus goes through
every command in tests/malformed/test_every_command.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import FIXTURES
from malformed.checkpoints import EXPECTED_EXIT, build_checkpoint_cases
from typer.testing import CliRunner

from edgeglm.cli import _register, app

_register()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_checkpoint_cases(tmp_path_factory.mktemp("corpus"))


def _argv(command: str, model: Path, out: Path) -> list[str]:
    if command == "convert-gguf":
        return ["convert", str(model), "-o", str(out / "m.gguf"), "-q", "F16"]
    if command == "convert-onnx":
        return ["convert", str(model), "-f", "onnx", "-o", str(out / "onnx"), "-q", "fp32"]
    # A hardware profile: the planner's probe of this machine is not what is tested.
    return ["plan", str(model), "--hardware", str(FIXTURES / "hardware" / "raspberry-pi5-8gb.json")]


@pytest.mark.parametrize("case", ["index_names_a_system_file", "absurd_layer_count"])
def test_the_real_command_refuses_too(corpus: dict[str, Path], case: str, tmp_path: Path) -> None:
    """A real process: the console script's own exit path, no traceback."""
    r = subprocess.run(
        [sys.executable, "-m", "edgeglm", "convert", str(corpus[case]), "-f", "onnx", "-o",
         str(tmp_path / "onnx")],
        cwd=tmp_path.parent,  # not the repo root, whose bare source folder would shadow the package
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "400"},
    )  # fmt: skip
    assert r.returncode == EXPECTED_EXIT, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_no_message_shows_bytes_of_a_file_outside(corpus: dict[str, Path]) -> None:
    """The index points at /etc/passwd: refused by its name, never opened."""
    r = CliRunner().invoke(app, _argv("plan", corpus["index_names_a_system_file"], Path()))
    assert r.exit_code == EXPECTED_EXIT and "leaves" in r.stderr
    assert "root:" not in r.stderr
