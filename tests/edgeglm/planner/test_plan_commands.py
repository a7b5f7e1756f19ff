"""A plan never suggests a command that fails: every ``edgeglm ...`` a plan
prints is in its ``commands`` (plan --json), and each one runs, as printed,
through the real CLI, for the fixtures and for plans that do not fit."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import FIXTURES, HF_FIXTURES, edgeglm

from edgeglm.converters.gguf.convert import convert

PI5 = FIXTURES / "hardware" / "raspberry-pi5-8gb.json"
CONFIGS = FIXTURES / "configs"


def _tiny_machine(tmp: Path, gguf: Path) -> Path:
    """A profile with just enough RAM for a Q8_0 of ``gguf``'s model, not its F32."""
    from edgeglm.planner import policy
    from edgeglm.planner.advice import minimal_need
    from edgeglm.planner.sources import open_model

    facts = open_model(str(gguf)).facts()
    q8 = int(facts.parameters * policy.NOMINAL_BPW["Q8_0"] / 8)
    have = minimal_need(facts, q8) + (1 << 20)
    assert have < minimal_need(facts)  # the F32 itself does not fit
    profile = json.loads(PI5.read_text())
    total = 2 << 30
    margin = max(policy.RAM_MARGIN_MIN_BYTES, int(total * policy.RAM_MARGIN_FRACTION))
    profile["name"] = "tiny"
    profile["memory"].update(total_bytes=total, available_bytes=margin + have)
    path = tmp / "tiny.json"
    path.write_text(json.dumps(profile))
    return path


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """plan's arguments for every kind of model it takes, and plans that do not fit."""
    tmp = tmp_path_factory.mktemp("plans")
    f32 = convert(HF_FIXTURES / "glm4", tmp / "glm4-F32.gguf", "F32").output
    bare = tmp / "bare"
    bare.mkdir()
    shutil.copy(HF_FIXTURES / "glm4" / "config.json", bare / "config.json")
    optimum = tmp / "optimum"  # a checkpoint with an ONNX export the backend cannot open
    shutil.copytree(HF_FIXTURES / "glm4", optimum)
    (optimum / "onnx").mkdir()
    (optimum / "onnx" / "model.onnx").write_bytes(b"not the genai layout")
    return {
        "checkpoint": [str(HF_FIXTURES / "glm4")],
        "moe_checkpoint": [str(HF_FIXTURES / "glm4_moe")],
        "config_beside_its_weights": [str(HF_FIXTURES / "glm4" / "config.json")],
        "bare_config": [str(bare / "config.json")],
        "bare_config_folder": [str(bare)],
        "gguf": [str(f32)],
        "optimum_export_beside": [str(optimum)],
        "quant_too_big": [
            str(CONFIGS / "glm-4-9b-0414.json"),
            "-q",
            "Q8_0",
            "--hardware",
            str(PI5),
        ],
        "gguf_too_big": [str(f32), "--hardware", str(_tiny_machine(tmp, f32))],
        "imatrix_quant": [str(HF_FIXTURES / "glm4"), "-q", "IQ2_M"],
    }


def _plan(args: list[str], cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    r = edgeglm("plan", *args, "--json", cwd=cwd, env=env)
    assert r.returncode in (0, 7), r.stderr  # 7: does not fit (the suggestions say what would)
    plan: dict[str, Any] = json.loads(r.stdout)
    return plan


def _printed(plan: dict[str, Any]) -> list[str]:
    texts: list[str] = [d["reason"] for d in plan["decisions"]]
    texts += plan["warnings"] + plan["suggestions"]
    return texts


CASES = [
    "checkpoint",
    "moe_checkpoint",
    "config_beside_its_weights",
    "bare_config",
    "bare_config_folder",
    "gguf",
    "optimum_export_beside",
    "quant_too_big",
    "gguf_too_big",
    "imatrix_quant",
]


@pytest.mark.parametrize("name", CASES)
def test_every_command_a_plan_prints_runs(
    name: str, cases: dict[str, list[str]], tmp_path: Path, env: dict[str, str]
) -> None:
    plan = _plan(cases[name], tmp_path, env)
    commands = plan["commands"]
    for text in _printed(plan):
        for m in re.finditer(r"\bedgeglm [a-z]", text):
            rest = text[m.start() :]
            assert any(rest.startswith(c) for c in commands), (rest, commands)
        assert "<out>" not in text and "TEXT_FILE" not in text, text
    for command in commands:
        argv = shlex.split(command)
        assert argv[0] == "edgeglm"
        r = subprocess.run(
            [sys.executable, "-m", "edgeglm", *argv[1:]],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        assert r.returncode == 0, (command, r.stderr)


def test_the_commands_are_the_ones_expected(
    cases: dict[str, list[str]], tmp_path: Path, env: dict[str, str]
) -> None:
    """What each kind of model is told (the suggestion is there, or said in words)."""
    glm4 = HF_FIXTURES / "glm4"
    plan = _plan(cases["checkpoint"], tmp_path, env)
    assert plan["commands"] == [
        f"edgeglm convert {glm4} -o glm4-{plan['artifact']['quant']}.gguf "
        f"-q {plan['artifact']['quant']}"
    ]
    # a config.json beside its weights: the folder is converted, never the json
    assert _plan(cases["config_beside_its_weights"], tmp_path, env)["commands"] == plan["commands"]
    for bare in ("bare_config", "bare_config_folder"):
        told = _plan(cases[bare], tmp_path, env)
        assert told["commands"] == []
        assert any("weights are not here" in t for t in _printed(told))
    assert any(c.endswith("optimum-onnx --format onnx") for c in _plan(
        cases["optimum_export_beside"], tmp_path, env)["commands"])  # fmt: skip
    assert any(" -q Q4_K_M --hardware " in c for c in _plan(
        cases["quant_too_big"], tmp_path, env)["commands"])  # fmt: skip
    assert any(c.startswith(f"edgeglm convert {glm4} -o glm4-") for c in _plan(
        cases["gguf_too_big"], tmp_path, env)["commands"])  # fmt: skip
