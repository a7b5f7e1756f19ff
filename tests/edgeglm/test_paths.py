"""Where EdgeGLM keeps its state, and that the suite never uses the user's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgeglm.paths import cache_dir


def test_cache_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("EDGEGLM_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == tmp_path / "home" / ".cache" / "edgeglm"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "edgeglm"
    monkeypatch.setenv("EDGEGLM_CACHE_DIR", str(tmp_path / "explicit"))
    assert cache_dir() == tmp_path / "explicit"
    assert cache_dir().is_dir()


def test_the_suite_and_its_subprocesses_run_in_a_home_of_their_own(isolated_home: Path) -> None:
    code = "import pathlib, edgeglm.paths as p; print(pathlib.Path.home()); print(p.cache_dir())"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/"
    ).stdout.split()
    assert [Path(x) for x in out] == [isolated_home, isolated_home / ".cache" / "edgeglm"]
    assert cache_dir().is_relative_to(isolated_home)
