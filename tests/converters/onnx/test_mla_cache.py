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
from edgeglm.metrics import kl_divergence

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
    attrs = {n.name: {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
             for n in graph.node}  # fmt: skip
    for i in range(dec["num_hidden_layers"]):
        # GQA keeps the cache (one head); the 4 query heads attend to it in an If: a prompt
        # by GQA over the one KV head, a step by one MatMul over the cache
        gqa = attrs[f"/model/layers.{i}/attn/gqa/GroupQueryAttention"]
        assert (gqa["num_heads"], gqa["kv_num_heads"]) == (1, 1)
        branches = attrs[f"/model/layers.{i}/attn/attend/If"]
        prompt = {n.op_type: n for n in branches["then_branch"].node}
        step = {n.op_type: n for n in branches["else_branch"].node}
        heads = {a.name: onnx.helper.get_attribute_value(a)
                 for a in prompt["GroupQueryAttention"].attribute}  # fmt: skip
        assert (heads["num_heads"], heads["kv_num_heads"]) == (4, 1)
        assert abs(heads["scale"] - (128 + 64) ** -0.5) < 1e-6  # (nope + rope)^-0.5, unchanged
        assert {"RotaryEmbedding", "MatMul", "Softmax"} <= set(step)

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


@pytest.mark.parametrize(
    ("name", "quant"),
    [("glm4_moe_lite", "fp32"), ("glm_moe_dsa_sparse", "fp32"), ("glm4_moe_lite", "fp16"),
     ("glm_moe_dsa", "fp16")],
)  # fmt: skip
def test_chunks_after_a_prompt_match_transformers(
    name: str, quant: str, onnx_model: ModelFor
) -> None:
    """Several tokens at once after cached ones (the heads' MatMul attention, causal within
    the chunk; a prompt alone runs GQA): every chunk's last logits against transformers."""
    tokens, ref, _ = load_reference(HF_FIXTURES / name)
    m = OnnxModel(onnx_model(name, quant), n_threads=1)
    try:
        cache, got, at = m._new_cache(len(tokens)), [], []
        for start in range(0, 200, 7):
            got.append(m._step(tokens[start : start + 7], start, cache))
            at.append(min(start + 7, len(tokens)) - 1)
    finally:
        m.close()
    kl = kl_divergence(ref[at], np.stack(got))
    if quant == "fp32":  # MoE (and DSA's top-8) near-ties: the median, as the fixture tests
        assert np.median(kl) < 1e-6 and (kl > 1e-6).mean() <= 0.05, kl.max()
    else:
        assert np.median(kl) < 1e-4, np.median(kl)
