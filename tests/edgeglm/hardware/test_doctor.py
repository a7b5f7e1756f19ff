"""The doctor view (``edgeglm doctor`` and the TUI's hardware pane) of committed profiles."""

from __future__ import annotations

import io

from helpers import FIXTURES
from rich.console import Console

from edgeglm.hardware import HardwareProfile, load_profile
from edgeglm.hardware.doctor import render_doctor


def _profile(name: str) -> HardwareProfile:
    return load_profile(FIXTURES / "hardware" / f"{name}.json")


def _text(hw: HardwareProfile, width: int = 100) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(render_doctor(hw))
    return console.export_text()


def test_a_profile_says_where_it_came_from_and_what_each_device_has() -> None:
    text = _text(_profile("apple-m2-16gb"))
    assert "(profile apple-m2-16gb from profile)" in text
    assert "NEON, DOTPROD, I8MM" in text
    assert "Apple M2" in text and "shares system RAM" in text
    assert "100.0 GB/s (profile (spec sheet))" in text
    assert "CoreMLExecutionProvider" in text and "works" in text


def test_what_was_not_measured_says_so() -> None:
    hw = _profile("raspberry-pi5-8gb")
    hw.memory.bandwidth_gbps = None
    hw.llama_cpp = hw.onnxruntime = None
    text = _text(hw, width=40)
    assert "Bandwidth  not measured" in text
    assert text.count("not probed") == 2  # llama.cpp and ONNX Runtime
    assert "no GPU found" in text
