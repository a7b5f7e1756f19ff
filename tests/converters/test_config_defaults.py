"""A config.json that leaves out what transformers fills in converts to the same model.

Each fixture is copied with every key whose value is its class's default left out
(as transformers 5's save_pretrained leaves out first_k_dense_replace for GLM-4.7-Flash,
whose class has none, or as a hand-written config may), and must convert to the very
GGUF file and ONNX graph its explicit config gives; with torch, transformers run on
the stripped config is the reference. A layer pattern llama.cpp cannot express (MoE,
then dense) is refused by the GGUF converter and converted by the ONNX one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gguf import GGUFReader
from helpers import (
    HF_FIXTURES,
    edgeglm,
    gguf_tensors,
    llama_probe,
    load_reference,
    write_safetensors,
)

from edgeglm.backends.isolated import run_isolated
from edgeglm.checkpoint.config import indexer_types, mlp_layer_types, model_type_of, with_defaults
from edgeglm.checkpoint.defaults import MLP_SELECTION, TRANSFORMERS_DEFAULTS
from edgeglm.checkpoint.hf import HFCheckpoint
from edgeglm.converters.gguf.convert import convert as convert_gguf
from edgeglm.converters.onnx import convert as convert_onnx
from edgeglm.errors import ExitCode, UnsupportedArchitectureError
from edgeglm.metrics import kl_divergence

ROPE_KEYS = ("rope_theta", "partial_rotary_factor")
# What stripping must take out of each base fixture, or the test proves little.
MUST_STRIP = {
    "glm": {"rms_norm_eps", "partial_rotary_factor", "rope_theta", "attention_bias"},
    "glm4_moe": {"first_k_dense_replace", "n_shared_experts", "n_group", "norm_topk_prob",
                 "partial_rotary_factor", "num_nextn_predict_layers", "rms_norm_eps"},
    "glm4_moe_lite": {"first_k_dense_replace", "mlp_layer_types", "routed_scaling_factor",
                      "n_shared_experts", "rope_interleave", "attention_bias", "norm_topk_prob"},
    "glm_moe_dsa": {"first_k_dense_replace", "routed_scaling_factor", "indexer_types",
                    "layer_types", "n_shared_experts", "topk_group"},
    "glm4_moe_lite-wide": {"first_k_dense_replace"},
}  # fmt: skip
STRIPPED = [
    "glm", "glm4", "glm4_moe", "glm4_moe_lite", "glm_moe_dsa",
    "glm4_moe-wide", "glm4_moe_lite-wide", "glm_moe_dsa-wide",
]  # fmt: skip


def _config(name: str) -> dict[str, Any]:
    return dict(json.loads((HF_FIXTURES / name / "config.json").read_text()))


def _scaled_rope(cfg: dict[str, Any]) -> bool:
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    return bool(rope.get("rope_type", rope.get("type", "default")) != "default")


ONNX_STRIPPED = [n for n in STRIPPED if not _scaled_rope(_config(n))]  # ONNX refuses YaRN


def strip_defaults(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` without the keys transformers would fill with the very same value."""
    model_type = model_type_of(cfg)
    assert model_type is not None
    out = dict(cfg)
    rope = dict(out.get("rope_parameters") or {})
    for key, value in TRANSFORMERS_DEFAULTS[model_type].items():
        if key in ROPE_KEYS and rope.get(key) == value:
            del rope[key]
        if key in out and out[key] == value:
            del out[key]
    if rope.get("rope_type") == "default":
        del rope["rope_type"]
    if rope:
        out["rope_parameters"] = rope
    else:
        out.pop("rope_parameters", None)
    if out.get("rope_scaling", 0) is None:
        del out["rope_scaling"]
    n_layer = int(with_defaults(out)["num_hidden_layers"])
    if MLP_SELECTION.get(model_type) == "types":
        # Read only to fill an absent mlp_layer_types (and never by glm4_moe_lite).
        if model_type == "glm4_moe_lite" or "mlp_layer_types" in out:
            out.pop("first_k_dense_replace", None)
        explicit = out.pop("mlp_layer_types", None)
        if explicit is not None and mlp_layer_types(with_defaults(out), n_layer, "") != explicit:
            out["mlp_layer_types"] = explicit
    if model_type == "glm_moe_dsa":
        explicit = out.pop("indexer_types", None)
        if explicit is not None and indexer_types(out, n_layer, "") != explicit:
            out["indexer_types"] = explicit
        if out.get("layer_types") == ["indexed_attention"] * n_layer:
            del out["layer_types"]
    return out


def stripped(tmp: Path, name: str) -> Path:
    """The fixture with its config stripped, in a folder of the same name (the GGUF's
    general.name comes from it)."""
    d = Path(shutil.copytree(HF_FIXTURES / name, tmp / "src" / name))
    cfg = strip_defaults(_config(name))
    assert MUST_STRIP.get(name, set()) <= set(_config(name)) - set(cfg), name
    (d / "config.json").write_text(json.dumps(cfg, indent=2))
    return d


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _gguf(path: Path) -> tuple[list[tuple[str, Any]], list[tuple[str, tuple[str, bytes]]]]:
    """Metadata (but the source folder's URL) and tensors (type and bytes), in order."""
    r = GGUFReader(path)
    meta = [(k, f.contents()) for k, f in r.fields.items() if k != "general.source.url"]
    return meta, list(gguf_tensors(path).items())


@pytest.mark.parametrize("name", STRIPPED)
def test_gguf_of_a_stripped_config_is_the_explicit_ones(name: str, tmp_path: Path) -> None:
    ours = convert_gguf(stripped(tmp_path, name), tmp_path / "stripped.gguf", "F32").output
    explicit = convert_gguf(HF_FIXTURES / name, tmp_path / "explicit.gguf", "F32").output
    assert _gguf(ours) == _gguf(explicit)


@pytest.mark.parametrize("name", ONNX_STRIPPED)
def test_onnx_of_a_stripped_config_is_the_explicit_ones(name: str, tmp_path: Path) -> None:
    ours = convert_onnx(stripped(tmp_path, name), tmp_path / "stripped", "fp32").output
    explicit = convert_onnx(HF_FIXTURES / name, tmp_path / "explicit", "fp32").output
    assert _files(ours) == _files(explicit)


def test_glm4_moe_ignores_mlp_layer_types_as_transformers_does(tmp_path: Path) -> None:
    """Glm4MoeConfig has no mlp_layer_types: its MoE blocks start at first_k_dense_replace."""
    d = Path(shutil.copytree(HF_FIXTURES / "glm4_moe", tmp_path / "glm4_moe"))
    cfg = _config("glm4_moe") | {"mlp_layer_types": ["sparse", "dense"]}
    (d / "config.json").write_text(json.dumps(cfg))
    ours = convert_gguf(d, tmp_path / "ours.gguf", "F32").output
    explicit = convert_gguf(HF_FIXTURES / "glm4_moe", tmp_path / "explicit.gguf", "F32").output
    assert _gguf(ours) == _gguf(explicit)


def moe_then_dense(tmp: Path, base: str) -> Path:
    """``base`` (layer 0 dense, layer 1 MoE) with the two layers' MLPs swapped, and
    mlp_layer_types saying so: a pattern transformers builds, llama.cpp cannot."""
    assert _config(base)["mlp_layer_types"] == ["dense", "sparse"]
    d = Path(shutil.copytree(HF_FIXTURES / base, tmp / f"{base}-moe-then-dense"))
    (d / "reference.npz").unlink()
    cfg = _config(base) | {"mlp_layer_types": ["sparse", "dense"]}
    cfg.pop("first_k_dense_replace", None)
    (d / "config.json").write_text(json.dumps(cfg, indent=2))
    swap = {f"model.layers.{i}.mlp.": f"model.layers.{1 - i}.mlp." for i in (0, 1)}
    ckpt = HFCheckpoint(HF_FIXTURES / base)
    tensors = {}
    for n in ckpt:
        prefix = next((p for p in swap if n.startswith(p)), None)
        new = swap[prefix] + n.removeprefix(prefix) if prefix else n
        tensors[new] = np.asarray(ckpt.load(n), dtype=np.float32)
    ckpt.close()
    write_safetensors(d / "model.safetensors", tensors)
    return d


def test_gguf_refuses_moe_then_dense_in_one_line(tmp_path: Path) -> None:
    model = moe_then_dense(tmp_path, "glm4_moe_lite")
    with pytest.raises(
        UnsupportedArchitectureError,
        match=r"mlp_layer_types \['sparse', 'dense'\] has a dense layer after a MoE one; "
        r"llama.cpp runs only dense layers first, then MoE \(the ONNX converter supports",
    ):
        convert_gguf(model, tmp_path / "m.gguf", "F32")
    assert not (tmp_path / "m.gguf").exists()
    r = edgeglm("convert", str(model), "-o", str(tmp_path / "o.gguf"), "-q", "F32",
                cwd=tmp_path, env={**os.environ, "COLUMNS": "400"})  # fmt: skip
    assert r.returncode == ExitCode.BAD_CHECKPOINT, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert "has a dense layer after a MoE one" in r.stderr
    assert not (tmp_path / "o.gguf").exists()


# -- against transformers (torch) ---------------------------------------------------------


def _transformers_logits(folder: Path, tokens: list[int]) -> np.ndarray:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager"
    )
    with torch.no_grad():
        out = model(input_ids=torch.tensor([tokens])).logits[0]
    return np.asarray(out.float().numpy())


def _onnx_logits(folder: Path, tokens: list[int]) -> np.ndarray:
    from edgeglm.backends.onnx import OnnxModel

    m = OnnxModel(folder, n_threads=1)
    try:
        return m.score(tokens)
    finally:
        m.close()


@pytest.mark.parametrize("name", STRIPPED)
def test_stripped_config_matches_transformers(name: str, tmp_path: Path) -> None:
    """transformers fills the stripped keys with what they held (the stored reference),
    and both converters reproduce it: F32 GGUF through llama.cpp, fp32 ONNX."""
    src = stripped(tmp_path, name)
    tokens, stored, text = load_reference(HF_FIXTURES / name)
    ref = _transformers_logits(src, tokens)
    assert np.abs(ref - stored).max() < 1e-4  # stripping changed nothing transformers runs
    gguf = convert_gguf(src, tmp_path / "m.gguf", "F32").output
    kl = kl_divergence(ref, run_isolated(llama_probe, str(gguf), tokens, text, "f32")["logits"])
    assert kl.mean() < 1e-5, f"GGUF: mean KL {kl.mean():.3g}"
    if name in ONNX_STRIPPED:
        onnx = convert_onnx(src, tmp_path / "o", "fp32").output
        kl = kl_divergence(ref, _onnx_logits(onnx, tokens))
        assert kl.mean() < 1e-5, f"ONNX: mean KL {kl.mean():.3g}"


@pytest.mark.parametrize("base", ["glm4_moe_lite", "glm_moe_dsa"])
def test_onnx_converts_moe_then_dense_as_transformers_runs_it(base: str, tmp_path: Path) -> None:
    src = moe_then_dense(tmp_path, base)
    tokens = load_reference(HF_FIXTURES / base)[0]
    ref = _transformers_logits(src, tokens)
    ours = _onnx_logits(convert_onnx(src, tmp_path / "o", "fp32").output, tokens)
    kl = kl_divergence(ref, ours)
    assert kl.max() < 1e-5, f"KL up to {kl.max():.3g}"


def test_yarn_without_original_context_uses_the_trained_one(tmp_path: Path) -> None:
    """transformers' standardize_rope_params sets a YaRN rope's absent
    original_max_position_embeddings to max_position_embeddings; so does the GGUF,
    and it runs as transformers does."""
    d = Path(shutil.copytree(HF_FIXTURES / "glm4_moe_lite-wide", tmp_path / "yarn"))
    cfg = _config("glm4_moe_lite-wide")
    assert cfg["rope_parameters"].pop("original_max_position_embeddings") != 2048
    (d / "config.json").write_text(json.dumps(cfg, indent=2))
    gguf = convert_gguf(d, tmp_path / "m.gguf", "F32").output
    meta = dict(_gguf(gguf)[0])
    assert meta["deepseek2.rope.scaling.original_context_length"] == 2048
    assert meta["deepseek2.context_length"] == cfg["max_position_embeddings"] == 2048
    tokens, _, text = load_reference(HF_FIXTURES / "glm4_moe_lite-wide")
    ref = _transformers_logits(d, tokens)
    kl = kl_divergence(ref, run_isolated(llama_probe, str(gguf), tokens, text, "f32")["logits"])
    assert kl.mean() < 1e-5, f"mean KL {kl.mean():.3g}"
