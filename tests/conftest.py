"""Session-wide fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import HF_FIXTURES


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return HF_FIXTURES
