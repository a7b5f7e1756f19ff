"""The plan is what runs: ``backend="auto"`` follows the planner's backend, and a
plan that does not fit refuses (exit 7) instead of loading unplanned settings.

Real onnxruntime, real llama.cpp, the real CLI in a subprocess. The plans are
made for committed hardware profiles (tests/fixtures/hardware/), changed only
where the test says why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import FIXTURES, HF_FIXTURES
from helpers import edgeglm as run_edgeglm

from edgeglm.artifacts import DEFAULT_QUANT
from edgeglm.backends.base import SamplingParams
from edgeglm.backends.llamacpp import LlamaCppModel
from edgeglm.backends.onnx import OnnxModel, usable_providers
from edgeglm.converters.gguf.convert import convert as to_gguf
from edgeglm.converters.gguf.quant_types import quant_name
from edgeglm.converters.onnx import convert as to_onnx
from edgeglm.errors import ExitCode, HardwareError, UsageError
from edgeglm.gguf_file import read_gguf
from edgeglm.hardware import HardwareProfile, load_profile, probe
from edgeglm.planner.launch import LaunchControls
from edgeglm.planner.onnx_plan import plan_onnx
from edgeglm.planner.planner import make_plan
from edgeglm.planner.sources import open_model
from edgeglm.runtime import checkpoint_quant, dry_run_spec, generate_text, open_backend

PROFILES = FIXTURES / "hardware"
MiB = 1 << 20


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEGLM_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gguf") / "glm4-Q8_0.gguf"
    return to_gguf(HF_FIXTURES / "glm4", out, "Q8_0").output


def _cuda_laptop_with_cpu_llamacpp() -> HardwareProfile:
    """An RTX 4060 laptop whose llama-cpp-python was built for CPU only, next to a
    working CUDAExecutionProvider: the one case where the planner picks ONNX Runtime."""
    hw = load_profile(PROFILES / "laptop-rtx4060-8gb.json")
    assert hw.llama_cpp is not None
    hw.llama_cpp.gpu_offload = False
    return hw


def _tiny_pi(tmp_path: Path) -> Path:
    """The Raspberry Pi 5 profile with 1 MiB of RAM free: nothing fits."""
    data = json.loads((PROFILES / "raspberry-pi5-8gb.json").read_text())
    data["memory"]["available_bytes"] = MiB
    data["name"] = "raspberry-pi5-no-free-ram"
    out = tmp_path / "tiny.json"
    out.write_text(json.dumps(data))
    return out


def _one_token(model: LlamaCppModel | OnnxModel) -> str:
    gen = generate_text(model, "def", SamplingParams(max_tokens=2))
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return str(stop.value.finish_reason)


def edgeglm(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EDGEGLM_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "200"}
    return run_edgeglm(*args, cwd=tmp_path, env=env)


# -- auto follows a plan that picks ONNX Runtime ------------------------------------


def test_auto_opens_the_onnx_export_the_plan_chose(tmp_path: Path) -> None:
    root = tmp_path / "glm4"
    shutil.copytree(HF_FIXTURES / "glm4", root)
    to_onnx(root, root / "onnx", "int4")  # the genai layout, beside the checkpoint
    hw = _cuda_laptop_with_cpu_llamacpp()
    assert make_plan(open_model(str(root)), hw).backend == "onnxruntime"
    planned = plan_onnx(root / "onnx", hw)
    assert planned.provider == "CUDAExecutionProvider"
    if planned.provider in usable_providers():  # a machine with CUDA: the plan runs
        m = open_backend(str(root), hardware=hw)
        try:
            assert isinstance(m, OnnxModel)
            assert m.folder == root / "onnx"
            assert m.capabilities.device == planned.provider
            assert m.context_length == planned.n_ctx
            assert m.session.get_session_options().intra_op_num_threads == planned.threads
            _one_token(m)
        finally:
            m.close()
    else:  # here CUDA does not initialize: auto still follows the plan, and refuses
        with pytest.raises(HardwareError) as e:
            open_backend(str(root), hardware=hw)
        msg = str(e.value)
        assert e.value.exit_code == ExitCode.HARDWARE and "\n" not in msg
        assert str(root / "onnx") in msg and "CUDAExecutionProvider" in msg
        assert "--no-plan" in msg
        # refused before anything was converted for llama.cpp
        assert not list((tmp_path / "cache").rglob("*.gguf"))
    # llama.cpp when asked for, and with --no-plan
    for kw in ({"backend": "llama.cpp"}, {"use_plan": False}):
        m2 = open_backend(str(root), hardware=hw, n_ctx=128, **kw)
        try:
            assert isinstance(m2, LlamaCppModel)
            _one_token(m2)
        finally:
            m2.close()


def test_run_dry_run_prints_the_onnx_spec_the_plan_chose(tmp_path: Path) -> None:
    root = tmp_path / "glm4"
    shutil.copytree(HF_FIXTURES / "glm4", root)
    to_onnx(root, root / "onnx", "int4")
    profile = tmp_path / "cuda-laptop-cpu-llamacpp.json"
    data = json.loads((PROFILES / "laptop-rtx4060-8gb.json").read_text())
    data["llama_cpp"]["gpu_offload"] = False  # llama-cpp-python built for CPU only
    profile.write_text(json.dumps(data))
    r = edgeglm("run", str(root), "--dry-run", "--hardware", str(profile), "--json",
                tmp_path=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    spec = json.loads(r.stdout)
    planned = plan_onnx(root / "onnx", load_profile(profile))
    assert spec["backend"] == "onnx" and spec["artifact"] == str(root / "onnx")
    assert spec["n_threads"] == planned.threads and spec["n_ctx"] == planned.n_ctx
    r = edgeglm("run", str(root), "--dry-run", "--hardware", str(profile), tmp_path=tmp_path)
    assert r.returncode == 0 and "llama.cpp flags" not in r.stdout
    r = edgeglm("run", str(root), "--dry-run", "--hardware", str(profile), "--cpu-moe",
                tmp_path=tmp_path)  # fmt: skip
    assert r.returncode == ExitCode.USAGE and "--cpu-moe applies to llama.cpp" in r.stderr


def test_llamacpp_flags_are_refused_where_the_plan_runs_onnx(tmp_path: Path) -> None:
    root = tmp_path / "glm4"
    shutil.copytree(HF_FIXTURES / "glm4", root)
    to_onnx(root, root / "onnx", "int4")
    with pytest.raises(UsageError, match=r"--cpu-moe applies to llama\.cpp"):
        open_backend(
            str(root),
            hardware=_cuda_laptop_with_cpu_llamacpp(),
            controls=LaunchControls(cpu_moe=True),
        )


def test_an_optimum_export_beside_a_checkpoint_runs_in_llamacpp(tmp_path: Path) -> None:
    """optimum's layout is never chosen, so auto never tries to open it."""
    root = tmp_path / "glm4"
    shutil.copytree(HF_FIXTURES / "glm4", root)
    (root / "onnx").mkdir()
    (root / "onnx" / "model.onnx").write_bytes(b"")
    m = open_backend(str(root), hardware=_cuda_laptop_with_cpu_llamacpp(), n_ctx=128)
    try:
        assert isinstance(m, LlamaCppModel)
    finally:
        m.close()


# -- a plan that does not fit refuses ------------------------------------------------


def test_a_gguf_whose_plan_does_not_fit_is_refused_and_no_plan_loads_it(
    gguf: Path, tmp_path: Path
) -> None:
    tiny = load_profile(_tiny_pi(tmp_path))
    plan = make_plan(open_model(str(gguf)), tiny)
    assert not plan.fits
    with pytest.raises(HardwareError) as e:
        open_backend(str(gguf), hardware=tiny)
    msg = str(e.value)
    assert e.value.exit_code == ExitCode.HARDWARE and "\n" not in msg
    assert msg.startswith(f"{gguf}: the plan does not fit this machine: ")
    assert " ".join((plan.reason("fit") or "").split()) in msg
    assert msg.endswith("--no-plan loads it with llama.cpp's defaults anyway")
    m = open_backend(str(gguf), hardware=tiny, use_plan=False)
    try:
        assert isinstance(m, LlamaCppModel)
        _one_token(m)
    finally:
        m.close()


def test_an_hf_checkpoint_whose_plan_does_not_fit_is_refused_before_converting(
    tmp_path: Path,
) -> None:
    tiny = load_profile(_tiny_pi(tmp_path))
    with pytest.raises(HardwareError, match="the plan does not fit this machine"):
        open_backend(str(HF_FIXTURES / "glm4"), hardware=tiny)
    assert not list((tmp_path / "cache").rglob("*.gguf"))


def test_the_cli_refuses_in_one_line_with_exit_7_and_no_plan_goes_on(
    gguf: Path, tmp_path: Path
) -> None:
    tiny = _tiny_pi(tmp_path)
    r = edgeglm("run", str(gguf), "--dry-run", "--hardware", str(tiny), tmp_path=tmp_path)
    assert r.returncode == ExitCode.HARDWARE, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert "the plan does not fit this machine" in lines[0] and "--no-plan" in lines[0]
    assert r.stdout == ""
    r = edgeglm(
        "run", str(gguf), "--dry-run", "--no-plan", "--hardware", str(tiny), "--json",
        tmp_path=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["artifact"] == str(gguf)


def test_run_and_score_keep_no_plan(gguf: Path, tmp_path: Path) -> None:
    r = edgeglm("run", str(gguf), "--no-plan", "-p", "hi", "-n", "2", "--json", tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["backend"] == "llama.cpp"
    text = tmp_path / "t.txt"
    text.write_text("def f(x):\n    return x\n", encoding="utf-8")
    out = tmp_path / "s.npz"
    r = edgeglm(
        "score", str(gguf), "--text", str(text), "-o", str(out), "--no-plan", tmp_path=tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert out.is_file()


# -- an ONNX folder runs its own plan --------------------------------------------------


def test_an_onnx_folder_opens_with_its_plan_or_refuses(tmp_path: Path) -> None:
    folder = to_onnx(HF_FIXTURES / "glm4", tmp_path / "onnx", "int4").output
    here = probe(bandwidth=False)
    planned = plan_onnx(folder, here, 256)
    m = open_backend(str(folder), n_ctx=256)
    try:
        assert isinstance(m, OnnxModel)
        assert m.capabilities.device == planned.provider
        assert m.context_length == planned.n_ctx == 256
        assert m.session.get_session_options().intra_op_num_threads == planned.threads
    finally:
        m.close()
    tiny = load_profile(_tiny_pi(tmp_path))
    with pytest.raises(HardwareError) as e:
        open_backend(str(folder), hardware=tiny)
    msg = str(e.value)
    assert msg.startswith(f"{folder}: the plan does not fit this machine: ONNX Runtime needs ")
    assert msg.endswith("--no-plan opens it anyway with ONNX Runtime's defaults")
    m = open_backend(str(folder), hardware=tiny, use_plan=False)
    try:
        assert isinstance(m, OnnxModel)
        _one_token(m)
    finally:
        m.close()


# -- a checkpoint runs at the plan's quant ------------------------------------------


def test_a_checkpoint_is_converted_at_the_quant_the_plan_chose(tmp_path: Path) -> None:
    here = probe(bandwidth=False)
    plan = make_plan(open_model(str(HF_FIXTURES / "glm4")), here)
    # The tiny fixture fits anywhere at the top of the ladder, which is not
    # llama.cpp's default: a conversion at the default would show here.
    assert plan.backend == "llama.cpp" and plan.quant not in (None, DEFAULT_QUANT)
    assert dry_run_spec(str(HF_FIXTURES / "glm4"), hardware=here).quant == plan.quant
    m = open_backend(str(HF_FIXTURES / "glm4"), hardware=here, n_ctx=128)
    try:
        assert isinstance(m, LlamaCppModel)
        assert m.path.name == f"{plan.quant}.gguf"
        assert quant_name(read_gguf(m.path).get("general.file_type")) == plan.quant
    finally:
        m.close()
    spec = dry_run_spec(str(HF_FIXTURES / "glm4"), hardware=here)
    assert spec.artifact == str(m.path)  # found again, not made again


def test_quant_overrides_the_plan_and_applies_to_checkpoints_only(
    gguf: Path, tmp_path: Path
) -> None:
    m = open_backend(str(HF_FIXTURES / "glm4"), quant="q4_k_m", n_ctx=128)
    try:
        assert isinstance(m, LlamaCppModel) and m.path.name == "Q4_K_M.gguf"
    finally:
        m.close()
    r = edgeglm("run", str(HF_FIXTURES / "glm4"), "--dry-run", "--json", "-q", "Q5_K_M",
                tmp_path=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["quant"] == "Q5_K_M"
    for args in (("-q", "Q4_K_M", "--dry-run"), ("-q", "Q4_K_M", "-p", "hi")):
        r = edgeglm("run", str(gguf), *args, tmp_path=tmp_path)
        assert r.returncode == ExitCode.USAGE, r.stderr
        why = "--quant applies to checkpoints; this gguf has its own"
        assert r.stderr.strip() == f"error: {gguf}: {why}"
    r = edgeglm("run", str(HF_FIXTURES / "glm4"), "-q", "Q9_X", "--dry-run", tmp_path=tmp_path)
    assert r.returncode == ExitCode.USAGE and "Q9_X" in r.stderr, r.stderr


def test_a_planned_quant_that_needs_an_imatrix_is_refused_with_the_commands_that_make_it(
    tmp_path: Path,
) -> None:
    ckpt = HF_FIXTURES / "glm4"
    plan = make_plan(open_model(str(ckpt)), probe(bandwidth=False), quant="IQ2_M")
    with pytest.raises(UsageError) as e:
        checkpoint_quant(ckpt, plan, None)
    assert "needs an importance matrix" in str(e.value)
    assert f"edgeglm convert {ckpt} -q IQ2_M --calibrate TEXT_FILE" in str(e.value)
    assert checkpoint_quant(ckpt, plan, "Q2_K") == "Q2_K"  # asked for: no refusal
    assert checkpoint_quant(ckpt, None, None) == DEFAULT_QUANT  # --no-plan


# -- --backend is honoured or refused ------------------------------------------------


def test_backend_runs_what_it_can_and_refuses_what_it_cannot(gguf: Path, tmp_path: Path) -> None:
    root = tmp_path / "glm4"
    shutil.copytree(HF_FIXTURES / "glm4", root)
    with pytest.raises(UsageError, match=r"--backend onnx needs an ONNX export beside"):
        open_backend(str(root), backend="onnx")
    folder = to_onnx(root, root / "onnx", "int4").output
    m = open_backend(str(root), backend="onnx", n_ctx=128)  # the export beside it
    try:
        assert isinstance(m, OnnxModel) and m.folder == folder
    finally:
        m.close()
    with pytest.raises(UsageError, match="an ONNX folder runs in ONNX Runtime"):
        open_backend(str(folder), backend="llama.cpp")
    with pytest.raises(UsageError, match=r"a GGUF runs in llama\.cpp"):
        open_backend(str(gguf), backend="onnx")
