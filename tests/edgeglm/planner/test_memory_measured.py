"""The estimate holds: weights + KV cache + compute buffer vs measured resident memory.

A child process loads a GGUF with LlamaCppModel (as EdgeGLM runs models),
fills the context through full micro-batches (the worst case the compute
buffer is reserved for), then decodes a few tokens. Its peak RSS minus its
RSS just before loading (with llama_cpp already imported) is what the model
cost; the planner's CPU estimate
for the same settings must be within 10% of it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import HF_FIXTURES

from edgeglm.converters.gguf.convert import convert
from edgeglm.models import DEMO_MODEL
from edgeglm.planner.memory import cpu_only_estimate
from edgeglm.planner.sources import open_model

MiB = 1 << 20

_CHILD = r"""
import json, sys
from pathlib import Path
import llama_cpp  # the libraries are the process's cost, not the model's
from edgeglm.backends.llamacpp import LlamaCppModel

def status(key):
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over exec from
    # the forked parent (a big pytest process), VmHWM starts with this image.
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise SystemExit(key + " missing")

def rss():
    return status("VmRSS")

path, n_ctx, fill = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "fill"
before = rss()
m = LlamaCppModel(Path(path), n_ctx=n_ctx)
n_vocab = m.llm.n_vocab()
n_prompt = n_ctx - 8 if fill else 16
m.llm.eval([(i * 7) % (n_vocab - 16) + 3 for i in range(n_prompt)])
for _ in range(4):
    m.llm.eval([m.llm.sample(temp=0.0)])
peak = status("VmHWM")
m.close()
print(json.dumps({"before": before, "peak": peak}))
"""


def _measure(gguf: Path, n_ctx: int, workload: str) -> int:
    r = subprocess.run(
        [sys.executable, "-c", _CHILD, str(gguf), str(n_ctx), workload],
        capture_output=True,
        text=True,
        timeout=300,
        cwd="/",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    return int(out["peak"] - out["before"])


def _gguf(src: Path, tmp: Path) -> Path:
    out = tmp / f"{src.name}.gguf"
    convert(src, out, "Q4_K_M")
    return out


MODELS = [
    pytest.param(HF_FIXTURES / "glm4", id="fixture-glm4"),
    pytest.param(DEMO_MODEL, id="demo"),
]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("src", MODELS)
def test_cpu_estimate_within_10_percent_of_measured_peak(src: Path, tmp_path: Path) -> None:
    gguf = _gguf(src, tmp_path)
    facts = open_model(str(gguf)).facts()
    n_ctx = min(2048, facts.n_ctx_train)
    # LlamaCppModel runs llama-cpp-python's defaults: no flash attention, f16 cache.
    est = cpu_only_estimate(facts, n_ctx, flash_attn=False).total
    full = _measure(gguf, n_ctx, "fill")
    short = _measure(gguf, n_ctx, "short")
    print(
        f"\n{src.name}: estimate {est / MiB:.1f} MiB, measured peak {full / MiB:.1f} MiB "
        f"(full context), {short / MiB:.1f} MiB (16-token prompt)"
    )
    assert abs(est - full) <= 0.10 * full
    assert short <= est * 1.10  # a short chat touches less: the estimate is its bound
