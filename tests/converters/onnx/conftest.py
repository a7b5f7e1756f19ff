"""Conversions shared by the ONNX converter tests: each (fixture, precision) converted once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import HF_FIXTURES

from edgeglm.converters.onnx import convert


@pytest.fixture(scope="session")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Path]:
    root = tmp_path_factory.mktemp("onnx")
    done: dict[tuple[str, str], Path] = {}

    def get(name: str, quant: str) -> Path:
        if (name, quant) not in done:
            done[name, quant] = convert(HF_FIXTURES / name, root / f"{name}-{quant}", quant).output
        return done[name, quant]

    return get
