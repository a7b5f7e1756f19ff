"""Where models come from when a command is given none: the bundled demo model."""

from __future__ import annotations

from pathlib import Path

DEMO_MODEL = Path(__file__).resolve().parent / "demo_model"


def default_model() -> Path:
    return DEMO_MODEL
