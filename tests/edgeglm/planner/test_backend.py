"""Backend choice: llama.cpp by default; ONNX Runtime only with an export and a better device."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

from helpers import HF_FIXTURES

from edgeglm.hardware import HardwareProfile, OnnxRuntimeInfo
from edgeglm.planner.planner import make_plan
from edgeglm.planner.sources import open_model

Profile = Callable[[str], HardwareProfile]


def _checkpoint(tmp_path: Path, with_onnx: bool) -> Path:
    root = tmp_path / "glm4"
    shutil.copytree(HF_FIXTURES / "glm4", root)
    if with_onnx:
        (root / "onnx").mkdir()
        (root / "onnx" / "model.onnx").write_bytes(b"")
    return root


def test_hf_folder_plan_names_the_quant_and_the_convert_command(
    tmp_path: Path, profile: Profile
) -> None:
    root = _checkpoint(tmp_path, with_onnx=False)
    plan = make_plan(open_model(str(root)), profile("laptop-rtx4060-8gb"))
    assert plan.fits and plan.convert and plan.quant == "Q8_0"
    assert f"edgeglm convert {root}" in (plan.reason("quant") or "")
    assert plan.backend == "llama.cpp"
    assert "no ONNX export" in (plan.reason("backend") or "")


def test_onnx_runtime_wins_only_with_an_export_and_an_accelerator(
    tmp_path: Path, profile: Profile
) -> None:
    root = _checkpoint(tmp_path, with_onnx=True)
    # a CUDA machine whose llama.cpp was built for CPU only
    hw = profile("laptop-rtx4060-8gb")
    assert hw.llama_cpp is not None
    hw.llama_cpp.gpu_offload = False
    plan = make_plan(open_model(str(root)), hw)
    assert plan.backend == "onnxruntime"
    assert "CUDAExecutionProvider" in (plan.reason("backend") or "")
    assert any("no GPU backend" in w for w in plan.warnings)
    # with a CUDA-capable llama.cpp, llama.cpp keeps the job
    assert make_plan(open_model(str(root)), profile("laptop-rtx4060-8gb")).backend == "llama.cpp"
    # and a listed-but-broken CUDA provider is no reason to switch
    hw.onnxruntime = dataclasses.replace(
        hw.onnxruntime or OnnxRuntimeInfo(), working_providers=["CPUExecutionProvider"]
    )
    plan = make_plan(open_model(str(root)), hw)
    assert plan.backend == "llama.cpp"
    assert "listed but unusable" in (plan.reason("backend") or "")
