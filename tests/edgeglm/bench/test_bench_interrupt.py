"""Ctrl-C in ``edgeglm bench``, typed into a real terminal: exit 130, never a
traceback; nothing written before an artifact finished; afterwards only a
report marked partial, at ``STEM.partial.*``.

The terminal's Ctrl-C is a SIGINT to the whole foreground group, as a user's
is: bench and the child measuring an artifact. Each test waits for the
progress bar to name the artifact being measured (output, not time), and the
artifacts are measured with enough repeats that none finishes first.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from helpers import HF_FIXTURES
from terminal import CTRL_C, Terminal

from edgeglm.converters.gguf.convert import convert
from edgeglm.errors import ExitCode


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An F32 and a Q8_0 GGUF of one model: the F32 is measured first (the reference)."""
    folder = tmp_path_factory.mktemp("ggufs")
    ref = convert(HF_FIXTURES / "glm4", folder / "a-f32.gguf", "F32").output
    q8 = convert(HF_FIXTURES / "glm4", folder / "b-q8.gguf", "Q8_0").output
    return ref, q8


def _bench(args: list[str], cwd: Path, env: dict[str, str]) -> Terminal:
    env = {k: v for k, v in env.items() if k != "NO_COLOR"} | {"TERM": "xterm"}
    return Terminal(
        [sys.executable, "-m", "edgeglm", "bench", *args], cwd=cwd, env=env, cols=160, rows=40
    )


def test_ctrl_c_before_any_artifact_finished_writes_nothing(
    ggufs: tuple[Path, Path], tmp_path: Path, env: dict[str, str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    ref, _ = ggufs
    # thousands of timed runs: the first artifact cannot finish before the Ctrl-C
    t = _bench([str(ref), "--repeat", "1000", "-o", str(out / "r.json")], tmp_path, env)
    try:
        t.expect("a-f32")  # the bar names the artifact being measured
        t.send(CTRL_C)
        assert t.wait() == ExitCode.INTERRUPTED
    finally:
        t.close()
    assert "no report written" in t.text and "Traceback" not in t.text
    assert list(out.iterdir()) == []  # no report, no partial one, no temporary file


def test_ctrl_c_after_an_artifact_finished_writes_a_partial_report(
    ggufs: tuple[Path, Path], tmp_path: Path, env: dict[str, str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    ref, q8 = ggufs
    t = _bench([str(ref), str(q8), "--repeat", "30", "-o", str(out / "r.json")], tmp_path, env)
    try:
        t.expect("b-q8")  # the first artifact finished; the second is being measured
        t.send(CTRL_C)
        assert t.wait() == ExitCode.INTERRUPTED
    finally:
        t.close()
    assert "Traceback" not in t.text and "partial" in t.text
    assert sorted(p.name for p in out.iterdir()) == [
        "r.partial.csv",
        "r.partial.json",
        "r.partial.md",
        "r.partial.svg",
    ]
    report = json.loads((out / "r.partial.json").read_text())
    assert report["complete"] is False
    assert [r["label"] for r in report["rows"]] == ["a-f32"]
    assert report["rows"][0]["reference"] is True
    assert "Partial report" in (out / "r.partial.md").read_text()
    assert "interrupted: partial" in (out / "r.partial.svg").read_text()
