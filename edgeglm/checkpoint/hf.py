"""Hugging Face checkpoints: a folder (or an offline cache entry) of config,
tokenizer files and safetensors shards, read lazily tensor by tensor."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy.typing as npt

from edgeglm.checkpoint.safetensors import SafetensorsFile, TensorInfo
from edgeglm.errors import CheckpointError, ModelNotFoundError, UnsafeFormatError

# Formats that unpickle on load: opening one can execute arbitrary code.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
INDEX_NAME = "model.safetensors.index.json"


class HFCheckpoint:
    """A Hugging Face model folder with safetensors weights.

    Tensors are exposed by their checkpoint names; ``load`` memory-maps one at a
    time so converting a model never needs it all in RAM.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = read_json(root / "config.json")
        self._files: dict[Path, SafetensorsFile] = {}
        self._where: dict[str, SafetensorsFile] = {}
        for shard in self._shards():
            st = SafetensorsFile(shard)
            self._files[shard] = st
        self._index_tensors()

    # -- construction ---------------------------------------------------

    def _shards(self) -> list[Path]:
        index = self.root / INDEX_NAME
        if index.exists():
            weight_map = read_json(index).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise CheckpointError(f"{index}: has no weight_map")
            shards = sorted({self.root / str(f) for f in weight_map.values()})
            missing = [s.name for s in shards if not s.is_file()]
            if missing:
                raise CheckpointError(
                    f"{index}: missing shard(s) {', '.join(missing)} in {self.root}"
                )
            self._weight_map = {str(k): self.root / str(v) for k, v in weight_map.items()}
            return shards
        self._weight_map = {}
        shards = sorted(self.root.glob("*.safetensors"))
        if shards:
            return shards
        pickles = sorted(p.name for p in self.root.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise UnsafeFormatError(
                f"{self.root}: only pickle weights found ({', '.join(pickles)}). Pickle files "
                "can run arbitrary code when loaded, so EdgeGLM refuses them; convert them to "
                "safetensors on a trusted machine first (transformers: "
                "model.save_pretrained(dir, safe_serialization=True))."
            )
        raise CheckpointError(f"{self.root}: no .safetensors weights found")

    def _index_tensors(self) -> None:
        for st in self._files.values():
            for name in st:
                if name in self._where:
                    raise CheckpointError(
                        f"{st.path}: tensor {name!r} also appears in {self._where[name].path}"
                    )
                self._where[name] = st
        for name, shard in self._weight_map.items():
            holder = self._where.get(name)
            if holder is None or holder.path != shard:
                raise CheckpointError(
                    f"{self.root / INDEX_NAME}: lists tensor {name!r} in {shard.name}, "
                    "but that shard does not contain it"
                )

    # -- access ----------------------------------------------------------

    @property
    def architecture(self) -> str:
        archs = self.config.get("architectures") or []
        if archs:
            return str(archs[0])
        return str(self.config.get("model_type", "unknown"))

    def __contains__(self, name: object) -> bool:
        return name in self._where

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def info(self, name: str) -> TensorInfo:
        return self._where[name].tensors[name]

    def load(self, name: str) -> npt.NDArray[Any]:
        try:
            st = self._where[name]
        except KeyError:
            raise CheckpointError(f"{self.root}: tensor {name!r} not found") from None
        return st.load(name)

    def read_rows(self, name: str, r0: int, r1: int) -> npt.NDArray[Any]:
        return self._where[name].read_rows(name, r0, r1)

    @property
    def files(self) -> list[Path]:
        return list(self._files)

    @property
    def nbytes(self) -> int:
        return sum(self.info(n).nbytes for n in self._where)

    def close(self) -> None:
        for st in self._files.values():
            st.close()


def read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def resolve_checkpoint(src: str) -> Path:
    """A local folder, or a repo id already in the Hugging Face cache.

    Never touches the network: air-gapped machines carry the cache in.
    """
    path = Path(src).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CheckpointError(f"{path}: no config.json; not a Hugging Face model folder")
        return path
    if path.exists():
        raise CheckpointError(f"{path}: expected a model folder, got a file")
    if src.count("/") == 1 and not src.startswith((".", "/", "~")):
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            return Path(snapshot_download(src, local_files_only=True))
        except LocalEntryNotFoundError:
            pass
        except Exception as e:  # malformed cache entries raise various errors
            raise ModelNotFoundError(f"{src}: Hugging Face cache entry unusable: {e}") from e
        raise ModelNotFoundError(
            f"{src}: not a local folder and not in the Hugging Face cache "
            "(EdgeGLM never downloads; copy the model or its cache in first)"
        )
    raise ModelNotFoundError(f"{src}: no such model folder")
