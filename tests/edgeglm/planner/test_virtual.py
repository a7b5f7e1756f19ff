"""Config-only models must describe exactly the tensors real checkpoints have."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import HF_FIXTURES, fixture_names

from edgeglm.checkpoint.hf import HFCheckpoint
from edgeglm.errors import CheckpointError, UnsupportedArchitectureError
from edgeglm.planner.sources import open_model
from edgeglm.planner.virtual import synthesize


@pytest.mark.parametrize("name", fixture_names())
def test_synthesized_tensors_match_the_real_checkpoint(name: str) -> None:
    ckpt = HFCheckpoint(HF_FIXTURES / name)
    real = {n: ckpt.info(n).shape for n in ckpt if not n.endswith("rotary_emb.inv_freq")}
    assert synthesize(ckpt.config) == real


@pytest.mark.parametrize("name", fixture_names())
def test_config_only_sizes_equal_checkpoint_sizes(name: str, tmp_path: Path) -> None:
    """The same converter planning runs on both, so every GGUF tensor agrees."""
    real = open_model(str(HF_FIXTURES / name)).facts("Q4_K_M")
    (tmp_path / "config.json").write_text((HF_FIXTURES / name / "config.json").read_text())
    virtual = open_model(str(tmp_path)).facts("Q4_K_M")
    assert virtual.source == "config" and real.source == "hf"
    key = {t.name: (t.nbytes, t.qtype, t.category) for t in real.tensors}
    assert {t.name: (t.nbytes, t.qtype, t.category) for t in virtual.tensors} == key
    assert (virtual.n_layer, virtual.n_head_kv, virtual.n_embd_head_k) == (
        real.n_layer,
        real.n_head_kv,
        real.n_embd_head_k,
    )


def test_unknown_architecture_lists_the_known_ones(tmp_path: Path) -> None:
    cfg = tmp_path / "llama.json"
    cfg.write_text('{"architectures": ["LlamaForCausalLM"], "hidden_size": 8}')
    with pytest.raises(UnsupportedArchitectureError, match="Glm4ForCausalLM"):
        open_model(str(cfg))


@pytest.mark.parametrize("layers", [10**9, 0, -3])
def test_an_absurd_layer_count_is_refused_not_expanded(layers: int, tmp_path: Path) -> None:
    import json
    import tracemalloc

    cfg = json.loads((HF_FIXTURES / "glm4" / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(cfg | {"num_hidden_layers": layers}))
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match="blocks"):
            open_model(str(tmp_path / "config.json"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20
