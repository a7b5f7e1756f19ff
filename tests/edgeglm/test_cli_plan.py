"""`edgeglm doctor` and `edgeglm plan` in a subprocess: exit codes, stdout data, stderr messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import FIXTURES, HF_FIXTURES, edgeglm

from edgeglm.errors import ExitCode
from edgeglm.hardware import SCHEMA_VERSION
from edgeglm.planner.plan import PLAN_SCHEMA_VERSION

PROFILES = FIXTURES / "hardware"
CONFIGS = FIXTURES / "configs"


def test_doctor_json_schema(tmp_path: Path, env: dict[str, str]) -> None:
    r = edgeglm("doctor", "--json", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["schema_version"] == SCHEMA_VERSION
    assert set(d) >= {"cpu", "memory", "gpus", "llama_cpp", "onnxruntime", "os", "source"}
    assert d["memory"]["bandwidth_gbps"] > 0
    assert "CPUExecutionProvider" in d["onnxruntime"]["working_providers"]
    assert "EP Error" not in r.stdout + r.stderr  # ONNX Runtime's probe noise stays hidden
    # the output is a hardware profile: plan for "this machine" from the file
    (tmp_path / "me.json").write_text(r.stdout)
    again = edgeglm("doctor", "--hardware", "me.json", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    assert "unknown" in again.stdout or "GB/s" in again.stdout


def test_plan_json_for_a_profile(tmp_path: Path, env: dict[str, str]) -> None:
    r = edgeglm(
        "plan",
        str(CONFIGS / "glm-4.5-air.json"),
        "--hardware",
        str(PROFILES / "desktop-rtx4090-24gb.json"),
        "--json",
        cwd=tmp_path,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["schema_version"] == PLAN_SCHEMA_VERSION and d["fits"] is True
    assert d["placement"]["strategy"] == "gpu_moe_split"
    assert "-ot" in d["llama_cpp_args"]


def test_plan_human_output_for_a_gguf(tmp_path: Path, env: dict[str, str]) -> None:
    from edgeglm.converters.gguf.convert import convert

    gguf = tmp_path / "tiny.gguf"
    convert(HF_FIXTURES / "glm4", gguf, "Q4_K_M")
    r = edgeglm("plan", "tiny.gguf", "--ctx", "1024", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    for word in (
        "fits",
        "decisions",
        "memory estimate",
        "KV cache",
        "flash attention",
        "llama.cpp flags",
    ):
        assert word in r.stdout
    assert r.stderr == ""


def test_does_not_fit_exits_with_hardware_code(tmp_path: Path, env: dict[str, str]) -> None:
    r = edgeglm(
        "plan",
        str(CONFIGS / "glm-4.5.json"),
        "--hardware",
        str(PROFILES / "raspberry-pi5-8gb.json"),
        "--json",
        cwd=tmp_path,
        env=env,
    )
    assert r.returncode == ExitCode.HARDWARE
    d = json.loads(r.stdout)  # the plan still explains itself on stdout
    assert d["fits"] is False and d["suggestions"]
    assert "error: glm-4.5 does not fit on raspberry-pi5-8gb" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["plan", "nope.gguf"], ExitCode.MODEL_NOT_FOUND, "no such model"),
        (
            ["plan", str(CONFIGS / "glm-4.5.json"), "--hardware", "missing.json"],
            ExitCode.USAGE,
            "missing.json: no such file",
        ),
        (
            [
                "plan",
                str(CONFIGS / "glm-4.5.json"),
                "-q",
                "Q9_K",
                "--hardware",
                str(PROFILES / "raspberry-pi5-8gb.json"),
            ],
            ExitCode.USAGE,
            "unknown quant type",
        ),
    ],
)
def test_user_mistakes(
    tmp_path: Path, env: dict[str, str], args: list[str], code: int, message: str
) -> None:
    r = edgeglm(*args, cwd=tmp_path, env=env)
    assert r.returncode == code, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""
