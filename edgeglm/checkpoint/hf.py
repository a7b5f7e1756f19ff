"""Hugging Face checkpoints: a folder (or an offline cache entry) of config,
tokenizer files and safetensors shards, read lazily tensor by tensor.

Every file of a checkpoint is opened through ``model_file``: a name the
checkpoint gives (a shard in ``model.safetensors.index.json``) or one we look
up (``config.json``, ``tokenizer.json``) must stay inside the folder
(``edgeglm.fileio.contained``). The one exception is the Hugging Face cache's
own layout, where a snapshot's files are symlinks into the repo's ``blobs``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy.typing as npt

from edgeglm.checkpoint.safetensors import SafetensorsFile, TensorInfo
from edgeglm.errors import CheckpointError, ModelNotFoundError, UnsafeFormatError
from edgeglm.fileio import contained

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
        self.config = read_json(model_file(root, "config.json"))
        self._files: dict[Path, SafetensorsFile] = {}
        self._where: dict[str, SafetensorsFile] = {}
        try:
            shards = self._shards()
        except OSError as e:  # an unreadable folder
            raise CheckpointError(f"{root}: cannot read: {e.strerror or e}") from e
        for shard in shards:
            st = SafetensorsFile(shard)
            self._files[shard] = st
        self._index_tensors()

    # -- construction ---------------------------------------------------

    def _shards(self) -> list[Path]:
        index = model_file(self.root, INDEX_NAME)
        if index.exists():
            weight_map = read_json(index).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise CheckpointError(f"{index}: has no weight_map")
            self._weight_map = {str(k): self._shard(index, v) for k, v in weight_map.items()}
            shards = sorted(set(self._weight_map.values()))
            missing = [str(s.relative_to(self.root)) for s in shards if not s.is_file()]
            if missing:
                raise CheckpointError(
                    f"{index}: missing shard(s) {', '.join(missing)} in {self.root}"
                )
            return shards
        self._weight_map = {}
        shards = sorted(model_file(self.root, p.name) for p in self.root.glob("*.safetensors"))
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

    def _shard(self, index: Path, name: object) -> Path:
        if not isinstance(name, str):
            raise CheckpointError(f"{index}: a weight_map entry is not a file name")
        path = model_file(self.root, name, what=str(index))
        if path.suffix != ".safetensors":
            raise CheckpointError(f"{index}: shard {name!r} is not a .safetensors file")
        return path

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
                    f"{self.root / INDEX_NAME}: lists tensor {name!r} in "
                    f"{shard.relative_to(self.root)}, "
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


def model_file(root: Path, name: str, *, what: str | None = None) -> Path:
    """``root / name``, checked to stay inside the model folder (``fileio.contained``).

    ``what`` names the file that gave ``name`` (default: the folder itself).
    A Hugging Face cache snapshot is the one place symlinks are expected: its
    files link into ``models--org--name/blobs``, and only there.
    """
    try:
        return contained(root, name, what=what or str(root))
    except CheckpointError:
        if _cache_blob_link(root, name):
            return root / name
        raise


def _cache_blob_link(root: Path, name: str) -> bool:
    """``root/name`` is a snapshot file of the HF cache, linked into its repo's blobs."""
    repo = root.parent.parent
    if root.parent.name != "snapshots" or not repo.name.startswith("models--"):
        return False
    parts = PurePosixPath(name).parts
    if not parts or ".." in parts or PurePosixPath(name).is_absolute() or "\\" in name:
        return False
    if any((root / Path(*parts[:i])).is_symlink() for i in range(1, len(parts))):
        return False  # only the file itself may be a link, never a folder on the way
    target = (root / name).resolve()
    return target.is_relative_to((repo / "blobs").resolve())


def read_json(path: Path) -> dict[str, Any]:
    # Messages say where the file is broken, never what it holds: a model
    # file may be a link to something that is not ours to print.
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a folder, not a JSON file") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: not UTF-8 text (at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(
            f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})"
        ) from None
    except (ValueError, RecursionError):
        raise CheckpointError(f"{path}: not valid JSON") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def resolve_checkpoint(src: str) -> Path:
    """A local folder, or a repo id already in the Hugging Face cache.

    Never touches the network: air-gapped machines carry the cache in.
    """
    path = Path(src).expanduser()
    try:
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise CheckpointError(f"{path}: no config.json; not a Hugging Face model folder")
            return path
        if path.exists():
            raise CheckpointError(f"{path}: expected a model folder, got a file")
    except OSError as e:  # a folder we may not look into
        raise CheckpointError(f"{path}: cannot read: {e.strerror or e}") from e
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
