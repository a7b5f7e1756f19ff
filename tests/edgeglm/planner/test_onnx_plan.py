"""The ONNX Runtime memory estimate against measured peaks (VmHWM in a child)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeglm.converters.onnx import convert
from edgeglm.errors import UsageError
from edgeglm.hardware import probe
from edgeglm.models import DEMO_MODEL
from edgeglm.planner.onnx_plan import is_onnx_folder, onnx_memory, plan_onnx

_CHILD = r"""
import json, sys
from pathlib import Path
import numpy, onnxruntime, tokenizers  # libraries are the process's cost, not the model's
from edgeglm.backends.base import SamplingParams
from edgeglm.backends.onnx import OnnxModel

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

path, n_ctx = sys.argv[1], int(sys.argv[2])
before = status("VmRSS")
m = OnnxModel(Path(path), n_ctx=n_ctx)
m.eos_ids = set()
prompt = [(i * 7) % (m.n_vocab - 16) + 3 for i in range(n_ctx - 8)]
for _ in m.generate(prompt, SamplingParams(max_tokens=4)):
    pass
print(json.dumps({"cost": status("VmHWM") - before}))
"""


@pytest.fixture(scope="module")
def demo_int4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "demo-int4"
    convert(DEMO_MODEL, out, "int4")
    return out


def _measure(folder: Path, n_ctx: int) -> int:
    r = subprocess.run(
        [sys.executable, "-c", _CHILD, str(folder), str(n_ctx)],
        capture_output=True, text=True, timeout=300, cwd="/",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return int(json.loads(r.stdout.strip().splitlines()[-1])["cost"])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("n_ctx", [1024, 2048])
def test_estimate_within_10_percent_of_measured_peak(demo_int4: Path, n_ctx: int) -> None:
    est = onnx_memory(demo_int4, n_ctx).total
    measured = _measure(demo_int4, n_ctx)
    assert abs(est - measured) <= 0.10 * measured, (
        f"estimate {est >> 20} MiB, measured {measured >> 20} MiB"
    )


def test_plan_for_an_onnx_folder(demo_int4: Path) -> None:
    assert is_onnx_folder(demo_int4)
    p = plan_onnx(demo_int4, probe(bandwidth=False), ctx=1024)
    d = p.to_dict()
    assert d["backend"] == "onnxruntime" and d["provider"] == "CPUExecutionProvider"
    assert d["n_ctx"] == 1024 and "trained context: 2048" in d["reasons"]["context"]
    # past the trained context: refused in one plain line, as run refuses it
    with pytest.raises(UsageError, match="past the model's trained context of 2048 tokens"):
        plan_onnx(demo_int4, probe(bandwidth=False), ctx=999_999)
    assert d["fits"] and d["memory"]["total"] == sum(
        d["memory"][k] for k in ("weights", "runtime", "kv_cache", "logits", "fixed")
    )


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        ({"filename": "../model.onnx"}, "leaves"),
        ({"filename": "/etc/passwd"}, "not relative"),
        ({"filename": "missing.onnx"}, "not in"),
        ({"head_size": "64"}, "positive integers"),
        ({"num_hidden_layers": 0}, "positive integers"),
    ],
)
def test_a_broken_genai_config_is_refused_with_exit_4(
    demo_int4: Path, tmp_path: Path, edit: dict[str, object], says: str
) -> None:
    import shutil

    from typer.testing import CliRunner

    from edgeglm.cli import _register, app

    folder = tmp_path / "onnx"
    shutil.copytree(demo_int4, folder)
    cfg = json.loads((folder / "genai_config.json").read_text())
    cfg["model"]["decoder"].update(edit)
    (folder / "genai_config.json").write_text(json.dumps(cfg))
    _register()
    r = CliRunner().invoke(app, ["plan", str(folder)])
    assert r.exit_code == 4, r.stderr
    assert says in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_an_onnx_file_that_does_not_parse_is_refused_with_exit_4(
    demo_int4: Path, tmp_path: Path
) -> None:
    import shutil

    from edgeglm.errors import CheckpointError

    folder = tmp_path / "onnx"
    shutil.copytree(demo_int4, folder)
    (folder / "model.onnx").write_bytes(b"\x08\x07not a protobuf" * 10)
    with pytest.raises(CheckpointError, match="not a readable ONNX model"):
        onnx_memory(folder, 256)
