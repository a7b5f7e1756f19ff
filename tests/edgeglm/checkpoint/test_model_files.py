"""Every file a checkpoint names, or that we look up in it, stays inside its folder;
the Hugging Face cache's own links into its blobs are the one allowed way out."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import HF_FIXTURES, write_safetensors

from edgeglm.checkpoint.config import Config
from edgeglm.checkpoint.hf import HFCheckpoint, read_json, resolve_checkpoint
from edgeglm.converters.gguf.vocab import load_vocab
from edgeglm.errors import CheckpointError, ExitCode, ModelNotFoundError


def _sharded(root: Path, shard_names: tuple[str, str]) -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"architectures": ["Glm4ForCausalLM"]}))
    weight_map = {}
    for tensor, name in zip(("a", "b"), shard_names, strict=True):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write_safetensors(root / name, {tensor: np.ones((2,), np.float32)})
        weight_map[tensor] = name
    index = {"weight_map": weight_map}
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    return root


def _repoint(root: Path, tensor: str, to: object) -> None:
    index = json.loads((root / "model.safetensors.index.json").read_text())
    index["weight_map"][tensor] = to
    (root / "model.safetensors.index.json").write_text(json.dumps(index))


def test_shards_in_a_subfolder_are_fine(tmp_path: Path) -> None:
    root = _sharded(tmp_path / "m", ("a.safetensors", "weights/b.safetensors"))
    assert sorted(HFCheckpoint(root)) == ["a", "b"]


@pytest.mark.parametrize(
    ("to", "message"),
    [
        ("../outside.safetensors", "leaves"),
        ("weights/../../outside.safetensors", "leaves"),
        ("/abs/outside.safetensors", "not relative"),
        ("C:\\outside.safetensors", "not relative"),
        ("config.json", "not a .safetensors file"),
        (7, "not a file name"),
        ("", "not relative"),
    ],
)
def test_index_entries_that_leave_the_folder(tmp_path: Path, to: object, message: str) -> None:
    root = _sharded(tmp_path / "m", ("a.safetensors", "b.safetensors"))
    write_safetensors(tmp_path / "outside.safetensors", {"b": np.ones((2,), np.float32)})
    _repoint(root, "b", to)
    with pytest.raises(CheckpointError, match=message):
        HFCheckpoint(root)


def test_a_shard_linked_from_elsewhere_is_refused(tmp_path: Path) -> None:
    root = _sharded(tmp_path / "m", ("a.safetensors", "b.safetensors"))
    shutil.move(root / "b.safetensors", tmp_path / "elsewhere.safetensors")
    (root / "b.safetensors").symlink_to(tmp_path / "elsewhere.safetensors")
    with pytest.raises(CheckpointError, match="symlink"):
        HFCheckpoint(root)
    (root / "model.safetensors.index.json").unlink()  # found by name, not by index: same rule
    with pytest.raises(CheckpointError, match="symlink"):
        HFCheckpoint(root)


def test_a_config_linked_from_elsewhere_is_refused(tmp_path: Path) -> None:
    root = _sharded(tmp_path / "m", ("a.safetensors", "b.safetensors"))
    (root / "config.json").rename(tmp_path / "secret.json")
    (root / "config.json").symlink_to(tmp_path / "secret.json")
    with pytest.raises(CheckpointError, match="symlink"):
        HFCheckpoint(root)


def test_a_tokenizer_linked_from_elsewhere_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "m"
    shutil.copytree(HF_FIXTURES / "glm4", root)
    (root / "tokenizer.json").rename(tmp_path / "secret.json")
    (root / "tokenizer.json").symlink_to(tmp_path / "secret.json")
    with pytest.raises(CheckpointError, match="symlink"):
        load_vocab(root, 1024, {"eos": "<|endoftext|>"})


def _cache_snapshot(tmp_path: Path) -> tuple[Path, Path]:
    """The layout huggingface_hub writes: snapshot files are links into the repo's blobs."""
    repo = tmp_path / "hub" / "models--zai-org--GLM-Tiny"
    snap, blobs = repo / "snapshots" / ("0" * 40), repo / "blobs"
    staged = _sharded(tmp_path / "staged", ("a.safetensors", "b.safetensors"))
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    for f in staged.iterdir():
        blob = blobs / f"blob-{f.name}"
        shutil.move(f, blob)
        (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    return snap, blobs


def test_hugging_face_cache_links_into_blobs_are_followed(tmp_path: Path) -> None:
    snap, _ = _cache_snapshot(tmp_path)
    assert sorted(HFCheckpoint(snap)) == ["a", "b"]


def test_hugging_face_cache_links_elsewhere_are_refused(tmp_path: Path) -> None:
    snap, blobs = _cache_snapshot(tmp_path)
    shutil.move(blobs / "blob-b.safetensors", tmp_path / "elsewhere.safetensors")
    (snap / "b.safetensors").unlink()
    (snap / "b.safetensors").symlink_to(tmp_path / "elsewhere.safetensors")
    with pytest.raises(CheckpointError, match="symlink"):
        HFCheckpoint(snap)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xffsecret", "not UTF-8"),
        (b'{"a": "secret"', "not valid JSON"),
        (b'["secret"]', "expected a JSON object"),
        (b"[" * 100_000, "not valid JSON"),
    ],
)
def test_json_errors_say_where_not_what(tmp_path: Path, content: bytes, message: str) -> None:
    p = tmp_path / "config.json"
    p.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as e:
        read_json(p)
    assert "secret" not in str(e.value) and "\\x" not in str(e.value)


def test_resolve_checkpoint_exit_codes(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as missing:
        resolve_checkpoint(str(tmp_path / "absent"))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="got a file") as a_file:
        resolve_checkpoint(str(tmp_path / "notes.txt"))
    with pytest.raises(CheckpointError, match=r"no config\.json") as no_config:
        resolve_checkpoint(str(tmp_path))
    assert missing.value.exit_code == ExitCode.MODEL_NOT_FOUND
    assert a_file.value.exit_code == no_config.value.exit_code == ExitCode.BAD_CHECKPOINT


@pytest.mark.parametrize("value", ["2", 2.0, -1, True, [2]])
def test_config_sizes_must_be_integers(value: object) -> None:
    with pytest.raises(CheckpointError, match=r"num_hidden_layers must be a non-negative integer"):
        Config({"num_hidden_layers": value}, "config.json")
