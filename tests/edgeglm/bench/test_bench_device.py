"""bench --device for ONNX rows, VRAM (NVML) beside the plan's estimate, and
--hardware. Real onnxruntime, real llama.cpp, the real CLI. This machine has
no usable GPU, so the GPU paths are checked by what must be refused and by
the plan's arithmetic on a hardware profile; scripts/gpu_check.sh runs them
on an NVIDIA machine."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import FIXTURES, HF_FIXTURES, edgeglm

from edgeglm.backends.isolated import run_isolated
from edgeglm.bench.measure import HIDDEN_GPUS, hide_gpus, measure_llamacpp, measure_onnx
from edgeglm.bench.run import BenchRequest, bench_spec, onnx_launch, run_bench
from edgeglm.bench.vram import (
    DEVICE_DELTA_MIN,
    NvmlReading,
    nvml_reading,
    planned_vram,
    vram_measured,
)
from edgeglm.errors import BackendError, ExitCode, HardwareError, UsageError
from edgeglm.gguf_file import read_gguf
from edgeglm.hardware import HardwareProfile, probe
from edgeglm.hardware.profile import load_profile
from edgeglm.planner.launch import LaunchSpec, TensorOverride, cpu_moe_overrides
from edgeglm.planner.onnx_plan import plan_onnx
from edgeglm.planner.planner import make_plan
from edgeglm.planner.sources import open_model

RTX4090 = FIXTURES / "hardware" / "desktop-rtx4090-24gb.json"
MiB = 1 << 20


@pytest.fixture(scope="module")
def here() -> HardwareProfile:
    return probe(bandwidth=False)


@pytest.fixture(scope="module")
def onnx_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgeglm.converters.onnx import convert

    out = tmp_path_factory.mktemp("onnx") / "glm4-int4"
    convert(HF_FIXTURES / "glm4", out, "int4")
    return out


def _no_cuda_provider(here: HardwareProfile) -> None:
    if here.onnxruntime is not None and "CUDAExecutionProvider" in (
        here.onnxruntime.working_providers
    ):
        pytest.skip("ONNX Runtime's CUDA provider works here")


# -- ONNX rows follow --device ---------------------------------------------------


def test_onnx_rows_run_the_provider_asked_for_and_record_the_sessions(
    onnx_folder: Path, tmp_path: Path, env: dict[str, str], here: HardwareProfile
) -> None:
    planned = plan_onnx(onnx_folder, here).provider
    for device, provider in (("cpu", "CPUExecutionProvider"), ("auto", planned)):
        r = edgeglm(
            "bench", str(onnx_folder), "--device", device, "--repeat", "1", "--json",
            cwd=tmp_path, env=env,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        report = json.loads(r.stdout)
        assert report["schema_version"] == 4 and report["settings"]["device"] == device
        (row,) = report["rows"]
        assert row["backend"] == "onnx" and row["provider"] == provider
        assert row["device"] == ("cpu" if provider == "CPUExecutionProvider" else "gpu")
        assert row["vram_bytes"] is None and row["vram_planned_bytes"] is None
        assert row["vram_note"].endswith("planned: the ONNX plan estimates RAM only")


def test_onnx_device_gpu_without_a_working_gpu_provider_is_one_line_exit_2(
    onnx_folder: Path, tmp_path: Path, env: dict[str, str], here: HardwareProfile
) -> None:
    _no_cuda_provider(here)
    r = edgeglm("bench", str(onnx_folder), "--device", "gpu", cwd=tmp_path, env=env)
    assert r.returncode == ExitCode.USAGE, r.stderr
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line, r.stderr
    assert line.startswith("error: --device gpu: ONNX Runtime has no working GPU provider here")
    assert line.endswith("use --device cpu or auto")


def test_onnx_launch_by_device(onnx_folder: Path, here: HardwareProfile) -> None:
    planned = plan_onnx(onnx_folder, here)
    cpu = onnx_launch(onnx_folder, "cpu", here, here)
    assert (cpu.provider, cpu.threads) == ("CPUExecutionProvider", planned.threads)
    assert onnx_launch(onnx_folder, "auto", here, here).provider == planned.provider
    _no_cuda_provider(here)
    # a profile whose CUDA provider works plans CUDA; here it does not initialize
    rtx = load_profile(RTX4090)
    assert plan_onnx(onnx_folder, rtx).provider == "CUDAExecutionProvider"
    with pytest.raises(HardwareError, match="CUDAExecutionProvider, which does not initialize"):
        onnx_launch(onnx_folder, "auto", rtx, here)
    with pytest.raises(UsageError, match="no working GPU provider"):
        onnx_launch(onnx_folder, "gpu", rtx, here)


def test_a_provider_that_falls_back_to_the_cpu_is_an_error_not_a_cpu_row(
    onnx_folder: Path, here: HardwareProfile
) -> None:
    """ONNX Runtime answers a CUDA provider that cannot start by running on the
    CPU; the measurement refuses instead of reporting CPU figures as CUDA's."""
    _no_cuda_provider(here)
    ort = here.onnxruntime
    if ort is None or "CUDAExecutionProvider" not in ort.available_providers:
        pytest.skip("this onnxruntime does not list CUDAExecutionProvider")
    prompt = list(range(10, 50))
    with pytest.raises(BackendError, match="ran CPUExecutionProvider, not CUDAExecutionProvider"):
        run_isolated(
            measure_onnx, str(onnx_folder), prompt, prompt[:16], 1, 1, 4, "CUDAExecutionProvider"
        )


# -- --device cpu hides the GPUs from llama.cpp ---------------------------------------


def test_cpu_rows_hide_the_gpus_before_llama_cpp_loads(moe_gguf: Path, tmp_path: Path) -> None:
    code = (
        "import json, os\n"
        "from edgeglm.bench.measure import HIDDEN_GPUS, hide_gpus\n"
        "hide_gpus()\n"
        "from edgeglm.backends.llamacpp import gpu_count\n"
        "print(json.dumps([{k: os.environ[k] for k in HIDDEN_GPUS}, gpu_count()]))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [HIDDEN_GPUS, 0]
    import llama_cpp  # noqa: F401  (loaded here: too late to hide anything)

    with pytest.raises(BackendError, match="loaded before the GPUs could be hidden"):
        hide_gpus()
    spec = bench_spec(moe_gguf, "cpu", 1)
    prompt = list(range(10, 40))
    m = run_isolated(measure_llamacpp, str(moe_gguf), prompt, prompt[:16], 1, 1, 4, spec, True)
    assert m.launch is not None and m.launch["n_gpu_layers"] == 0 and m.device == "cpu"


# -- VRAM: measured, or said not to be ----------------------------------------------


def test_nvml_here_measures_nothing(here: HardwareProfile) -> None:
    if any(g.vendor == "nvidia" for g in here.gpus):
        pytest.skip("an NVIDIA GPU is here")
    assert nvml_reading(os.getpid()) is None
    assert vram_measured(None, None).process_bytes is None


def test_vram_from_the_readings() -> None:
    """The decision between the process figure, the fallback and nothing."""
    loaded, freed = NvmlReading(1500 * MiB, 9000 * MiB), NvmlReading(400 * MiB, 7900 * MiB)
    v = vram_measured(loaded, freed)
    assert (v.process_bytes, v.model_bytes) == (1500 * MiB, 1100 * MiB)
    assert v.note.startswith("NVML, this process")
    # freed everything, the context too: no longer listed
    assert vram_measured(loaded, NvmlReading(None, 7500 * MiB)).model_bytes == 1500 * MiB
    # a PID namespace: not listed at all, the GPUs' used memory dropped on freeing
    v = vram_measured(NvmlReading(None, 9000 * MiB), NvmlReading(None, 8000 * MiB))
    assert v.process_bytes is None and v.model_bytes == 1000 * MiB
    assert "NVML does not list its pid" in v.note
    # not listed, nothing released: this process held no GPU memory
    quiet = NvmlReading(None, 9000 * MiB)
    small = NvmlReading(None, 9000 * MiB - DEVICE_DELTA_MIN + 1)
    assert vram_measured(quiet, small) == vram_measured(quiet, quiet)
    assert vram_measured(quiet, quiet).process_bytes == 0
    assert vram_measured(loaded, None).model_bytes is None


def _gpu_total(plan_devices: list[dict[str, object]]) -> int:
    return sum(int(str(d["total_bytes"])) for d in plan_devices if d["device"] != "CPU")


def test_planned_vram_is_the_plans_own_estimate(moe_gguf: Path) -> None:
    rtx = load_profile(RTX4090)
    plan = make_plan(open_model(str(moe_gguf)), rtx)
    spec = plan.launch_spec()
    assert spec is not None and spec.n_gpu_layers > 0
    planned, note = planned_vram(moe_gguf, spec, rtx)
    assert planned == _gpu_total(plan.to_dict()["memory"]["devices"]) > 0
    assert note == "planner: weights + KV cache + compute"
    # bench's context is its own: the estimate follows the spec that ran
    short, _ = planned_vram(moe_gguf, spec.with_(n_ctx=256), rtx)
    assert short is not None and short < planned
    assert planned_vram(moe_gguf, bench_spec(moe_gguf, "cpu", None, rtx), rtx)[0] == 0


def test_planned_vram_keeps_overridden_experts_in_ram(moe_gguf: Path) -> None:
    """--cpu-moe's overrides are the planner's "experts of block 1 in RAM": the
    GPU holds block 1's routed experts less, and its compute buffer gains the
    largest of them (prompt batches copy RAM weights to the GPU one by one)."""
    rtx = load_profile(RTX4090)
    spec = bench_spec(moe_gguf, "gpu", None, rtx)
    exps = [
        t.n_bytes for t in read_gguf(moe_gguf).tensors if re.match(r"blk\.1\.ffn_.*_exps", t.name)
    ]
    assert len(exps) == 3
    full, _ = planned_vram(moe_gguf, spec, rtx)
    split, _ = planned_vram(moe_gguf, spec.with_(tensor_overrides=tuple(cpu_moe_overrides())), rtx)
    assert full is not None and split == full - sum(exps) + max(exps)
    # what the planner cannot express has no estimate, and says so
    for odd in (
        (TensorOverride(r"attn_q", "CPU"),),  # not an expert weight
        (TensorOverride(r"ffn_up_exps", "CPU"),),  # a third of a block's experts
        (TensorOverride(r"exps", "CUDA0"),),  # experts sent to a GPU by name
    ):
        value, why = planned_vram(moe_gguf, spec.with_(tensor_overrides=odd), rtx)
        assert value is None and why == "the planner has no estimate for these tensor overrides"


def test_planned_vram_without_a_usable_gpu(moe_gguf: Path, here: HardwareProfile) -> None:
    from edgeglm.backends.llamacpp import gpu_count

    if here.gpus and gpu_count():
        pytest.skip("this machine has a GPU llama.cpp offloads to")
    assert planned_vram(moe_gguf, LaunchSpec(), here) == (0, "nothing planned on a GPU")
    assert planned_vram(moe_gguf, LaunchSpec(n_gpu_layers=4), here) == (
        None,
        "no GPU the planner can use here",
    )


# -- --hardware: the auto rows are planned for a profile, measured here -----------------


def test_hardware_profile_plans_the_rows(
    moe_gguf: Path, tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEGLM_CACHE_DIR", str(tmp_path / "cache-in-process"))
    rtx = load_profile(RTX4090)
    request = BenchRequest(
        models=(str(moe_gguf),),
        repeat=1,
        prompt_tokens=32,
        decode_tokens=4,
        threads=1,
        device="cpu",
        hardware=RTX4090,
    )
    (row,) = run_bench(request).rows
    assert row.launch is not None
    expected = bench_spec(moe_gguf, "cpu", 1, rtx)
    ran = LaunchSpec.from_dict(row.launch)
    sized = ("n_ctx", "n_batch", "n_ubatch")
    assert ran.with_(**{k: getattr(expected, k) for k in sized}) == expected.with_(
        artifact=str(moe_gguf)
    )
    from edgeglm.backends.llamacpp import gpu_count

    if gpu_count():
        return
    # the profile's plan offloads, which this llama.cpp cannot: refused, one line
    r = edgeglm(
        "bench", str(moe_gguf), "--hardware", str(RTX4090), "--repeat", "1",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert r.returncode == ExitCode.USAGE and "llama.cpp has no GPU device here" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    fresh = {**env, "EDGEGLM_CACHE_DIR": str(tmp_path / "fresh")}
    r = edgeglm("bench", "--hardware", str(tmp_path / "none.json"), cwd=tmp_path, env=fresh)
    assert r.returncode == ExitCode.USAGE and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "fresh").exists()  # refused before converting the demo model
