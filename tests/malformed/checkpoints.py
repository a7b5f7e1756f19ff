"""Broken Hugging Face checkpoints, each a model folder made from a committed fixture.

``build_checkpoint_cases(folder)`` returns ``{case name: model folder}``.
Every case is a checkpoint EdgeGLM must refuse with exit code 4
(``EXPECTED_EXIT``: unreadable or inconsistent checkpoint) from every command
that takes a model, touching nothing: the safetensors cases are the checks
the safetensors library itself makes (safetensors/src/tensor.rs:
``read_metadata`` and ``Metadata::validate``), the index cases the ways a
``model.safetensors.index.json`` can point out of its folder, the config
cases a config.json the tensors disagree with. Files a case points at
outside its model folder are written beside it, under ``folder``.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers import HF_FIXTURES

EXPECTED_EXIT = 4
# The fixture files a model folder needs (not the test references beside them).
_MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
)

Header = dict[str, Any]


def read_safetensors(path: Path) -> tuple[Header, bytes]:
    """(JSON header, data section) of a well-formed file."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header: Header = json.loads(raw[8 : 8 + n])
    return header, raw[8 + n :]


def tensors_of(path: Path) -> dict[str, tuple[str, list[int], bytes]]:
    """name -> (dtype, shape, bytes), in file order, without __metadata__."""
    header, data = read_safetensors(path)
    header.pop("__metadata__", None)
    items = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    return {
        name: (e["dtype"], e["shape"], data[e["data_offsets"][0] : e["data_offsets"][1]])
        for name, e in items
    }


def write_tensors(
    path: Path, tensors: dict[str, tuple[str, list[int], bytes]], *, gap_after: str = ""
) -> None:
    """A tiled safetensors file; ``gap_after``: leave 8 unused bytes after that tensor."""
    header: Header = {}
    blobs, offset = [], 0
    for name, (dtype, shape, blob) in tensors.items():
        header[name] = {
            "dtype": dtype,
            "shape": shape,
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
        if name == gap_after:
            blobs.append(b"\0" * 8)
            offset += 8
    write_raw(path, json.dumps(header).encode(), b"".join(blobs))


def write_raw(path: Path, header: bytes, data: bytes) -> None:
    header += b" " * (-len(header) % 8)
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)


def copy_model(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for name in _MODEL_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
    return dst


def _edit_config(model: Path, **changes: Any) -> None:
    cfg = json.loads((model / "config.json").read_text())
    cfg.update(changes)
    (model / "config.json").write_text(json.dumps(cfg))


def _edit_tensors(
    model: Path, edit: Callable[[dict[str, tuple[str, list[int], bytes]]], None], **kw: str
) -> None:
    st = model / "model.safetensors"
    tensors = tensors_of(st)
    edit(tensors)
    write_tensors(st, tensors, **kw)


def _edit_header(model: Path, edit: Callable[[Header], None]) -> None:
    st = model / "model.safetensors"
    header, data = read_safetensors(st)
    edit(header)
    write_raw(st, json.dumps(header).encode(), data)


def _shard(model: Path) -> Path:
    """Split model.safetensors into two shards and an index; returns the second shard."""
    tensors = tensors_of(model / "model.safetensors")
    names = list(tensors)
    half = len(names) // 2
    parts = {
        "model-00001-of-00002.safetensors": names[:half],
        "model-00002-of-00002.safetensors": names[half:],
    }
    weight_map: dict[str, str] = {}
    for shard, members in parts.items():
        write_tensors(model / shard, {n: tensors[n] for n in members})
        weight_map |= dict.fromkeys(members, shard)
    (model / "model.safetensors").unlink()
    index = {"metadata": {}, "weight_map": weight_map}
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    return model / "model-00002-of-00002.safetensors"


def _point_index(model: Path, shard: Path, to: str) -> None:
    """The index names ``to`` instead of ``shard`` (whose tensors it lists)."""
    index_path = model / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"] = {k: to if v == shard.name else v for k, v in index["weight_map"].items()}
    index_path.write_text(json.dumps(index))


def build_checkpoint_cases(folder: Path) -> dict[str, Path]:
    """Every broken checkpoint, built under ``folder``; each must be refused with exit 4."""
    folder.mkdir(parents=True, exist_ok=True)
    dense, moe = HF_FIXTURES / "glm", HF_FIXTURES / "glm4_moe"
    cases: dict[str, Path] = {}

    def case(name: str, src: Path = dense) -> Path:
        cases[name] = copy_model(src, folder / name)
        return cases[name]

    # -- safetensors, as the library validates it ----------------------------------
    gap_after = "model.layers.0.mlp.down_proj.weight"
    _edit_tensors(case("gap_between_tensors"), lambda t: None, gap_after=gap_after)
    st = case("trailing_bytes") / "model.safetensors"
    st.write_bytes(st.read_bytes() + b"\0" * 16)

    def overlap(h: Header) -> None:
        h["model.layers.1.self_attn.k_proj.bias"]["data_offsets"] = h[
            "model.layers.0.self_attn.k_proj.bias"
        ]["data_offsets"]

    _edit_header(case("overlapping_tensors"), overlap)

    def offsets_from_one(h: Header) -> None:
        for e in h.values():
            if isinstance(e, dict) and "data_offsets" in e:
                e["data_offsets"] = [e["data_offsets"][0] + 1, e["data_offsets"][1] + 1]

    _edit_header(case("data_not_from_zero"), offsets_from_one)

    st = case("truncated_shard") / "model.safetensors"
    st.write_bytes(st.read_bytes()[: st.stat().st_size // 2])
    (case("empty_shard") / "model.safetensors").write_bytes(b"")
    st = case("header_not_json") / "model.safetensors"
    raw = st.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    st.write_bytes(raw[:8] + b"[" + b"x" * (n - 1) + raw[8 + n :])
    st = case("header_not_utf8") / "model.safetensors"
    st.write_bytes(raw[:8] + b"{\xff\xfe" + raw[11:])
    st = case("header_length_too_large") / "model.safetensors"
    st.write_bytes(struct.pack("<Q", 2**63) + raw[8:])
    st = case("header_length_past_end") / "model.safetensors"
    st.write_bytes(struct.pack("<Q", len(raw)) + raw[8:])

    st = case("duplicate_tensor_names") / "model.safetensors"
    header, data = read_safetensors(st)
    first = next(k for k in header if k != "__metadata__")
    entry = json.dumps({first: header[first]})[1:-1]
    text = json.dumps(header)
    write_raw(st, (text[:-1] + ", " + entry + "}").encode(), data)

    def overflow(h: Header) -> None:
        h["model.norm.weight"]["shape"] = [2**40, 2**40]

    _edit_header(case("shape_overflow"), overflow)

    def negative_shape(h: Header) -> None:
        h["model.norm.weight"]["shape"] = [-256]

    _edit_header(case("negative_shape"), negative_shape)

    def float_offsets(h: Header) -> None:
        b, e = h["model.norm.weight"]["data_offsets"]
        h["model.norm.weight"]["data_offsets"] = [float(b), float(e)]

    _edit_header(case("float_offsets"), float_offsets)

    def unknown_dtype(h: Header) -> None:
        h["model.norm.weight"]["dtype"] = "F8_E4M3"
        h["model.norm.weight"]["shape"] = [512]

    _edit_header(case("unsupported_dtype"), unknown_dtype)

    # -- dtypes and tensors the family needs ----------------------------------------
    def int16(h: Header) -> None:
        h["model.layers.0.self_attn.o_proj.weight"]["dtype"] = "I16"

    _edit_header(case("int16_where_bf16_is_due"), int16)

    def drop(name: str) -> Callable[[dict[str, tuple[str, list[int], bytes]]], None]:
        return lambda t: t.pop(name) and None

    _edit_tensors(case("missing_tensor"), drop("model.layers.1.self_attn.o_proj.weight"))
    _edit_tensors(case("missing_bias"), drop("model.layers.0.self_attn.v_proj.bias"))
    _edit_tensors(case("missing_lm_head"), drop("lm_head.weight"))
    _edit_tensors(case("missing_expert", moe), drop("model.layers.1.mlp.experts.2.up_proj.weight"))
    _edit_tensors(case("partial_nextn_block", moe), drop("model.layers.2.eh_proj.weight"))

    # -- model.safetensors.index.json ------------------------------------------------
    model = case("index_parent_path")
    shard = _shard(model)
    shutil.copyfile(shard, folder / "outside.safetensors")
    _point_index(model, shard, "../outside.safetensors")
    shard.unlink()

    model = case("index_absolute_path")
    shard = _shard(model)
    outside = folder / "absolute.safetensors"
    shutil.copyfile(shard, outside)
    _point_index(model, shard, str(outside.resolve()))
    shard.unlink()

    model = case("index_symlink_out")
    shard = _shard(model)
    shutil.move(shard, folder / "linked.safetensors")
    os.symlink(folder / "linked.safetensors", shard)

    model = case("index_names_a_system_file")
    shard = _shard(model)
    _point_index(model, shard, "../" * 32 + "etc/passwd")
    shard.unlink()

    model = case("index_names_missing_shard")
    _shard(model).unlink()

    model = case("index_names_tokenizer")
    shard = _shard(model)
    _point_index(model, shard, "tokenizer.json")
    shard.unlink()

    # -- config.json -------------------------------------------------------------
    _edit_config(case("absurd_layer_count"), num_hidden_layers=10**9)
    _edit_config(case("absurd_layer_count_moe", moe), num_hidden_layers=10**9)
    _edit_config(case("layer_count_is_text"), num_hidden_layers="2")
    _edit_config(case("too_few_layers_in_config"), num_hidden_layers=1)
    _edit_config(case("absurd_context_length"), max_position_embeddings=10**12)
    (case("config_not_json") / "config.json").write_text("{not json")
    (case("missing_config") / "config.json").unlink()
    return cases
