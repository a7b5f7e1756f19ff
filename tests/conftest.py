"""Session-wide set-up: the installed package, and a home of the suite's own.

Two things happen before any test module is imported:

- ``python -m pytest`` puts the repository root first on ``sys.path``, where
  the bare ``edgeglm/`` source folder would shadow the installed package
  (setuptools maps ``converters/`` and ``tui/`` into ``edgeglm`` only in the
  installed link tree). The root comes off the path, so every way of starting
  pytest imports the same package.
- Every test, and every process a test starts, sees a temporary ``HOME``,
  cache and Hugging Face home: the suite never reads or writes the user's
  ``~/.cache/edgeglm`` or Hugging Face cache, and never touches the network.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[1]


def _drop_source_root_from_path() -> None:
    def is_root(entry: str) -> bool:
        try:
            return Path(entry or os.getcwd()).resolve() == _ROOT
        except OSError:
            return False

    sys.path[:] = [p for p in sys.path if not is_root(p)]
    shadowed = sys.modules.get("edgeglm")
    if shadowed is not None and Path(shadowed.__file__ or "").resolve().parent == _ROOT / "edgeglm":
        for name in [m for m in sys.modules if m == "edgeglm" or m.startswith("edgeglm.")]:
            del sys.modules[name]


_drop_source_root_from_path()

_HOME = Path(tempfile.mkdtemp(prefix="edgeglm-tests-"))
ISOLATED_ENV = {
    "HOME": str(_HOME),
    "XDG_CACHE_HOME": str(_HOME / ".cache"),
    "XDG_CONFIG_HOME": str(_HOME / ".config"),
    "XDG_DATA_HOME": str(_HOME / ".local" / "share"),
    "EDGEGLM_CACHE_DIR": str(_HOME / ".cache" / "edgeglm"),
    "HF_HOME": str(_HOME / ".cache" / "huggingface"),
    "HF_HUB_OFFLINE": "1",
}
# Environment variables, not a fixture: subprocesses (the CLI, child-process
# model checks, the app in tmux) inherit them.
os.environ.update(ISOLATED_ENV)

from helpers import HF_FIXTURES  # noqa: E402  (after the path fix above)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return HF_FIXTURES


@pytest.fixture(scope="session")
def isolated_home() -> Path:
    """The temporary home every test runs under (see the module docstring)."""
    return _HOME
