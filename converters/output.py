"""What every converter does with its output: the target check, temp names, stale temps,
digests, the result.

``check_output`` is the one check of an output path against the input, used
by both converters (and so by every cache path that converts): the output
must never be, or replace, a file of the input. Outputs are written under a
hidden temporary name beside the target (``.NAME<mark><pid>``) and renamed
into place when complete. A conversion killed with SIGKILL cannot clean up
after itself, so the next conversion to the same target removes temporaries
whose process no longer exists.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from edgeglm.errors import UsageError
from edgeglm.fileio import same_file


def input_files(root: Path, also: Iterable[Path | None] = ()) -> list[Path]:
    """Every file of a checkpoint folder (symlinks followed), plus other inputs."""
    try:
        files = [p for p in root.iterdir() if p.is_file()]
    except OSError:
        files = []
    return files + [p for p in also if p is not None]


def check_output(out: Path, root: Path, *, folder: bool, also: Iterable[Path | None] = ()) -> None:
    """Refuse (``UsageError``, exit 2) an output that is, or would replace, an input.

    ``root`` is the checkpoint folder; ``also`` more inputs (shards named by an
    index, an imatrix, a calibration text). A file output (GGUF) must not be
    any of them, by name, symlink or hard link; a new file inside the model
    folder is fine (llama.cpp's own converter writes there), and so is
    replacing an earlier GGUF there, which no converter reads. A folder output
    (ONNX), which replaces whatever folder is at ``out``, must not be the
    checkpoint folder or one of its ancestors, nor hold an input file.
    """
    in_folder = input_files(root)
    extra = [p for p in also if p is not None]
    inputs = in_folder + extra
    if folder:
        if out.exists() and not out.is_dir():
            raise UsageError(f"{out}: is a file; give a folder path for the ONNX model")
    elif out.is_dir():
        raise UsageError(f"{out}: is a directory; give a .gguf file path")
    if not out.parent.exists():
        raise UsageError(f"{out.parent}: output folder does not exist")
    if not out.parent.is_dir():
        raise UsageError(f"{out.parent}: is not a folder")
    if not folder:
        earlier = {
            f for f in in_folder if _earlier_gguf(f) and not any(same_file(f, e) for e in extra)
        }
        for f in inputs:
            if same_file(out, f) and f not in earlier:
                raise UsageError(f"{out}: would overwrite the input checkpoint's file {f}")
        return
    target, source = out.resolve(), root.resolve()
    if target == source or target in source.parents:
        raise UsageError(f"{out}: would replace the input checkpoint folder")
    for f in inputs:
        if f.resolve().is_relative_to(target):
            raise UsageError(f"{out}: holds the input file {f}; it would be replaced")
    if out.is_dir():  # a hard link of an input file in it is that file too
        held = {_inode(p, follow=False) for p in out.iterdir()}
        for f in inputs:
            if _inode(f, follow=True) in held - {None}:
                raise UsageError(f"{out}: holds a hard link of the input file {f}")


def _earlier_gguf(p: Path) -> bool:
    """A GGUF in the model folder is an earlier conversion, not an input: rerunning
    ``-o MODEL/model.gguf`` (llama.cpp's habit) replaces it."""
    try:
        with open(p, "rb") as f:
            return p.suffix == ".gguf" and f.read(4) == b"GGUF"
    except OSError:
        return False


def _inode(p: Path, *, follow: bool) -> tuple[int, int] | None:
    try:
        s = p.stat() if follow else p.lstat()
    except OSError:
        return None
    return s.st_dev, s.st_ino


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
                    # best effort: a read-only folder fails later, with its own message
                    with contextlib.suppress(OSError):
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
