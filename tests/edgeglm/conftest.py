"""Fixtures shared by the command-line tests under tests/edgeglm/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import HF_FIXTURES

from edgeglm.converters.gguf.convert import convert


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A subprocess environment with its own cache and a wide terminal (one message, one line)."""
    return {**os.environ, "EDGEGLM_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "160"}


@pytest.fixture(scope="session")
def moe_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The glm4_moe fixture converted to Q8_0 once for the session (read-only to tests)."""
    out = tmp_path_factory.mktemp("moe") / "glm4_moe.gguf"
    return convert(HF_FIXTURES / "glm4_moe", out, "Q8_0").output
