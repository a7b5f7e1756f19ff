"""Model facts read from a GGUF agree with those computed from its checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import HF_FIXTURES

from edgeglm.converters.gguf.convert import convert
from edgeglm.errors import CheckpointError, ModelNotFoundError
from edgeglm.planner.model import categorize
from edgeglm.planner.sources import open_model


@pytest.mark.parametrize("name", ["glm4", "glm4_moe", "glm4_moe_lite"])
def test_gguf_facts_match_the_checkpoint_they_came_from(name: str, tmp_path: Path) -> None:
    out = tmp_path / f"{name}.gguf"
    result = convert(HF_FIXTURES / name, out, "Q4_K_M")
    gguf = open_model(str(out)).facts()
    ckpt = open_model(str(HF_FIXTURES / name)).facts("Q4_K_M")
    assert gguf.quant == "Q4_K_M" and gguf.source == "gguf"
    assert gguf.file_bytes == ckpt.file_bytes
    assert gguf.file_bytes <= result.bytes  # the file adds metadata and alignment
    for field in (
        "architecture",
        "n_layer",
        "n_layer_all",
        "n_embd",
        "n_head",
        "n_head_kv",
        "n_embd_head_k",
        "n_embd_head_v",
        "kv_lora_rank",
        "n_expert",
        "n_expert_used",
        "n_ctx_train",
        "n_vocab",
    ):
        assert getattr(gguf, field) == getattr(ckpt, field), field
    assert gguf.bytes_by_category == ckpt.bytes_by_category


def test_moe_tensors_are_grouped_by_where_they_may_live() -> None:
    facts = open_model(str(HF_FIXTURES / "glm4_moe")).facts("Q4_K_M")
    cats = facts.bytes_by_category
    assert cats["routed_experts"] > 0 and cats["shared_experts"] > 0 and cats["attention"] > 0
    assert cats["dense_ffn"] > 0  # first_k_dense_replace = 1
    assert cats["mtp"] > 0 and facts.n_layer_all == facts.n_layer + 1
    assert facts.resident_bytes == facts.file_bytes - cats["mtp"]
    assert facts.active_bytes_per_token < facts.resident_bytes - cats["token_embd"]


@pytest.mark.parametrize(
    ("name", "category"),
    [
        ("token_embd.weight", "token_embd"),
        ("output.weight", "output"),
        ("blk.3.ffn_up_exps.weight", "routed_experts"),
        ("blk.3.ffn_down_shexp.weight", "shared_experts"),
        ("blk.3.ffn_gate_inp.weight", "router"),
        ("blk.0.ffn_up.weight", "dense_ffn"),
        ("blk.0.attn_kv_a_mqa.weight", "attention"),
        ("blk.0.indexer.attn_k.weight", "attention"),
        ("blk.0.post_ffw_norm.weight", "norms"),
        ("blk.9.attn_q.weight", "mtp"),
    ],
)
def test_categories(name: str, category: str) -> None:
    assert categorize(name, n_layer=9)[1] == category


def test_unusable_inputs_say_why(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        open_model(str(tmp_path / "missing.gguf"))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all")
    with pytest.raises(CheckpointError, match="not a GGUF file"):
        open_model(str(bad))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match=r"not a GGUF file, a config \.json"):
        open_model(str(tmp_path / "notes.txt"))
    (tmp_path / "empty").mkdir()  # exists, but is nothing EdgeGLM reads: exit 4, not 3
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        open_model(str(tmp_path / "empty"))
