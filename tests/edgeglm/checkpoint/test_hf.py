from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import write_safetensors

from edgeglm.checkpoint.hf import HFCheckpoint, resolve_checkpoint
from edgeglm.errors import CheckpointError, ModelNotFoundError, UnsafeFormatError


def _sharded(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    root.mkdir()
    (root / "config.json").write_text(json.dumps({"architectures": ["Glm4ForCausalLM"]}))
    write_safetensors(root / "model-00001-of-00002.safetensors", {"a": np.ones((2, 2), np.float32)})
    write_safetensors(root / "model-00002-of-00002.safetensors", {"b": np.zeros((3,), np.float16)})
    index = {
        "metadata": {},
        "weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors",
        },
    }
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    return root


def test_sharded_checkpoint_reads_across_shards(tmp_path: Path) -> None:
    ck = HFCheckpoint(_sharded(tmp_path))
    assert sorted(ck) == ["a", "b"]
    assert ck.architecture == "Glm4ForCausalLM"
    np.testing.assert_array_equal(ck.load("a"), np.ones((2, 2)))
    assert ck.load("b").dtype == np.float16


def test_missing_shard_is_named(tmp_path: Path) -> None:
    root = _sharded(tmp_path)
    (root / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"missing shard.*model-00002-of-00002"):
        HFCheckpoint(root)


def test_index_that_disagrees_with_shards(tmp_path: Path) -> None:
    root = _sharded(tmp_path)
    index = json.loads((root / "model.safetensors.index.json").read_text())
    index["weight_map"]["c"] = "model-00001-of-00002.safetensors"
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="lists tensor 'c'"):
        HFCheckpoint(root)


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "consolidated.pth"])
def test_pickle_checkpoints_are_refused(tmp_path: Path, name: str) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / name).write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(UnsafeFormatError, match="can run arbitrary code"):
        HFCheckpoint(tmp_path)


def test_bad_config_json(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json: not valid JSON"):
        HFCheckpoint(tmp_path)


def test_resolve_local_folder_and_errors(tmp_path: Path) -> None:
    root = _sharded(tmp_path)
    assert resolve_checkpoint(str(root)) == root
    with pytest.raises(ModelNotFoundError, match="no such model folder"):
        resolve_checkpoint(str(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        resolve_checkpoint(str(tmp_path / "empty"))


def test_resolve_repo_id_from_offline_hf_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The layout huggingface_hub itself writes: models--org--name/{refs,snapshots}."""
    cache = tmp_path / "hub"
    repo = cache / "models--zai-org--GLM-Tiny"
    snap = repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snap.name)
    (snap / "config.json").write_text("{}")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    assert resolve_checkpoint("zai-org/GLM-Tiny") == snap
    with pytest.raises(ModelNotFoundError, match="not in the Hugging Face cache"):
        resolve_checkpoint("zai-org/Not-Cached")
