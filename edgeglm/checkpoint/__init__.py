"""Reading model checkpoints without torch: safetensors and HF folders."""

from edgeglm.checkpoint.hf import HFCheckpoint, resolve_checkpoint
from edgeglm.checkpoint.safetensors import SafetensorsFile, TensorInfo

__all__ = ["HFCheckpoint", "SafetensorsFile", "TensorInfo", "resolve_checkpoint"]
