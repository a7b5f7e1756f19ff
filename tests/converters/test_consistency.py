"""The one check of a checkpoint against its config (converters/consistency.py),
for every GGUF family: what it requires is exactly what the real fixture
checkpoints hold, each missing tensor is named, non-float weights are refused,
and an absurd layer count is refused before the ONNX builder sees it."""

from __future__ import annotations

import json
import resource
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import HF_FIXTURES, fixture_names, write_safetensors

from edgeglm.checkpoint.hf import HFCheckpoint
from edgeglm.converters.consistency import check_checkpoint
from edgeglm.converters.gguf.convert import convert as gguf_convert
from edgeglm.converters.gguf.registry import family_for
from edgeglm.converters.layout import MTP_OPTIONAL
from edgeglm.converters.onnx import convert as onnx_convert
from edgeglm.errors import CheckpointError

CHATGLM_CONFIG = {
    "architectures": ["ChatGLMModel"],
    "num_layers": 2,
    "hidden_size": 8,
    "ffn_hidden_size": 16,
    "num_attention_heads": 2,
    "padded_vocab_size": 32,
    "seq_length": 64,
    "add_qkv_bias": True,
}
CHATGLM_BLOCK = (
    "input_layernorm.weight",
    "self_attention.query_key_value.weight",
    "self_attention.query_key_value.bias",
    "self_attention.dense.weight",
    "post_attention_layernorm.weight",
    "mlp.dense_h_to_4h.weight",
    "mlp.dense_4h_to_h.weight",
)
CHATGLM_TENSORS = [
    "transformer.embedding.word_embeddings.weight",
    "transformer.encoder.final_layernorm.weight",
    "transformer.output_layer.weight",
    "transformer.encoder.layers.0.rotary_pos_emb.inv_freq",
    *(f"transformer.encoder.layers.{i}.{p}" for i in range(2) for p in CHATGLM_BLOCK),
]


def _skeleton(
    root: Path, config: dict[str, object], names: list[str], dtypes: dict[str, str] | None = None
) -> Path:
    """A checkpoint with these tensor names and no data: all the check reads is the header."""
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps(config))
    empty = np.zeros((0,), np.float32)
    write_safetensors(root / "model.safetensors", dict.fromkeys(names, empty))
    if dtypes:  # same zero bytes, another dtype (of at most 3 letters) in the header
        raw = (root / "model.safetensors").read_bytes()
        for name, dtype in dtypes.items():
            entry = f'"{name}": {{"dtype": "F32"'.encode()
            raw = raw.replace(entry, f'"{name}": {{"dtype": "{dtype}"'.encode().ljust(len(entry)))
        (root / "model.safetensors").write_bytes(raw)
    return root


def _families() -> list[tuple[str, dict[str, object], list[str]]]:
    out = [("chatglm", CHATGLM_CONFIG, CHATGLM_TENSORS)]
    for name in fixture_names():
        ckpt = HFCheckpoint(HF_FIXTURES / name)
        out.append((name, ckpt.config, list(ckpt)))
    return out


FAMILIES = {name: (cfg, names) for name, cfg, names in _families()}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_required_is_exactly_what_a_real_checkpoint_holds(name: str, tmp_path: Path) -> None:
    cfg, names = FAMILIES[name]
    fam = family_for(str(cfg["architectures"][0]))(  # type: ignore[index]
        HFCheckpoint(_skeleton(tmp_path / name, cfg, names))
    )
    required = fam.required_tensors()
    assert len(set(required)) == len(required) and set(required) <= set(names)
    optional = {n for n in names if n.endswith((*fam.ignored_suffixes, *MTP_OPTIONAL))}
    assert set(names) - set(required) == optional
    check_checkpoint(fam.ckpt)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_missing_tensor_is_named(name: str, tmp_path: Path) -> None:
    """Each required tensor in turn (experts and NextN blocks included)."""
    cfg, names = FAMILIES[name]
    arch = str(cfg["architectures"][0])  # type: ignore[index]
    required = family_for(arch)(HFCheckpoint(_skeleton(tmp_path / "all", cfg, names)))
    for i, missing in enumerate(required.required_tensors()):
        root = _skeleton(tmp_path / str(i), cfg, [n for n in names if n != missing])
        with pytest.raises(CheckpointError) as e:
            check_checkpoint(HFCheckpoint(root))
        assert f"'{missing}' is missing" in str(e.value)
        shutil.rmtree(root)


def test_a_nextn_block_is_checked_only_when_present(tmp_path: Path) -> None:
    cfg, names = FAMILIES["glm4_moe"]
    assert cfg["num_nextn_predict_layers"] == 1
    trunk = [n for n in names if not n.startswith("model.layers.2.")]
    check_checkpoint(HFCheckpoint(_skeleton(tmp_path / "trunk", cfg, trunk)))
    partial = [n for n in names if n != "model.layers.2.mlp.experts.3.down_proj.weight"]
    with pytest.raises(CheckpointError, match=r"experts\.3\.down_proj\.weight' is missing"):
        check_checkpoint(HFCheckpoint(_skeleton(tmp_path / "partial", cfg, partial)))


@pytest.mark.parametrize("dtype", ["I16", "I32", "U8", "I8", "F64"])
def test_weights_must_be_float(dtype: str, tmp_path: Path) -> None:
    cfg, names = FAMILIES["glm"]
    target = "model.layers.1.mlp.down_proj.weight"
    root = _skeleton(tmp_path / "m", cfg, names, {target: dtype})
    with pytest.raises(CheckpointError, match=rf"tensor '{target}' is stored as {dtype}"):
        check_checkpoint(HFCheckpoint(root))


def test_tensors_no_converter_reads_may_be_any_dtype(tmp_path: Path) -> None:
    inv_freq = "transformer.encoder.layers.0.rotary_pos_emb.inv_freq"
    root = _skeleton(tmp_path / "m", CHATGLM_CONFIG, CHATGLM_TENSORS, {inv_freq: "I64"})
    check_checkpoint(HFCheckpoint(root))


def _absurd(tmp_path: Path, src: str) -> Path:
    root = Path(shutil.copytree(HF_FIXTURES / src, tmp_path / "src"))
    cfg = json.loads((root / "config.json").read_text())
    cfg["num_hidden_layers"] = 10**9
    (root / "config.json").write_text(json.dumps(cfg))
    return root


@pytest.mark.parametrize("fmt", ["gguf", "onnx"])
def test_an_absurd_layer_count_is_refused_before_anything_is_built(
    fmt: str, tmp_path: Path
) -> None:
    src = _absurd(tmp_path, "glm4")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with pytest.raises(CheckpointError, match="describes 1000000000 blocks"):
        if fmt == "onnx":
            onnx_convert(src, tmp_path / "out", "fp32")
        else:
            gguf_convert(src, tmp_path / "out.gguf", "F16")
    grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak
    assert grew < 512 * 1024, f"peak memory grew by {grew} KiB"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
