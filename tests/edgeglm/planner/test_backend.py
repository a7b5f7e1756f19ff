"""Backend choice: llama.cpp by default; ONNX Runtime only with an export and a better device."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

from helpers import HF_FIXTURES

from edgeglm.converters.gguf.convert import convert as to_gguf
from edgeglm.converters.onnx import convert
from edgeglm.hardware import HardwareProfile, OnnxRuntimeInfo
from edgeglm.planner.onnx_plan import BACKEND_PROVIDERS
from edgeglm.planner.planner import make_plan
from edgeglm.planner.sources import open_model

Profile = Callable[[str], HardwareProfile]


def _checkpoint(tmp_path: Path, with_onnx: bool) -> Path:
    """The glm4 fixture, with EdgeGLM's own ONNX export (genai layout) in onnx/."""
    root = tmp_path / "glm4"
    shutil.copytree(HF_FIXTURES / "glm4", root)
    if with_onnx:
        convert(root, root / "onnx", "int4")
    return root


def _cpu_only_llamacpp(hw: HardwareProfile) -> HardwareProfile:
    """A CUDA machine whose llama.cpp was built for CPU only."""
    assert hw.llama_cpp is not None
    hw.llama_cpp.gpu_offload = False
    return hw


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
    hw = _cpu_only_llamacpp(profile("laptop-rtx4060-8gb"))
    plan = make_plan(open_model(str(root)), hw)
    assert plan.backend == "onnxruntime"
    assert str(root / "onnx") in (plan.reason("backend") or "")
    spec = plan.launch_spec()  # the runtime is named as backends name it
    assert spec is not None and spec.backend == "onnx"
    assert "CUDAExecutionProvider" in (plan.reason("backend") or "")
    assert any("no GPU device for it" in w for w in plan.warnings)
    # with a CUDA-capable llama.cpp, llama.cpp keeps the job
    assert make_plan(open_model(str(root)), profile("laptop-rtx4060-8gb")).backend == "llama.cpp"
    # and a listed-but-broken CUDA provider is no reason to switch
    hw.onnxruntime = dataclasses.replace(
        hw.onnxruntime or OnnxRuntimeInfo(), working_providers=["CPUExecutionProvider"]
    )
    plan = make_plan(open_model(str(root)), hw)
    assert plan.backend == "llama.cpp"
    assert "listed but unusable" in (plan.reason("backend") or "")


def test_a_layout_the_onnx_backend_cannot_open_is_never_chosen(
    tmp_path: Path, profile: Profile
) -> None:
    """optimum's export (onnx/model.onnx, no genai_config.json) is reported, not picked."""
    root = _checkpoint(tmp_path, with_onnx=False)
    (root / "onnx").mkdir()
    (root / "onnx" / "model.onnx").write_bytes(b"")
    plan = make_plan(open_model(str(root)), _cpu_only_llamacpp(profile("laptop-rtx4060-8gb")))
    assert plan.backend == "llama.cpp"
    why = plan.reason("backend") or ""
    assert "model.onnx is not in the layout" in why and "--format onnx" in why


def test_an_accelerator_the_onnx_backend_does_not_run_is_no_reason_to_switch(
    tmp_path: Path, profile: Profile
) -> None:
    root = _checkpoint(tmp_path, with_onnx=True)
    hw = _cpu_only_llamacpp(profile("laptop-rtx4060-8gb"))
    hw.onnxruntime = dataclasses.replace(
        hw.onnxruntime or OnnxRuntimeInfo(),
        working_providers=["DmlExecutionProvider", "CPUExecutionProvider"],
    )
    assert make_plan(open_model(str(root)), hw).backend == "llama.cpp"


def test_a_gguf_runs_in_llamacpp_even_beside_an_onnx_export(
    tmp_path: Path, profile: Profile
) -> None:
    root = _checkpoint(tmp_path, with_onnx=True)
    gguf = root / "onnx" / "glm4-Q8_0.gguf"
    to_gguf(root, gguf, "Q8_0")
    plan = make_plan(open_model(str(gguf)), _cpu_only_llamacpp(profile("laptop-rtx4060-8gb")))
    assert plan.backend == "llama.cpp"


def test_the_planner_names_only_providers_the_onnx_backend_runs() -> None:
    from edgeglm.backends.onnx import PREFERRED_PROVIDERS

    assert BACKEND_PROVIDERS == PREFERRED_PROVIDERS
