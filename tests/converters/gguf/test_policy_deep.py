"""Every quant scheme's mix against llama.cpp's, on checkpoints deep enough for all its rules.

The 2-layer fixtures leave about half of ``llama_tensor_get_type`` unexercised
(see tests/deep_checkpoints.py). Here every scheme EdgeGLM offers, without and with an
importance matrix, is planned on a 16-layer dense GLM-4, a 16-layer GLM-4.5-like
MoE with 8 experts and each committed fixture, and llama.cpp's quantizer decides
the same file in a dry run (``llama-quantize --dry-run``: the same per-tensor
type code as a real run, no kernels). Names and types must agree tensor by
tensor, in llama.cpp's processing order. Then full conversions (BYTES) are
compared with llama.cpp's real output byte for byte.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from deep_checkpoints import DENSE, MOE, synthesize
from gguf import GGUFReader
from helpers import (
    HF_FIXTURES,
    convert_and_llama_quantize,
    fixture_names,
    gguf_tensors,
    llama_quantize_types,
)

from edgeglm.backends.isolated import run_isolated
from edgeglm.checkpoint.hf import HFCheckpoint
from edgeglm.converters.gguf.convert import convert, plan_conversion
from edgeglm.converters.gguf.imatrix import Imatrix
from edgeglm.converters.gguf.policy import _order_key, allows_quantization
from edgeglm.converters.gguf.quant_types import SCHEMES, scheme
from edgeglm.errors import QuantizationError

SYNTHETIC = {"dense16": ("glm4", DENSE), "moe16x8": ("glm4_moe", MOE)}
# The committed 2-layer fixtures join the type sweep: they bring gqa < 4 (glm4, glm4-odd),
# rows that take the block-size fallbacks (glm4-odd) and MLA's attn_kv_b (glm4_moe_lite,
# glm_moe_dsa) to every scheme.
MODELS = [*SYNTHETIC, *fixture_names()]
QUANTIZED = [s.name for s in SCHEMES.values() if not s.is_float]
# (scheme, with imatrix?) for every scheme that can run both ways, and the
# imatrix-only ones (IQ1/IQ2, IQ3_XXS, Q2_K_S) with one.
JOBS = [(q, im) for q in QUANTIZED for im in (False, True)]

# Full conversions compared byte for byte. On the deep models, K-quant schemes whose
# mixes turn on the layer-position rules (n_layer/8, n_layer/16, use_more_bits), the
# attn_v counter rules, the 8-expert rules and the imatrix-only rules; every scheme's
# types are compared above on every model. The IQ kernels are slow (and their lookup
# tables take seconds to build), so their bytes are compared on the smallest fixture.
BYTES = {
    "dense16": [
        ("Q4_K_M", False),  # use_more_bits on ffn_down and on the attn_v counter
        ("Q3_K_M", False),  # n_layer/16 and the first two attn_v
        ("Q3_K_L", True),
        ("Q4_K_S", True),  # n_layer/8 ffn_down, the first four attn_v
        ("Q4_0", True),  # imatrix: Q4_1 on the first n_layer/8 ffn_down
    ],
    "moe16x8": [
        ("Q4_K_M", True),  # use_more_bits by layer number, per-expert imatrix, row fallback
        ("Q3_K_M", True),  # the n_expert == 8 rules for attn_v, attn_k and attn_output
    ],
    # Every scheme no other byte comparison runs (test_policy.py runs eleven on every
    # fixture without an imatrix, test_imatrix.py four with one), on the smallest fixture.
    "glm4": [
        (q, True)
        for q in (
            "Q5_0",
            "Q5_1",
            "Q4_1",
            "Q3_K_S",
            "IQ3_M",
            "IQ3_S",
            "IQ3_XS",
            "IQ3_XXS",
            "Q2_K_S",
            "IQ2_M",
            "IQ2_S",
            "IQ2_XS",
            "IQ2_XXS",
            "IQ1_M",
            "IQ1_S",
        )
    ],
}


@dataclass
class Deep:
    name: str
    ckpt: Path
    f32: Path
    imatrix: Imatrix
    theirs: dict[tuple[str, bool], list[tuple[str, str]] | str]


def _prepare(name: str, root: Path) -> Deep:
    if name in SYNTHETIC:
        template, overrides = SYNTHETIC[name]
        ckpt = synthesize(template, dict(overrides), root / "hf")
    else:
        ckpt = HF_FIXTURES / name
    f32 = convert(ckpt, root / "f32.gguf", "F32").output
    # One importance weight per input column of every quantizable matrix (per expert):
    # what tools/imatrix collects, random so that it moves the quantizers' choices.
    rng = np.random.default_rng(1)
    weights = {
        t.name: (
            0.1 + np.abs(rng.standard_normal((int(np.prod(t.shape[2:])), int(t.shape[0]))))
        ).astype(np.float32)
        for t in GGUFReader(f32).tensors
        if allows_quantization(t.name, [int(x) for x in t.shape])
    }
    im = Imatrix(weights=weights, datasets=["random"], chunks=1)
    jobs = [(int(scheme(q).ftype), weights if with_im else None) for q, with_im in JOBS]
    found = run_isolated(llama_quantize_types, str(f32), jobs)
    return Deep(name, ckpt, f32, im, dict(zip(JOBS, found, strict=True)))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Deep]:
    cache: dict[str, Deep] = {}

    def get(name: str) -> Deep:
        if name not in cache:
            cache[name] = _prepare(name, tmp_path_factory.mktemp(name))
        return cache[name]

    return get


@pytest.fixture(scope="module", params=MODELS)
def deep(request: pytest.FixtureRequest, prepared: Callable[[str], Deep]) -> Deep:
    return prepared(request.param)


@pytest.fixture(scope="module")
def byte_runs(
    prepared: Callable[[str], Deep], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, list[tuple[str, Path, Path]]]:
    """Every BYTES case converted by EdgeGLM and quantized by llama.cpp, in one child."""
    out = tmp_path_factory.mktemp("bytes")
    runs: dict[str, list[tuple[str, Path, Path]]] = {}
    jobs = []
    for name, cases in BYTES.items():
        d = prepared(name)
        for quant, with_im in cases:
            tag = f"{name}-{quant}-{'im' if with_im else 'noim'}"
            ours, theirs = out / f"ours-{tag}.gguf", out / f"theirs-{tag}.gguf"
            runs.setdefault(name, []).append((tag, ours, theirs))
            weights = d.imatrix.weights if with_im else None
            jobs.append((str(d.ckpt), str(d.f32), quant, str(ours), str(theirs), weights))
    run_isolated(convert_and_llama_quantize, jobs)
    return runs


def _ours(d: Deep, quant: str, with_im: bool) -> list[tuple[str, str]] | str:
    ckpt = HFCheckpoint(d.ckpt)
    try:
        plan = plan_conversion(ckpt, quant, d.imatrix if with_im else None)
    except QuantizationError:
        return "requires an imatrix"
    finally:
        ckpt.close()
    return [(t.name, plan.types[t.name].name) for t in plan.tensors]


@pytest.mark.parametrize("deep", list(SYNTHETIC), indirect=True)
def test_synthetic_checkpoints_have_the_shapes_the_rules_need(deep: Deep) -> None:
    r = GGUFReader(deep.f32)
    kv = {f.name: f.contents() for f in r.fields.values() if not f.name.startswith("tokenizer")}
    arch = kv["general.architecture"]
    assert kv[f"{arch}.block_count"] >= 16
    if deep.name.startswith("moe"):
        assert kv[f"{arch}.expert_count"] == 8
        assert kv[f"{arch}.leading_dense_block_count"] == 1
        assert kv[f"{arch}.nextn_predict_layers"] == 1


@pytest.mark.parametrize(
    ("quant", "with_im"), JOBS, ids=[f"{q}-{'im' if i else 'noim'}" for q, i in JOBS]
)
def test_every_scheme_types_and_order_match_llama_cpp(
    deep: Deep, quant: str, with_im: bool
) -> None:
    ours, theirs = _ours(deep, quant, with_im), deep.theirs[(quant, with_im)]
    if isinstance(theirs, str) or isinstance(ours, str):
        # Both must refuse a scheme that needs an imatrix, and only then.
        assert ours == theirs == "requires an imatrix", (ours, theirs)
        assert not with_im
        return
    # llama-quantize writes tensors in its processing order (layer, then name), the order
    # its counters see them; EdgeGLM keeps convert_hf_to_gguf's order in the file. Tensor
    # order in a GGUF carries no meaning (each tensor has its offset), but the processing
    # order does, so ours is compared in llama.cpp's.
    ours = sorted(ours, key=lambda nt: _order_key(nt[0]))
    assert [n for n, _ in ours] == [n for n, _ in theirs], "tensor names differ"
    diff = [(n, a, b) for (n, a), (_, b) in zip(ours, theirs, strict=True) if a != b]
    assert not diff, f"{len(diff)} types differ from llama.cpp (name, ours, theirs): {diff[:6]}"


@pytest.mark.parametrize("deep", list(SYNTHETIC), indirect=True)
def test_the_deep_mixes_reach_the_position_and_expert_rules(deep: Deep) -> None:
    """Guards the fixture, not the policy: llama.cpp's own mix must vary along the depth,
    else the comparison above could not see a wrong layer threshold."""
    theirs = deep.theirs[("Q4_K_M", False)]
    assert not isinstance(theirs, str)
    down = Counter(t for n, t in theirs if "ffn_down" in n and n.startswith("blk."))
    assert (down["Q6_K"] and down["Q4_K"]) or (down["Q8_0"] and down["Q5_0"]), down
    attn_v = Counter(t for n, t in theirs if n.endswith("attn_v.weight"))
    if deep.name.startswith("moe"):
        assert set(attn_v) == {"Q8_0"}  # the n_expert == 8 rule
    else:
        assert {"Q6_K", "Q4_K"} <= set(attn_v)
    iq2 = deep.theirs[("IQ2_XXS", True)]
    assert not isinstance(iq2, str)
    down_iq2 = {t for n, t in iq2 if "ffn_down" in n and n.startswith("blk.")}
    assert {"Q2_K", "IQ2_XXS"} <= down_iq2 or {"Q4_0", "IQ4_NL"} <= down_iq2


def test_every_scheme_is_byte_compared_somewhere() -> None:
    elsewhere = {"Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q4_K_M", "Q4_K_S", "Q4_0", "IQ4_XS"}
    elsewhere |= {"IQ4_NL", "Q3_K_M", "Q2_K"}  # test_policy.py's SCHEMES
    here = {q for cases in BYTES.values() for q, _ in cases}
    assert elsewhere | here == set(QUANTIZED)


@pytest.mark.parametrize("name", list(BYTES))
def test_full_conversions_are_byte_identical_to_llama_quantize(
    name: str, byte_runs: dict[str, list[tuple[str, Path, Path]]], prepared: Callable[[str], Deep]
) -> None:
    file_order = _ours(prepared(name), "F32", False)
    assert not isinstance(file_order, str)
    for tag, ours, theirs in byte_runs[name]:
        a, b = gguf_tensors(ours), gguf_tensors(theirs)
        assert sorted(a, key=_order_key) == list(b), f"{tag}: tensor names differ"
        assert list(a) == [n for n, _ in file_order], f"{tag}: file order"
        assert {k: v[0] for k, v in a.items()} == {k: v[0] for k, v in b.items()}, tag
        diff = [k for k in a if a[k][1] != b[k][1]]
        assert not diff, f"{tag}: bytes differ from llama.cpp for {diff[:5]}"
