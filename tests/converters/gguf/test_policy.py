"""EdgeGLM's quant mixes against llama.cpp's: same per-tensor types, same bytes.

The oracle is llama.cpp's own quantizer (llama_model_quantize, the code behind
llama-quantize) applied to a lossless F32 GGUF of the same checkpoint, i.e.
the convert_hf_to_gguf.py --outtype f32 + llama-quantize pipeline. Both
quantize the same float32 values with the same kernels, so the one-pass
output must be byte-identical, tensor by tensor.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from gguf import GGMLQuantizationType as T
from helpers import (
    HF_FIXTURES,
    fixture_names,
    gguf_tensors,
    llama_quantize,
)

from edgeglm.backends.isolated import run_isolated
from edgeglm.converters.gguf.convert import convert
from edgeglm.converters.gguf.policy import ModelShape, PlannedTensor, _use_more_bits, choose_types
from edgeglm.converters.gguf.quant_types import scheme

SCHEMES = [
    "Q8_0",
    "Q6_K",
    "Q5_K_M",
    "Q5_K_S",
    "Q4_K_M",
    "Q4_K_S",
    "Q4_0",
    "IQ4_XS",
    "IQ4_NL",
    "Q3_K_M",
    "Q2_K",
]


def test_use_more_bits_matches_llama_cpp_table() -> None:
    # src/llama-quant.cpp: n=32 -> these layers get the extra bits
    expected = {0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31}
    assert {i for i in range(32) if _use_more_bits(i, 32)} == expected


def test_row_fallbacks() -> None:
    shape = ModelShape(n_layer=1, n_head=4, n_head_kv=4)
    tensors = [
        PlannedTensor("blk.0.attn_q.weight", (192, 192), T.BF16),  # 192 % 256 != 0
        PlannedTensor("blk.0.ffn_down.weight", (320, 192), T.BF16),  # 320 % 32 == 0
        PlannedTensor("blk.0.attn_norm.weight", (192,), T.BF16),
    ]
    types = choose_types(tensors, scheme("Q4_K_M"), shape)
    assert types["blk.0.attn_q.weight"] == T.Q5_0  # Q4_K -> Q5_0 fallback
    assert types["blk.0.ffn_down.weight"] == T.Q8_0  # Q6_K -> Q8_0 fallback
    assert types["blk.0.attn_norm.weight"] == T.F32


@pytest.fixture(scope="module")
def f32_ggufs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("f32")
    return {n: convert(HF_FIXTURES / n, out / f"{n}.gguf", "F32").output for n in fixture_names()}


@pytest.mark.parametrize("quant", SCHEMES)
@pytest.mark.parametrize("name", fixture_names())
def test_mix_matches_llama_quantize(
    name: str, quant: str, f32_ggufs: dict[str, Path], tmp_path: Path
) -> None:
    ours = convert(HF_FIXTURES / name, tmp_path / "ours.gguf", quant).output
    theirs = tmp_path / "theirs.gguf"
    assert (
        run_isolated(llama_quantize, str(f32_ggufs[name]), str(theirs), int(scheme(quant).ftype))
        == 0
    )
    a, b = gguf_tensors(ours), gguf_tensors(theirs)
    assert {k: v[0] for k, v in a.items()} == {k: v[0] for k, v in b.items()}
    diff = [k for k in a if a[k][1] != b[k][1]]
    assert not diff, f"bytes differ from llama.cpp for {diff[:5]}"
    assert ours.stat().st_size == pytest.approx(theirs.stat().st_size, rel=0.001)


def test_recipe_rules_only_ever_add_precision(tmp_path: Path) -> None:
    base = gguf_tensors(convert(HF_FIXTURES / "glm4", tmp_path / "a.gguf", "Q4_K_M").output)
    keep = [(r"attn_(q|k)\.weight$", "Q8_0"), (r"^output\.weight$", "Q4_0")]
    kept = gguf_tensors(
        convert(HF_FIXTURES / "glm4", tmp_path / "b.gguf", "Q4_K_M", keep=keep).output
    )
    for name, (typ, _) in kept.items():
        if name.endswith(("attn_q.weight", "attn_k.weight")):
            assert typ == "Q8_0"
        else:
            assert typ == base[name][0]  # output stays Q6_K: a floor never lowers a type
