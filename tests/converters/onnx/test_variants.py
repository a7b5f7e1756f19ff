"""Config variants of the fixtures, made at test time, against transformers run on them.

Each variant copies a fixture, changes its config (and drops the tensors the
change removes), and scores the fixture's tokens in transformers (float32,
eager attention) as the reference: these tests need torch and transformers.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import HF_FIXTURES, load_reference, write_safetensors

from edgeglm.backends.onnx import OnnxModel
from edgeglm.checkpoint.hf import HFCheckpoint
from edgeglm.converters.onnx import convert
from edgeglm.metrics import kl_divergence

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def make_variant(
    tmp: Path,
    base: str,
    name: str,
    config: dict[str, Any],
    keep: Callable[[str], bool] = lambda _: True,
    tensors: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] = lambda t: t,
) -> Path:
    """``base`` with ``config`` merged into its config.json, only the tensors ``keep``
    keeps, then rewritten by ``tensors``."""
    d = Path(shutil.copytree(HF_FIXTURES / base, tmp / name))
    (d / "reference.npz").unlink()
    cfg = json.loads((d / "config.json").read_text()) | config
    (d / "config.json").write_text(json.dumps(cfg))
    ckpt = HFCheckpoint(HF_FIXTURES / base)
    kept = {n: np.asarray(ckpt.load(n), dtype=np.float32) for n in ckpt if keep(n)}
    ckpt.close()
    write_safetensors(d / "model.safetensors", tensors(kept))
    return d


def transformers_logits(folder: Path, tokens: list[int]) -> np.ndarray:
    model = transformers.AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager"
    )
    with torch.no_grad():
        out = model(input_ids=torch.tensor([tokens])).logits[0]
    return np.asarray(out.float().numpy())


def onnx_kl(folder: Path, out: Path, tokens: list[int], ref: np.ndarray) -> np.ndarray:
    m = OnnxModel(convert(folder, out, "fp32").output, n_threads=1)
    try:
        return kl_divergence(ref, m.score(tokens))
    finally:
        m.close()


def test_glm4_moe_without_attention_biases(tmp_path: Path) -> None:
    """attention_bias false is a valid Glm4MoeForCausalLM config (GLM-4.5 sets it true)."""
    src = make_variant(
        tmp_path,
        "glm4_moe",
        "glm4_moe_nobias",
        {"attention_bias": False},
        keep=lambda n: not n.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias")),
    )
    tokens = load_reference(HF_FIXTURES / "glm4_moe")[0][:96]
    ref = transformers_logits(src, tokens)
    kl = onnx_kl(src, tmp_path / "out", tokens, ref)
    assert kl.mean() < 1e-6, f"mean KL {kl.mean():.3g}"


def prefill_and_decode_kl(out: Path, tokens: list[int], ref: np.ndarray) -> tuple[float, float]:
    """Mean KL of one prefill over ``tokens``, and of a cached decode over their second half
    (the runtime's shared-buffer cache, as ``generate`` runs it)."""
    m = OnnxModel(out, n_threads=1)
    try:
        prefill = kl_divergence(ref, m.score(tokens))
        cache, half = m._new_cache(len(tokens)), len(tokens) // 2
        steps = [m._step(tokens[:half], 0, cache)]
        steps += [m._step([tokens[j]], j, cache) for j in range(half, len(tokens))]
        decode = kl_divergence(ref[half - 1 :], np.stack(steps))
    finally:
        m.close()
    return float(prefill.mean()), float(decode.mean())


def _more_index_heads(heads: int) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Fresh indexer query and weight projections with ``heads`` heads.

    With the fixture's 4 indexer heads, about one key in 16 scores exactly 0
    (every head's ReLU is 0), and top-k among equal scores is left to the
    implementation (torch and ORT break such ties differently). Real GLM-5
    indexers have 32 heads; 16 make an exact zero as unlikely here.
    """

    def rewrite(t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(17)
        for name in [n for n in t if n.endswith("indexer.wq_b.weight")]:
            p = name.removesuffix("wq_b.weight")
            rows, cols = t[name].shape[0] // 4 * heads, t[name].shape[1]
            t[name] = rng.normal(0, 0.06, (rows, cols)).astype(np.float32)
            hidden = t[p + "weights_proj.weight"].shape[1]
            t[p + "weights_proj.weight"] = rng.normal(0, 0.06, (heads, hidden)).astype(np.float32)
        return t

    return rewrite


@pytest.mark.parametrize("topk", [16, 150])
def test_glm_moe_dsa_sparse_attention_matches_transformers(tmp_path: Path, topk: int) -> None:
    """index_topk below the text length: each query attends to its indexer's top-k only."""
    src = make_variant(
        tmp_path,
        "glm_moe_dsa",
        "glm_moe_dsa_topk_onnx",
        {"index_topk": topk, "index_n_heads": 16},
        tensors=_more_index_heads(16),
    )
    tokens = load_reference(HF_FIXTURES / "glm_moe_dsa")[0][:200]
    ref = transformers_logits(src, tokens)
    prefill, decode = prefill_and_decode_kl(convert(src, tmp_path / "out", "fp32").output,
                                            tokens, ref)  # fmt: skip
    assert prefill < 1e-6 and decode < 1e-6, f"KL prefill {prefill:.3g}, decode {decode:.3g}"


def test_glm_moe_dsa_shared_indexer_layers(tmp_path: Path) -> None:
    """indexer_types "shared": layer 1 reuses layer 0's selection; transformers builds no
    indexer for it and ignores its indexer weights (kept: the shared consistency check
    still expects them), and so does the ONNX graph."""
    src = make_variant(
        tmp_path,
        "glm_moe_dsa",
        "glm_moe_dsa_shared_onnx",
        {"index_topk": 16, "index_n_heads": 16, "indexer_types": ["full", "shared"]},
        tensors=_more_index_heads(16),
    )
    tokens = load_reference(HF_FIXTURES / "glm_moe_dsa")[0][:120]
    ref = transformers_logits(src, tokens)
    prefill, decode = prefill_and_decode_kl(convert(src, tmp_path / "out", "fp32").output,
                                            tokens, ref)  # fmt: skip
    assert prefill < 1e-6 and decode < 1e-6, f"KL prefill {prefill:.3g}, decode {decode:.3g}"


@pytest.mark.parametrize("name", ["glm4_moe_lite", "glm_moe_dsa", "glm_moe_dsa-wide"])
def test_mla_decode_with_cache_matches_transformers(name: str, tmp_path: Path) -> None:
    tokens, ref, _ = load_reference(HF_FIXTURES / name)
    prefill, decode = prefill_and_decode_kl(
        convert(HF_FIXTURES / name, tmp_path / "out", "fp32").output, tokens[:160], ref[:160]
    )
    assert prefill < 1e-6 and decode < 1e-6, f"KL prefill {prefill:.3g}, decode {decode:.3g}"


def _mla_variant_kl(tmp: Path, base: str, name: str, config: dict[str, Any],
                    keep: Callable[[str], bool] = lambda _: True,
                    tensors: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] = lambda t: t,
                    ) -> tuple[float, float]:  # fmt: skip
    """Prefill and cached-decode KL of a variant of an MLA fixture against transformers."""
    src = make_variant(tmp, base, name, config, keep, tensors)
    tokens = load_reference(HF_FIXTURES / base)[0][:120]
    ref = transformers_logits(src, tokens)
    return prefill_and_decode_kl(convert(src, tmp / "out", "fp32").output, tokens, ref)


def test_mla_without_q_lora(tmp_path: Path) -> None:
    """q_lora_rank null: q_proj straight from the hidden state, W_UK folded into it."""

    def q_proj(t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(5)
        for name in [n for n in t if n.endswith("q_b_proj.weight")]:
            p = name.removesuffix("q_b_proj.weight")
            rows, hidden = t[name].shape[0], t[p + "kv_a_proj_with_mqa.weight"].shape[1]
            q = rng.normal(0, t[name].std(), (rows, hidden))
            t[p + "q_proj.weight"] = q.astype(np.float32)
        return {n: w for n, w in t.items() if ".q_a_" not in n and ".q_b_" not in n}

    prefill, decode = _mla_variant_kl(
        tmp_path, "glm4_moe_lite", "lite_no_q_lora", {"q_lora_rank": None}, tensors=q_proj
    )
    assert prefill < 1e-6 and decode < 1e-6, f"KL prefill {prefill:.3g}, decode {decode:.3g}"


def test_mla_with_attention_biases(tmp_path: Path) -> None:
    """attention_bias true: q_a, kv_a and o_proj biases (o_proj's survives the absorption)."""

    def biases(t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(9)
        for name in [n for n in list(t) if n.endswith(("q_a_proj.weight", "kv_a_proj_with_mqa."
                                                       "weight", "o_proj.weight"))]:  # fmt: skip
            bias = name.removesuffix("weight") + "bias"
            t[bias] = rng.normal(0, 0.3, (t[name].shape[0],)).astype(np.float32)
        return t

    prefill, decode = _mla_variant_kl(
        tmp_path, "glm4_moe_lite", "lite_bias", {"attention_bias": True}, tensors=biases
    )
    assert prefill < 1e-6 and decode < 1e-6, f"KL prefill {prefill:.3g}, decode {decode:.3g}"


def test_mla_wide_fixture_with_unscaled_rope(tmp_path: Path) -> None:
    """glm4_moe_lite-wide (grouped routing, every layer MoE) without its YaRN, which the
    ONNX converter refuses."""
    rope = {"rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"}}
    prefill, decode = _mla_variant_kl(tmp_path, "glm4_moe_lite-wide", "lite_wide_plain", rope)
    assert prefill < 1e-6 and decode < 1e-6, f"KL prefill {prefill:.3g}, decode {decode:.3g}"


def test_glm_moe_dsa_greedy_text_matches_transformers(tmp_path: Path) -> None:
    """`edgeglm run --backend onnx` (the real CLI and cache) past index_topk tokens."""
    from helpers import edgeglm
    from tokenizers import Tokenizer

    src = make_variant(
        tmp_path,
        "glm_moe_dsa",
        "glm_moe_dsa_topk_onnx",
        {"index_topk": 16, "index_n_heads": 16},
        tensors=_more_index_heads(16),
    )
    out = convert(src, tmp_path / "out", "fp32").output
    prompt = load_reference(HF_FIXTURES / "glm_moe_dsa")[2][:200]
    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    ids = list(tok.encode(prompt, add_special_tokens=False).ids)
    eos = {1012, 1019, 1021}
    model = transformers.AutoModelForCausalLM.from_pretrained(
        src, dtype=torch.float32, attn_implementation="eager"
    )
    new: list[int] = []
    with torch.no_grad():
        for _ in range(24):  # no cache: every step recomputes the whole text's top-k
            nxt = int(model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax())
            if nxt in eos:
                break
            new.append(nxt)
    assert len(ids) > 16
    run = edgeglm("run", str(out), "--backend", "onnx", "--raw", "-p", prompt, "-n", "24",
                  "--temp", "0", "--repeat-penalty", "1", "--json", cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["text"] == tok.decode(new, skip_special_tokens=False)
