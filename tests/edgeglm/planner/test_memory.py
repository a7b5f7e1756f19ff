"""The memory formulas against llama.cpp's own accounting."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import HF_FIXTURES

from edgeglm.converters.gguf.convert import convert
from edgeglm.planner.memory import compute_buffer_bytes, kv_cache_bytes, padded_ctx
from edgeglm.planner.model import ModelFacts
from edgeglm.planner.sources import ModelSource, open_model

MiB = 1 << 20

# "CPU compute buffer size" as llama.cpp 0.3.36 reports it for the fixture
# GGUFs (Q4_K_M), by (fixture, n_ctx, flash_attn, n_ubatch): recorded once
# with verbose=True; the formula must reproduce dense GLM exactly and bound
# the MLA/DSA families from above.
REPORTED_MIB = {
    ("glm4", 512, False, 512): 8.01,
    ("glm4", 2048, False, 512): 23.01,
    ("glm4", 8192, False, 512): 83.01,
    ("glm4", 2048, True, 512): 6.01,
    ("glm4", 8192, True, 128): 3.00,
    ("glm4_moe", 2048, False, 512): 40.01,
    ("glm4_moe", 8192, True, 512): 12.51,
    ("glm4_moe_lite", 8192, False, 512): 88.01,
    ("glm4_moe_lite", 2048, True, 512): 11.01,
    ("glm_moe_dsa", 8192, False, 512): 140.58,
    ("glm_moe_dsa", 2048, True, 512): 24.58,
}


def _facts(name: str) -> ModelFacts:
    return open_model(str(HF_FIXTURES / name)).facts("Q4_K_M")


@pytest.mark.parametrize("key", sorted(REPORTED_MIB))
def test_compute_buffer_reproduces_llama_cpp(key: tuple[str, int, bool, int]) -> None:
    name, n_ctx, fa, ub = key
    reserved = compute_buffer_bytes(_facts(name), n_ctx, flash_attn=fa, n_ubatch=ub)
    scratch = 0 if fa else 2 * _facts(name).n_head * n_ctx * ub  # outside llama.cpp's figure
    got = (reserved - scratch) / MiB
    want = REPORTED_MIB[key]
    if name in ("glm4", "glm4_moe"):
        assert got == pytest.approx(want, rel=0.12), key
    else:
        assert want <= got <= 2.5 * want, key


def test_compute_buffer_live(tmp_path: Path) -> None:
    """One live reading, so a llama.cpp upgrade that changes the graph is noticed."""
    gguf = tmp_path / "glm4.gguf"
    convert(HF_FIXTURES / "glm4", gguf, "Q4_K_M")
    code = (
        "import sys, llama_cpp\n"
        "from edgeglm.backends.llamacpp import _default_params\n"
        "with _default_params(use_extra_bufts=False):\n"
        "    llama_cpp.Llama(sys.argv[1], n_ctx=4096, flash_attn=True, verbose=True)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(gguf)], capture_output=True, text=True, timeout=120
    )
    m = re.search(r"CPU compute buffer size =\s+([\d.]+) MiB", r.stderr)
    assert m, r.stderr[-2000:]
    est = compute_buffer_bytes(_facts("glm4"), 4096, flash_attn=True) / MiB
    assert est == pytest.approx(float(m.group(1)), rel=0.12)


def test_kv_cache_follows_llama_cpp_layouts(config_source: Callable[[str], ModelSource]) -> None:
    gqa = config_source("glm-4-9b-0414").facts("Q4_K_M")
    # 40 layers x 2 KV heads x (128 K + 128 V) x 2 bytes
    assert kv_cache_bytes(gqa, 1000) == 40 * 2 * 256 * 2 * padded_ctx(1000)
    mla = config_source("glm-4.7-flash").facts("Q4_K_M")
    # MLA caches one latent of kv_lora_rank + rope dims (512 + 64), K only, trunk layers only
    assert kv_cache_bytes(mla, 4096) == 47 * 576 * 2 * 4096
    assert kv_cache_bytes(mla, 4096, "q8_0", "q8_0") == int(47 * 576 * 34 / 32 * 4096)
    assert padded_ctx(1) == 256 and padded_ctx(4096) == 4096


def test_flash_attention_keeps_long_contexts_small(
    config_source: Callable[[str], ModelSource],
) -> None:
    air = config_source("glm-4.5-air").facts("Q4_K_M")
    with_fa = compute_buffer_bytes(air, 32768, flash_attn=True)
    without = compute_buffer_bytes(air, 32768, flash_attn=False)
    assert without > 20 * with_fa  # 96 heads x 32k cells x 512 tokens of f32 scores
    # GPUs commit the reserved logits for 512 positions; RAM only holds what is touched
    resident = compute_buffer_bytes(air, 32768, flash_attn=True, resident=True)
    assert with_fa - resident == pytest.approx(air.n_vocab * 4 * 511, rel=0.01)
