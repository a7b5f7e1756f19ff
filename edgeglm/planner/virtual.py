"""Config-only ("virtual") checkpoints: the tensors a config.json implies, without weights.

Planning GLM-4.5 must not need its 700 GB of safetensors. Each GGUF family
states its checkpoint ``Layout`` (converters/layout.py); we build the tensor
list from it and hand it to the same family class: the code that maps, stacks
and splits real checkpoints then says which GGUF tensors, in which shapes and
quant types, the model would have. A test checks the synthesized lists
against every real fixture checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeglm.checkpoint.hf import HFCheckpoint
from edgeglm.checkpoint.safetensors import TensorInfo
from edgeglm.converters.gguf.registry import family_for, supported_architectures
from edgeglm.converters.layout import Dims, Layout, Tensors, checkpoint_tensors
from edgeglm.errors import CheckpointError, UnsupportedArchitectureError
from edgeglm.planner.model import LLAMA_MAX_LAYERS


def plannable_architectures() -> list[str]:
    """Architectures whose tensors follow from config.json alone (their family has a layout)."""
    return [a for a in supported_architectures() if family_for(a).layout is not None]


def layout_for(arch: str) -> Layout:
    layout = family_for(arch).layout if arch in supported_architectures() else None
    if layout is None:
        raise UnsupportedArchitectureError(
            f"config.json: architecture {arch!r} cannot be planned from its config; "
            f"known: {', '.join(plannable_architectures())}"
        )
    return layout


def architecture_of(cfg: dict[str, Any]) -> str:
    archs = cfg.get("architectures") or []
    return str(archs[0]) if archs else str(cfg.get("model_type", "unknown"))


def synthesize(cfg: dict[str, Any], *, with_mtp: bool = True) -> Tensors:
    """HF tensor name -> shape for a checkpoint with this config (the converter's
    own layout: converters.layout.checkpoint_tensors)."""
    layout = layout_for(architecture_of(cfg))
    d = Dims(cfg)
    n_layer = d.get("num_hidden_layers")
    n_layer = int(n_layer if n_layer is not None else d.need("num_layers"))
    n_mtp = int(d.get("num_nextn_predict_layers", 0)) if layout.mtp and with_mtp else 0
    # Shapes are listed block by block: an absurd count must be refused, not
    # expanded (llama.cpp itself loads at most LLAMA_MAX_LAYERS blocks).
    if not 1 <= n_layer + n_mtp <= LLAMA_MAX_LAYERS or n_mtp < 0:
        raise CheckpointError(
            f"config.json describes {n_layer} blocks and {n_mtp} NextN blocks; "
            f"llama.cpp loads 1 to {LLAMA_MAX_LAYERS}"
        )
    return checkpoint_tensors(layout, cfg, mtp_blocks=range(n_layer, n_layer + n_mtp))


class VirtualCheckpoint(HFCheckpoint):
    """An HFCheckpoint with shapes but no data: enough for the converter's planning."""

    def __init__(self, config: dict[str, Any], root: Path, dtype: str = "BF16") -> None:
        # Deliberately not calling HFCheckpoint.__init__: there are no files to open.
        self.root = root
        self.config = config
        shard = root / "model.safetensors"
        self._infos = {
            name: TensorInfo(name, dtype, shape, 0, 0, shard)
            for name, shape in synthesize(config).items()
        }

    def __contains__(self, name: object) -> bool:
        return name in self._infos

    def __iter__(self) -> Iterator[str]:
        return iter(self._infos)

    def __len__(self) -> int:
        return len(self._infos)

    def info(self, name: str) -> TensorInfo:
        return self._infos[name]

    def load(self, name: str) -> Any:
        raise CheckpointError(f"{self.root}: a config-only model has no weights to load")

    def read_rows(self, name: str, r0: int, r1: int) -> Any:
        return self.load(name)

    @property
    def files(self) -> list[Path]:
        return []

    @property
    def nbytes(self) -> int:
        return 0

    def close(self) -> None:
        pass
