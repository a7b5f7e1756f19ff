"""What every converter does with its output: temp names, stale temps, digests, the result.

Outputs are written under a hidden temporary name beside the target
(``.NAME<mark><pid>``) and renamed into place when complete. A conversion
killed with SIGKILL cannot clean up after itself, so the next conversion to
the same target removes temporaries whose process no longer exists.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def clean_stale_temps(out: Path, marks: tuple[str, ...]) -> None:
    """Remove ``.{out.name}{mark}{pid}`` files or folders whose process is gone."""
    for mark in marks:
        for stale in out.parent.glob(f".{out.name}{mark}*"):
            pid = stale.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not pid_alive(int(pid)):
                if stale.is_dir():
                    shutil.rmtree(stale, ignore_errors=True)
                else:
                    stale.unlink(missing_ok=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class ConvertResult:
    """What a conversion wrote, as ``edgeglm convert`` reports it (``--json``: ``to_dict``)."""

    output: Path  # the .gguf file, or the ONNX model folder
    format: Literal["gguf", "onnx"]
    quant: str
    architecture: str
    bytes: int
    parameters: int
    bits_per_weight: float
    tensor_types: dict[str, int]
    sha256: str  # of the .gguf, or of model.onnx
    seconds: float
    # ONNX folders only:
    files: dict[str, int] = field(default_factory=dict)  # name -> bytes
    external_data: bool = False
    data_sha256: str | None = None  # of model.onnx.data, when the weights live there
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {
            "output": str(self.output),
            "format": self.format,
            "quant": self.quant,
            "architecture": self.architecture,
            "bytes": self.bytes,
            "parameters": self.parameters,
            "bits_per_weight": round(self.bits_per_weight, 4),
            "tensor_types": self.tensor_types,
            "sha256": self.sha256,
            "seconds": round(self.seconds, 3),
        }
        if self.format == "onnx":
            d |= {
                "files": self.files,
                "external_data": self.external_data,
                "data_sha256": self.data_sha256,
            }
        return d | {"warnings": self.warnings}
