"""Every broken checkpoint of the corpus (tests/malformed/checkpoints.py) through
``edgeglm convert`` (GGUF and ONNX) and ``edgeglm plan``: exit 4, one line on
stderr, nothing at the output, and not one byte of the input changed."""

from __future__ import annotations

import hashlib
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


def _digest(folder: Path) -> dict[str, str]:
    """Every file below the case's folder, and what its links point to."""
    out = {}
    for p in sorted(folder.parent.rglob("*")):
        if p.is_symlink():
            out[str(p)] = "->" + os.readlink(p)
        elif p.is_file():
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _argv(command: str, model: Path, out: Path) -> list[str]:
    if command == "convert-gguf":
        return ["convert", str(model), "-o", str(out / "m.gguf"), "-q", "F16"]
    if command == "convert-onnx":
        return ["convert", str(model), "-f", "onnx", "-o", str(out / "onnx"), "-q", "fp32"]
    # A hardware profile: the planner's probe of this machine is not what is tested.
    return ["plan", str(model), "--hardware", str(FIXTURES / "hardware" / "raspberry-pi5-8gb.json")]


# plan's own model lookup (edgeglm/planner/sources.py open_model), not the checkpoint
# reader, answers a folder without config.json; it says 3 where the policy says 4.
_PLAN_SAYS_NOT_FOUND = {("plan", "missing_config")}


@pytest.mark.parametrize("command", ["convert-gguf", "convert-onnx", "plan"])
def test_every_broken_checkpoint_is_refused_untouched(
    corpus: dict[str, Path], command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # one message, one line
    before = _digest(next(iter(corpus.values())))
    wrong = []
    for name, model in sorted(corpus.items()):
        out = tmp_path / name
        out.mkdir()
        result = CliRunner().invoke(app, _argv(command, model, out))
        lines = result.stderr.strip().splitlines()
        expect = 3 if (command, name) in _PLAN_SAYS_NOT_FOUND else EXPECTED_EXIT
        ok = (
            result.exit_code == expect
            and len(lines) == 1
            and lines[0].startswith("error: ")
            and list(out.iterdir()) == []
        )
        if not ok:
            wrong.append(
                f"{name}: exit {result.exit_code}, {result.stderr!r}, {result.exception!r}"
            )
    assert wrong == []
    assert _digest(next(iter(corpus.values()))) == before


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
