"""The engine builder (edgeglm/hardware/engine.py), run as ``make engine`` runs it.

The choice is checked against real directory layouts: a fake system root in
tmp_path with toolkits (executable nvcc/hipcc/glslc scripts), device nodes
and libraries where a real system has them, given to the module with
``--root`` and a PATH of the test's own. The installed engine is checked
through libggml itself: it must have the RPC backend ``make engine`` says it
builds in, and be the build the module would choose here now.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edgeglm.hardware import engine
from edgeglm.hardware.runtimes import probe_llama_cpp

REPO = Path(__file__).resolve().parents[3]
ENGINE_PY = REPO / "edgeglm" / "hardware" / "engine.py"
# What a user's shell could set that the choice reads: the tests set their own.
_CHOICE_VARS = (
    "EDGEGLM_LLAMA_BACKEND",
    "CMAKE_ARGS",
    "CUDA_HOME",
    "CUDA_PATH",
    "ROCM_PATH",
    "VULKAN_SDK",
    "HIPCXX",
)


def _env(path: list[Path] | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CHOICE_VARS}
    if path is not None:
        env["PATH"] = os.pathsep.join(str(p) for p in path)
    return {**env, **extra}


def _run(
    *args: str, env: dict[str, str], cwd: Path, by: str = "path"
) -> subprocess.CompletedProcess[str]:
    """The module as the Makefile starts it (by file path) or as `python -m` does."""
    start = [str(ENGINE_PY)] if by == "path" else ["-m", "edgeglm.hardware.engine"]
    return subprocess.run(
        [sys.executable, *start, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,  # guards a hang only
    )


def _choice(root: Path, env: dict[str, str]) -> dict[str, Any]:
    r = _run("--dry-run", "--json", "--root", str(root), env=env, cwd=root)
    assert r.returncode == 0, r.stderr
    d: dict[str, Any] = json.loads(r.stdout)
    return d


def _exe(path: Path) -> Path:
    """An executable script where a toolkit keeps its compiler."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\necho fake\n")
    path.chmod(0o755)
    return path


def _file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    return r


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    """The only folder on PATH: empty unless a test puts a compiler there."""
    b = tmp_path / "bin"
    b.mkdir()
    return b


def test_the_pinned_version_is_pyprojects() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    pins = re.findall(r'"llama-cpp-python==([^"]+)"', pyproject)
    assert pins == [engine.LLAMA_CPP_PYTHON_VERSION]


def test_a_cuda_toolkit_without_a_gpu_builds_for_the_cpu_and_says_why(
    root: Path, bin_dir: Path
) -> None:
    _exe(root / "usr/local/cuda/bin/nvcc")
    d = _choice(root, _env([bin_dir]))
    assert d["backend"] == "cpu"
    assert d["reason"] == (
        f"CUDA toolkit found at {root}/usr/local/cuda but no NVIDIA GPU/driver; "
        "EDGEGLM_LLAMA_BACKEND=cuda builds it anyway"
    )
    assert d["full_cmake_args"] == "-DGGML_RPC=ON"


@pytest.mark.parametrize("evidence", ["proc/driver/nvidia/version", "dev/nvidia0"])
def test_a_cuda_toolkit_and_an_nvidia_gpu_build_cuda(
    root: Path, bin_dir: Path, evidence: str
) -> None:
    nvcc = _exe(root / "usr/local/cuda/bin/nvcc")
    _file(root / evidence)
    d = _choice(root, _env([bin_dir]))
    assert d["backend"] == "cuda"
    assert str(root / evidence) in d["reason"]
    # nvcc is not on PATH, where CMake looks: it is told
    assert d["cmake_args"] == ["-DGGML_CUDA=ON", f"-DCMAKE_CUDA_COMPILER={nvcc}", "-DGGML_RPC=ON"]


def test_nvcc_on_path_and_cuda_home_are_toolkits_too(root: Path, bin_dir: Path) -> None:
    _file(root / "dev/nvidia0")
    _exe(bin_dir / "nvcc")
    d = _choice(root, _env([bin_dir]))
    assert d["backend"] == "cuda"
    assert d["cmake_args"] == ["-DGGML_CUDA=ON", "-DGGML_RPC=ON"]  # CMake finds it on PATH

    home = root / "opt" / "cuda-12.8"
    nvcc = _exe(home / "bin" / "nvcc")
    d = _choice(root, _env([root / "empty"], CUDA_HOME=str(home)))
    assert d["backend"] == "cuda"
    assert f"$CUDA_HOME={home}" in d["reason"]
    assert f"-DCMAKE_CUDA_COMPILER={nvcc}" in d["cmake_args"]


def test_a_gpu_without_a_toolkit_says_what_is_missing(root: Path, bin_dir: Path) -> None:
    (root / "usr/local/cuda/bin").mkdir(parents=True)
    _file(root / "usr/local/cuda/bin/nvcc")  # not executable: not a compiler
    _file(root / "proc/driver/nvidia/version")
    d = _choice(root, _env([bin_dir]))
    assert d["backend"] == "cpu"
    assert d["reason"].startswith(f"NVIDIA GPU found ({root}/proc/driver/nvidia/version) but no")
    assert "CUDA toolkit" in d["reason"] and "make engine" in d["reason"]


def test_rocm_and_an_amd_gpu_build_hip(root: Path, bin_dir: Path) -> None:
    _exe(root / "opt/rocm/bin/hipcc")
    clang = _exe(root / "opt/rocm/llvm/bin/clang")
    d = _choice(root, _env([bin_dir]))
    assert d["backend"] == "cpu"
    assert f"ROCm found at {root}/opt/rocm but no AMD GPU" in d["reason"]

    _file(root / "dev/kfd")
    d = _choice(root, _env([bin_dir]))
    assert d["backend"] == "hip"
    assert d["cmake_args"] == ["-DGGML_HIP=ON", f"-DCMAKE_HIP_COMPILER={clang}", "-DGGML_RPC=ON"]


def _vulkan_sdk(root: Path, bin_dir: Path, icd: str) -> None:
    _exe(bin_dir / "glslc")
    _file(root / "usr/include/vulkan/vulkan.h")
    _file(root / "usr/lib/x86_64-linux-gnu/libvulkan.so.1")
    _file(root / "usr/share/vulkan/icd.d" / icd)


def test_the_vulkan_sdk_a_loader_and_a_gpu_driver_build_vulkan(root: Path, bin_dir: Path) -> None:
    _vulkan_sdk(root, bin_dir, "intel_icd.x86_64.json")
    d = _choice(root, _env([bin_dir]))
    assert d["backend"] == "vulkan"
    assert d["cmake_args"] == ["-DGGML_VULKAN=ON", "-DGGML_RPC=ON"]


def test_vulkan_on_a_software_driver_only_stays_on_the_cpu(root: Path, bin_dir: Path) -> None:
    _vulkan_sdk(root, bin_dir, "lvp_icd.x86_64.json")  # lavapipe runs on the CPU
    d = _choice(root, _env([bin_dir]))
    assert d["backend"] == "cpu"
    assert d["reason"] == "Vulkan only in part: a Vulkan GPU driver not found"


def test_cuda_comes_before_vulkan(root: Path, bin_dir: Path) -> None:
    _vulkan_sdk(root, bin_dir, "nvidia_icd.json")
    _exe(bin_dir / "nvcc")
    _file(root / "dev/nvidia0")
    assert _choice(root, _env([bin_dir]))["backend"] == "cuda"


def test_nothing_found_builds_for_the_cpu(root: Path, bin_dir: Path) -> None:
    d = _choice(root, _env([bin_dir]))
    assert d["backend"] == "cpu"
    assert d["reason"] == "no GPU with a toolkit to build for was found"
    assert d["cmake_args"] == ["-DGGML_RPC=ON"]


@pytest.mark.parametrize(
    ("value", "flag"),
    [
        ("cpu", None),
        ("cuda", "GGML_CUDA"),
        ("metal", "GGML_METAL"),
        ("hip", "GGML_HIP"),
        ("vulkan", "GGML_VULKAN"),
        ("CUDA", "GGML_CUDA"),
    ],
)
def test_the_backend_override(root: Path, bin_dir: Path, value: str, flag: str | None) -> None:
    d = _choice(root, _env([bin_dir], EDGEGLM_LLAMA_BACKEND=value))
    assert d["backend"] == value.lower()
    assert d["reason"] == f"EDGEGLM_LLAMA_BACKEND={value.lower()}"
    flags = [a for a in d["cmake_args"] if a.startswith("-DGGML_")]
    assert flags == ([f"-D{flag}=ON"] if flag else []) + ["-DGGML_RPC=ON"]


def test_forcing_cuda_without_toolkit_or_gpu_says_what_will_go_wrong(
    root: Path, bin_dir: Path
) -> None:
    d = _choice(root, _env([bin_dir], EDGEGLM_LLAMA_BACKEND="cuda"))
    notes = " ".join(d["notes"])
    assert "no CUDA toolkit" in notes and "the build will fail" in notes
    assert "-DCMAKE_CUDA_ARCHITECTURES" in notes


@pytest.mark.parametrize("by", ["path", "module"])
def test_a_bad_backend_is_one_line_and_exit_2(tmp_path: Path, by: str) -> None:
    r = _run("--dry-run", env=_env(EDGEGLM_LLAMA_BACKEND="rocm"), cwd=tmp_path, by=by)
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "EDGEGLM_LLAMA_BACKEND='rocm' is not one of auto, cpu, cuda, metal, hip, vulkan" in (
        r.stderr
    )


def test_unsplittable_cmake_args_are_one_line_and_exit_2(tmp_path: Path) -> None:
    r = _run("--dry-run", env=_env(CMAKE_ARGS='-DFOO="bar'), cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "CMAKE_ARGS" in r.stderr and "Traceback" not in r.stderr


def test_the_users_cmake_args_come_last_and_are_announced(root: Path, bin_dir: Path) -> None:
    user = "-DGGML_BLAS=ON -DGGML_BLAS_VENDOR=OpenBLAS"
    env = _env([bin_dir], CMAKE_ARGS=user)
    d = _choice(root, env)
    assert d["full_cmake_args"] == f"-DGGML_RPC=ON {user}"
    assert d["key_parts"]["cmake_args"] == d["full_cmake_args"]
    printed = _run("--dry-run", "--root", str(root), env=env, cwd=root)
    assert printed.returncode == 0, printed.stderr
    assert f"your CMAKE_ARGS, added last so they win: {user}" in printed.stdout
    assert f"CMAKE_ARGS: -DGGML_RPC=ON {user}" in printed.stdout


def test_the_cache_key_follows_backend_and_cmake_args(root: Path, bin_dir: Path) -> None:
    plain = _choice(root, _env([bin_dir]))
    assert _choice(root, _env([bin_dir]))["key"] == plain["key"]  # the same inputs, the same key
    keys = {
        plain["key"],
        _choice(root, _env([bin_dir], EDGEGLM_LLAMA_BACKEND="vulkan"))["key"],
        _choice(root, _env([bin_dir], CMAKE_ARGS="-DGGML_NATIVE=OFF"))["key"],
        _choice(root, _env([bin_dir], CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON"))["key"],
    }
    assert len(keys) == 4
    parts = plain["key_parts"]
    assert set(parts) == {"llama_cpp_python", "backend", "cmake_args", "python", "platform", "cpu"}
    assert plain["key"].startswith(f"{engine.LLAMA_CPP_PYTHON_VERSION}-cpu-{parts['python']}-")
    assert plain["cache_entry"] == str(engine.cache_root() / plain["key"])


def _nvidia_gpu_here() -> bool:
    """Independent of the module: the driver's files, or NVML through nvidia-ml-py."""
    if Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/version").exists():
        return True
    pynvml: Any = importlib.import_module("pynvml")  # nvidia-ml-py: untyped
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    try:
        return int(pynvml.nvmlDeviceGetCount()) > 0
    finally:
        pynvml.nvmlShutdown()


def test_this_machine_never_builds_cuda_without_a_gpu(tmp_path: Path) -> None:
    d = _choice(Path("/"), _env())
    assert "-DGGML_RPC=ON" in d["cmake_args"]
    if _nvidia_gpu_here():
        pytest.skip("this machine has an NVIDIA GPU")
    assert d["backend"] != "cuda"
    if shutil.which("nvcc") or Path("/usr/local/cuda/bin/nvcc").exists():
        assert "CUDA toolkit found at" in d["reason"]
        assert (
            "but no NVIDIA GPU/driver; EDGEGLM_LLAMA_BACKEND=cuda builds it anyway" in (d["reason"])
        )


def test_the_installed_engine_has_the_rpc_backend_make_engine_builds_in() -> None:
    info = probe_llama_cpp()  # libggml's own backend registry
    assert info.error is None, info.error
    assert "RPC" in info.backends, info.backends
    build = engine.installed_build()
    assert build is not None, "llama-cpp-python was not installed by `make engine`"
    assert "-DGGML_RPC=ON" in build["cmake_args"].split()
    assert build["llama_cpp_python"] == info.version == engine.LLAMA_CPP_PYTHON_VERSION
    if build["backend"] == "cpu":
        assert info.gpu_offload is False
        assert not {"CUDA", "ROCm", "Metal", "Vulkan"} & set(info.backends)


def test_make_engine_twice_does_nothing_the_second_time(tmp_path: Path) -> None:
    """The installed engine is the build the module chooses here: --check says so,
    and a real run (as `make install` does it) returns without building."""
    build = engine.installed_build()
    assert build is not None
    env = _env(EDGEGLM_LLAMA_BACKEND=build["backend"])
    d = _choice(Path("/"), env)
    if d["full_cmake_args"] != build["cmake_args"]:
        pytest.skip(f"the installed engine was built with CMAKE_ARGS {build['cmake_args']}")
    check = _run("--check", env=env, cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "the installed engine is this build" in check.stdout
    again = _run(env=env, cwd=tmp_path)  # the check passed: this cannot start a build
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stdout
    assert "building" not in again.stdout


def test_check_reports_a_different_build_without_building(tmp_path: Path) -> None:
    env = _env(CMAKE_ARGS="-DGGML_NATIVE=OFF -DEDGEGLM_TEST_ONLY=1")
    r = _run("--check", env=env, cwd=tmp_path)
    assert r.returncode == 1
    assert "the installed engine differs" in r.stdout
    assert "building" not in r.stdout


# /proc/cpuinfo flags of a Sapphire Rapids Xeon (Xeon Platinum 8480+), trimmed
# to what the ISA options read.
_SPR_FLAGS = (
    "fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c bmi1 avx2 bmi2 avx512f avx512dq avx512cd "
    "avx512bw avx512vl avx_vnni avx512_bf16 avx512vbmi avx512_vnni amx_bf16 avx512_fp16 "
    "amx_tile amx_int8"
)


def _cpuinfo(root: Path, flags: str) -> None:
    _file(root / "proc" / "cpuinfo").write_text(
        f"processor\t: 0\nmodel name\t: test CPU\nflags\t\t: {flags}\n"
    )


def test_an_amx_cpu_gets_its_own_isa_without_amx_kernels(root: Path, bin_dir: Path) -> None:
    """The AMX crash fix: GGML_NATIVE off, every ISA option this CPU has on,
    AMX off; the repacked AVX-512 path stays (see engine._cpu_args)."""
    _cpuinfo(root, _SPR_FLAGS)
    d = _choice(root, _env([bin_dir]))
    args = d["cmake_args"]
    assert args[:2] == ["-DGGML_RPC=ON", "-DGGML_NATIVE=OFF"]
    on = {a[2:-3] for a in args if a.endswith("=ON")}
    assert on == {
        "GGML_RPC", "GGML_SSE42", "GGML_AVX", "GGML_AVX_VNNI", "GGML_AVX2", "GGML_BMI2",
        "GGML_FMA", "GGML_F16C", "GGML_AVX512", "GGML_AVX512_VBMI", "GGML_AVX512_VNNI",
        "GGML_AVX512_BF16",
    }  # fmt: skip
    for amx in ("TILE", "INT8", "BF16"):
        assert f"-DGGML_AMX_{amx}=OFF" in args
    assert "-DCMAKE_C_FLAGS=-mtune=native" in args
    assert any("without ggml's AMX kernels" in n for n in d["notes"])


def test_avx512_needs_all_five_of_its_extensions(root: Path, bin_dir: Path) -> None:
    _cpuinfo(root, _SPR_FLAGS.replace("avx512dq ", ""))
    args = _choice(root, _env([bin_dir]))["cmake_args"]
    assert "-DGGML_AVX512=OFF" in args and "-DGGML_AVX512_VNNI=ON" in args


def test_a_cpu_without_amx_keeps_llama_cpps_native_build(root: Path, bin_dir: Path) -> None:
    _cpuinfo(root, " ".join(f for f in _SPR_FLAGS.split() if not f.startswith("amx")))
    d = _choice(root, _env([bin_dir]))
    assert d["cmake_args"] == ["-DGGML_RPC=ON"] and not d["notes"]


def test_gpu_builds_on_an_amx_cpu_leave_amx_out_too(root: Path, bin_dir: Path) -> None:
    _cpuinfo(root, _SPR_FLAGS)
    args = _choice(root, _env([bin_dir], EDGEGLM_LLAMA_BACKEND="cuda"))["cmake_args"]
    assert "-DGGML_CUDA=ON" in args and "-DGGML_AMX_INT8=OFF" in args


def test_the_engine_here_has_amx_kernels_only_where_the_cpu_lacks_amx() -> None:
    """What `make install` built on this machine: never ggml's AMX kernels on a
    CPU that would run them."""
    from edgeglm.backends.llamacpp import engine_has_amx_kernels

    cpu_has_amx = "amx" in Path("/proc/cpuinfo").read_text(errors="replace")
    assert not (cpu_has_amx and engine_has_amx_kernels())
