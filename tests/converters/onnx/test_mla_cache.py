"""The MLA exports cache the latent, as llama.cpp and transformers do: one KV head of
kv_lora + rope channels per token and layer (GLM-5: kv_lora + its indexer keys' width),
read from the exported graph, its genai_config and the cache the backend allocates,
and compared value for value with the latent transformers caches."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import HF_FIXTURES, load_reference

from edgeglm.backends.onnx import OnnxModel

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ModelFor = Callable[[str, str], Path]


def _latent_width(name: str) -> tuple[int, int, int]:
    """(rope, kv_lora, channels before the latent in v) from the fixture's config."""
    cfg = json.loads((HF_FIXTURES / name / "config.json").read_text())
    rope, lora = int(cfg["qk_rope_head_dim"]), int(cfg["kv_lora_rank"])
    return rope, lora, max(rope, int(cfg.get("index_head_dim", 0)))


def _dims(io: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value or d.dim_param for d in io.type.tensor_type.shape.dim]


@pytest.mark.parametrize("quant", ["fp32", "int4"])
@pytest.mark.parametrize("name", ["glm4_moe_lite", "glm_moe_dsa"])
def test_cache_is_one_latent_head(name: str, quant: str, onnx_model: ModelFor) -> None:
    rope, lora, lead = _latent_width(name)
    width = lead + lora  # 320 (GLM-4.7-Flash's shape: 576); DSA 384 (GLM-5's: 640)
    out = onnx_model(name, quant)
    dec = json.loads((out / "genai_config.json").read_text())["model"]["decoder"]
    assert (dec["num_attention_heads"], dec["num_key_value_heads"], dec["head_size"]) == (
        4,
        1,
        width,
    )
    graph = onnx.load(str(out / "model.onnx")).graph
    caches = [io for io in [*graph.input, *graph.output] if io.name.startswith(("past", "present"))]
    assert len(caches) == 4 * dec["num_hidden_layers"]
    for io in caches:
        assert _dims(io)[1::2] == [1, width], io.name
    for node in (n for n in graph.node if n.op_type == "GroupQueryAttention"):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert (attrs["num_heads"], attrs["kv_num_heads"]) == (4, 1)
        assert abs(attrs["scale"] - (128 + 64) ** -0.5) < 1e-6  # (nope + rope)^-0.5, unchanged

    m = OnnxModel(out, n_threads=1)
    try:
        cache = m._new_cache(64)
        assert [c.shape() for c in cache] == [[1, 1, 64, width]] * (2 * m.n_layer)
        tokens = load_reference(HF_FIXTURES / name)[0][:40]
        m._step(tokens, 0, cache)
        ours = [np.asarray(c.numpy())[0, 0, : len(tokens)] for c in cache]
    finally:
        m.close()
    if quant != "fp32":
        return
    model = transformers.AutoModelForCausalLM.from_pretrained(
        HF_FIXTURES / name, dtype=torch.float32, attn_implementation="eager"
    )
    with torch.no_grad():
        layers = model(input_ids=torch.tensor([tokens]), use_cache=True).past_key_values.layers
    for i, layer in enumerate(layers):
        k, v = ours[2 * i], ours[2 * i + 1]
        latent = layer.keys[0, 0].numpy()  # transformers caches the normed latent as keys...
        k_rot = layer.values[0, 0].numpy()  # ... and the rotated k_rot as values
        np.testing.assert_allclose(k[:, rope : rope + lora], latent, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(v[:, lead:], latent, rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(k[:, rope + lora :], 0)
        np.testing.assert_allclose(_halves(k[:, :rope]), k_rot, rtol=1e-4, atol=1e-4)
        if lead > rope:  # GLM-5: the indexer keys transformers keeps apart, in v's spare room
            keys = np.concatenate([_halves(v[:, :rope]), v[:, rope:lead]], axis=-1)
            np.testing.assert_allclose(keys, layer.indexer_keys[0].numpy(), rtol=1e-4, atol=1e-4)


def _halves(x: np.ndarray) -> np.ndarray:
    """Rotary channels as transformers lays them out: ORT rotates adjacent pairs in place,
    transformers puts the pairs' first and second members in two halves (the same q.k)."""
    return np.concatenate([x[:, 0::2], x[:, 1::2]], axis=-1)
