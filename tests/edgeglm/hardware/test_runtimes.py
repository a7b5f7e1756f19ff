"""What the installed runtimes really initialize on this machine."""

from __future__ import annotations

from edgeglm.hardware import gpus, runtimes


def test_onnxruntime_probe_initializes_cpu_and_reports_cuda_truthfully() -> None:
    info = runtimes.probe_onnxruntime()
    assert info.version
    assert "CPUExecutionProvider" in info.working_providers
    if "CUDAExecutionProvider" in info.available_providers and not gpus.probe_nvidia():
        # onnxruntime-gpu lists CUDA; without a GPU and its libraries it must not "work"
        assert "CUDAExecutionProvider" not in info.working_providers
        assert info.errors["CUDAExecutionProvider"]
    assert set(info.working_providers) <= set(info.available_providers)


def test_provider_probe_is_quiet(capfd: object) -> None:
    runtimes.probe_onnxruntime()
    out, err = capfd.readouterr()  # type: ignore[attr-defined]
    assert out == "" and err == ""


def test_llama_cpp_devices_come_from_ggml() -> None:
    info = runtimes.probe_llama_cpp()
    assert info.error is None and info.version
    assert "CPU" in info.backends
    cpu = [d for d in info.devices if d.type == "cpu"]
    assert cpu and cpu[0].memory_total_bytes
    assert isinstance(info.gpu_offload, bool)
    if not info.gpu_offload:
        assert all(d.type == "cpu" for d in info.devices)


def test_ort_failure_reasons_are_one_line() -> None:
    text = (
        "[E:onnxruntime:Default, provider_bridge_ort.cc:2043] Failed to load library "
        "libonnxruntime_providers_cuda.so with error: libcublasLt.so.13: cannot open shared "
        "object file: No such file or directory\n"
    )
    assert runtimes._reason(text, "x") == (
        "libcublasLt.so.13: cannot open shared object file: No such file or directory"
    )
    assert runtimes._reason("", "fell back") == "fell back"
