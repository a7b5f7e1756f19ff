"""The doctor view (``edgeglm doctor`` and the TUI's hardware pane) of committed profiles."""

from __future__ import annotations

import io
from pathlib import Path

from helpers import FIXTURES, edgeglm
from rich.console import Console

from edgeglm.hardware import GPUInfo, HardwareProfile, LlamaCppInfo, load_profile
from edgeglm.hardware.doctor import render_doctor, unusable_gpus
from edgeglm.hardware.engine import installed_build
from edgeglm.hardware.runtimes import probe_llama_cpp


def _profile(name: str) -> HardwareProfile:
    return load_profile(FIXTURES / "hardware" / f"{name}.json")


def _text(hw: HardwareProfile, width: int = 100, *, engine_here: bool | None = None) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(render_doctor(hw, engine_here=engine_here))
    return console.export_text()


def _words(text: str) -> str:
    """The text with every run of spaces and line breaks made one space."""
    return " ".join(text.split())


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


def test_a_gpu_the_installed_engine_cannot_use_gets_the_rebuild_command() -> None:
    """A desktop with an RTX 4090 (the profile) and the llama.cpp really installed
    here (probed through libggml): the advice describes that engine, and says so."""
    hw = _profile("desktop-rtx4090-24gb")
    hw.llama_cpp = probe_llama_cpp()
    text = _words(_text(hw, width=160, engine_here=True))
    assert "engine installed here" in text
    rpc = "yes (GGML_RPC)" if "RPC" in hw.llama_cpp.backends else "no: built without GGML_RPC"
    assert f"RPC {rpc}" in text
    advice = (
        "NVIDIA GeForce RTX 4090: this llama.cpp cannot use it (no CUDA backend). "
        "To use it, rebuild it: EDGEGLM_LLAMA_BACKEND=cuda make engine"
    )
    if {"CUDA", "Vulkan"} & set(hw.llama_cpp.backends) and hw.llama_cpp.gpu_offload:
        assert advice not in text  # an engine built for NVIDIA GPUs needs no advice
    else:
        assert advice in text


def test_a_profiles_engine_is_described_as_that_machines() -> None:
    hw = _profile("desktop-rtx4090-24gb")  # its llama.cpp has CUDA: nothing to advise
    text = _words(_text(hw, width=160))
    assert "engine as profile desktop-rtx4090-24gb records it, not the one here" in text
    assert "RPC no: built without GGML_RPC" in text
    assert "GPU unused" not in text and "make engine" not in text

    hw = _profile("dual-rtx3090-48gb")
    assert hw.llama_cpp is not None
    hw.llama_cpp.backends, hw.llama_cpp.gpu_offload = ["CPU", "RPC"], False
    text = _words(_text(hw, width=160))
    assert (
        "NVIDIA GeForce RTX 3090: the llama.cpp in this profile cannot use them (no CUDA "
        "backend). To use it, on that machine, rebuild it: EDGEGLM_LLAMA_BACKEND=cuda make engine"
    ) in text
    assert "RPC yes (GGML_RPC)" in text


def test_each_gpu_vendor_is_sent_to_its_own_backend() -> None:
    cpu_only = LlamaCppInfo("0.3.36", False, ["CPU"])
    gpus = [
        GPUInfo("amd", "Radeon RX 7900 XTX"),
        GPUInfo("apple", "Apple M2"),
        GPUInfo("intel", "Arc A770"),
    ]
    advice = unusable_gpus(gpus, cpu_only)
    assert {b: [g.name for g in gs] for b, gs in advice.items()} == {
        "hip": ["Radeon RX 7900 XTX"],
        "metal": ["Apple M2"],
        "vulkan": ["Arc A770"],
    }
    vulkan = LlamaCppInfo("0.3.36", True, ["Vulkan", "CPU", "RPC"])
    assert unusable_gpus(gpus, vulkan) == {"metal": [gpus[1]]}
    assert unusable_gpus(gpus, LlamaCppInfo(error="not importable")) == {}  # nothing known


def test_doctor_says_how_the_installed_engine_was_built(
    tmp_path: Path, env: dict[str, str]
) -> None:
    r = edgeglm("doctor", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    text = _words(r.stdout)
    build = installed_build()
    assert build is not None  # `make install` built it (test_engine checks how)
    assert f"built by `make engine`: {build['backend']}, CMAKE_ARGS {build['cmake_args']}" in text
    assert "RPC yes (GGML_RPC)" in text
