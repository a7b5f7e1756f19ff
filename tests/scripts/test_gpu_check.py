"""scripts/gpu_check.sh: valid bash, clean under shellcheck, one line and exit 7
where there is no NVIDIA GPU, and its embedded checks read real bench reports.
The GPU run itself happens on an NVIDIA machine (see the script's header)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import HF_FIXTURES

SCRIPT = Path(__file__).parents[2] / "scripts" / "gpu_check.sh"
# A guard against a hang, not a speed limit.
TIMEOUT = 120


def _gpu_listed() -> bool:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    r = subprocess.run([smi, "-L"], capture_output=True, text=True, check=False, timeout=60)
    return r.returncode == 0 and any(ln.startswith("GPU ") for ln in r.stdout.splitlines())


def test_the_script_parses_and_passes_shellcheck() -> None:
    assert os.access(SCRIPT, os.X_OK)
    r = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    r = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout


def test_without_a_gpu_it_stops_at_once_with_one_line(tmp_path: Path) -> None:
    if _gpu_listed():
        pytest.skip("nvidia-smi lists a GPU here: the script would run")
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "WORK": str(tmp_path / "work")}
    r = subprocess.run(
        ["bash", str(SCRIPT)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert r.returncode == 7, r.stderr
    assert r.stderr == "gpu_check: no NVIDIA GPU here (nvidia-smi lists none); nothing checked\n"
    assert r.stdout == ""
    assert not out.exists() and not (tmp_path / "work").exists()  # nothing touched


def _checks(tmp_path: Path) -> Path:
    """The script's embedded checker, where the script writes it ($OUT/json/checks.py)."""
    text = SCRIPT.read_text()
    m = re.search(r"cat >\"\$W/checks.py\" <<'PYEOF'\n(.*?)\nPYEOF\n", text, re.S)
    assert m is not None
    path = tmp_path / "out" / "json" / "checks.py"
    path.parent.mkdir(parents=True)
    path.write_text(m.group(1) + "\n")
    return path


def test_the_embedded_checks_read_a_real_report(tmp_path: Path) -> None:
    """``rows`` passes a CPU report as CPU rows and fails it as GPU rows, and
    writes each row to the summary; ``plan-run`` refuses a plan that does not
    offload. Real reports from the real CLI."""
    from edgeglm.converters.gguf.convert import convert

    checks = _checks(tmp_path)
    gguf = convert(HF_FIXTURES / "glm4_moe", tmp_path / "moe.gguf", "Q8_0").output
    env = {**os.environ, "EDGEGLM_CACHE_DIR": str(tmp_path / "cache")}
    report = tmp_path / "out" / "bench-moe-cpu.json"
    edgeglm = [sys.executable, "-m", "edgeglm"]
    r = subprocess.run(
        [*edgeglm, "bench", str(gguf), "--device", "cpu", "--repeat", "1", "-o", str(report)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr

    def check(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(checks), *args],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False,
        )  # fmt: skip

    ok = check("rows", str(report), "cpu", "-")
    assert ok.returncode == 0, ok.stderr
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert summary.startswith("row  bench-moe-cpu: moe ") and "roofline cpu:" in summary
    bad = check("rows", str(report), "gpu", "gate")
    assert bad.returncode == 1 and bad.stderr.startswith("check failed: moe: device cpu, asked gpu")
    assert "VRAM not measured" in bad.stderr
    # a plan that keeps everything on the CPU is not what this script is for
    plan, dry = tmp_path / "plan.json", tmp_path / "dry.json"
    for args, dest in (
        (["plan", str(gguf), "--json"], plan),
        (["run", str(gguf), "--dry-run", "--json"], dry),
    ):
        r = subprocess.run(
            [*edgeglm, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=TIMEOUT, check=False,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        dest.write_text(r.stdout)
    ran = tmp_path / "ran.json"
    launch = json.loads(plan.read_text())["launch"]
    ran.write_text(json.dumps({"device": "cpu", "settings": launch}))
    r = check("plan-run", str(plan), str(dry), str(ran))
    assert r.returncode == 1 and "plan n_gpu_layers 0, run device cpu" in r.stderr, r.stderr
