"""The GGUF converter against the reference: transformers' logits and tokenizer,
measured through the real llama.cpp (in a child process, as the CLI does)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader
from helpers import HF_FIXTURES, fixture_names, llama_probe, load_reference

from edgeglm.backends.isolated import run_isolated
from edgeglm.converters.gguf.convert import convert
from edgeglm.converters.gguf.registry import supported_architectures
from edgeglm.metrics import kl_divergence

FIXTURES = fixture_names()


def test_every_registered_architecture_has_a_fixture() -> None:
    covered = {
        json.loads((HF_FIXTURES / n / "config.json").read_text())["architectures"][0]
        for n in FIXTURES
    }
    # The original ChatGLM layout is derived from the `glm` fixture in test_chatglm.py.
    covered |= {"ChatGLMModel", "ChatGLMForConditionalGeneration"}
    assert set(supported_architectures()) <= covered


@pytest.fixture(scope="module")
def f32_ggufs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("f32")
    return {n: convert(HF_FIXTURES / n, out / f"{n}.gguf", "F32").output for n in FIXTURES}


def dsa_top_k(name: str) -> int | None:
    """index_topk of a fixture whose DSA indexer selects keys on the reference text."""
    cfg = json.loads((HF_FIXTURES / name / "config.json").read_text())
    top_k = cfg.get("index_topk")
    tokens, _, _ = load_reference(HF_FIXTURES / name)
    return int(top_k) if top_k is not None and top_k < len(tokens) else None


def kv_type(name: str) -> str:
    """llama.cpp's default f16 KV cache, except where a DSA indexer selects: its
    top-k is a hard choice, and f16 keys move index scores by up to 2e-3, more
    than the fixture's smallest top-k margin (make_fixtures.MIN_INDEX_GAP), so
    an f16 cache flips a few selections (mean KL 1.8e-3 past index_topk)."""
    return "f16" if dsa_top_k(name) is None else "f32"


@pytest.mark.parametrize("name", FIXTURES)
def test_f32_reproduces_transformers_logits(name: str, f32_ggufs: dict[str, Path]) -> None:
    tokens, ref_logits, text = load_reference(HF_FIXTURES / name)
    probe = run_isolated(llama_probe, str(f32_ggufs[name]), tokens, text, kv_type(name))
    kl = kl_divergence(ref_logits, probe["logits"])
    assert kl.mean() < 1e-5, f"{name}: mean KL {kl.mean():.3g}"
    # Same greedy token everywhere, except where the reference's top two are
    # closer than the two implementations' float noise (llama.cpp keeps its KV
    # cache in f16, so logits differ in the 2nd-3rd decimal).
    noise = float(np.abs(probe["logits"] - ref_logits).max())
    ours, ref = probe["logits"].argmax(-1), ref_logits.argmax(-1)
    rows = np.flatnonzero(ours != ref)
    gaps = ref_logits[rows, ref[rows]] - ref_logits[rows, ours[rows]]
    assert (gaps <= 2 * noise).all(), f"{name}: greedy token differs at {rows[gaps > 2 * noise]}"
    assert noise < 0.1, f"{name}: logits differ by up to {noise}"


@pytest.mark.parametrize("name", FIXTURES)
def test_tokenization_matches_hugging_face(name: str, f32_ggufs: dict[str, Path]) -> None:
    tokens, _, text = load_reference(HF_FIXTURES / name)
    probe = run_isolated(llama_probe, str(f32_ggufs[name]), tokens[:4], text)
    assert probe["tokens"] == tokens


@pytest.mark.parametrize("name", FIXTURES)
def test_chat_metadata(name: str, f32_ggufs: dict[str, Path]) -> None:
    r = GGUFReader(f32_ggufs[name])
    fields = {f.name: f for f in r.fields.values()}
    tok_field = fields["tokenizer.ggml.tokens"]
    tokens = [str(bytes(tok_field.parts[i]), "utf-8") for i in tok_field.data]

    def tok(key: str) -> str:
        return tokens[int(fields[key].contents())]

    assert fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert fields["tokenizer.ggml.pre"].contents() in ("glm4", "chatglm-bpe")
    assert tok("tokenizer.ggml.eos_token_id") == "<|endoftext|>"
    assert tok("tokenizer.ggml.eot_token_id") == "<|user|>"
    assert tok("tokenizer.ggml.eom_token_id") == "<|observation|>"
    tcfg = json.loads((HF_FIXTURES / name / "tokenizer_config.json").read_text())
    assert fields["tokenizer.chat_template"].contents() == tcfg["chat_template"]
    cfg = json.loads((HF_FIXTURES / name / "config.json").read_text())
    arch = fields["general.architecture"].contents()
    assert fields[f"{arch}.context_length"].contents() == cfg["max_position_embeddings"]


def test_glm4_moe_keeps_the_mtp_block_as_llama_cpp_expects(f32_ggufs: dict[str, Path]) -> None:
    r = GGUFReader(f32_ggufs["glm4_moe"])
    names = {t.name for t in r.tensors}
    cfg = json.loads((HF_FIXTURES / "glm4_moe" / "config.json").read_text())
    mtp = cfg["num_hidden_layers"]  # the NextN block comes after the trunk
    expected = (
        "nextn.eh_proj.weight",
        "nextn.enorm.weight",
        "nextn.hnorm.weight",
        "ffn_gate_exps.weight",
    )
    assert {f"blk.{mtp}.{leaf}" for leaf in expected} <= names
    fields = {f.name: f for f in r.fields.values()}
    assert fields["glm4moe.nextn_predict_layers"].contents() == 1
    assert fields["glm4moe.block_count"].contents() == mtp + 1


def test_glm5_sparse_attention_is_exact_past_index_topk(f32_ggufs: dict[str, Path]) -> None:
    # GLM-5's DSA: past index_topk tokens each query attends to the index_topk keys
    # its lightning indexer scores highest. The fixture's index scores have no
    # near-ties at the top-k boundary, so llama.cpp must select the same keys as
    # transformers and agree exactly there too (it does: KL 7e-11).
    name = "glm_moe_dsa_sparse"
    top_k = dsa_top_k(name)
    assert top_k is not None, f"{name}: index_topk must be below the text's length"
    tokens, ref_logits, text = load_reference(HF_FIXTURES / name)
    probe = run_isolated(llama_probe, str(f32_ggufs[name]), tokens, text, "f32")
    kl = kl_divergence(ref_logits, probe["logits"])
    assert kl[:top_k].max() < 1e-5, f"dense part: KL up to {kl[:top_k].max():.3g}"
    assert kl[top_k:].mean() < 1e-5, f"sparse part: mean KL {kl[top_k:].mean():.3g}"
    assert kl[top_k:].max() < 1e-4, f"sparse part: KL up to {kl[top_k:].max():.3g}"
