"""Local model artifacts for the Models screen: GGUF files and what they hold.

Metadata comes from the GGUF header, read by EdgeGLM's strict reader (a
header read however large the model; a malformed file is listed with the
reason it was refused). Paths the user adds are
remembered in ``cache_dir()/tui-paths.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from edgeglm.converters.gguf.quant_types import quant_name
from edgeglm.errors import EdgeGLMError
from edgeglm.gguf_file import read_gguf
from edgeglm.paths import cache_dir


@dataclass(frozen=True)
class ArtifactInfo:
    path: Path
    size_bytes: int
    architecture: str | None = None
    quant: str | None = None
    name: str | None = None
    error: str | None = None  # why the header could not be read

    @property
    def label(self) -> str:
        return self.name or self.path.stem


def artifacts_dir() -> Path:
    return cache_dir() / "artifacts"


def _paths_file() -> Path:
    return cache_dir() / "tui-paths.json"


def user_paths() -> list[Path]:
    try:
        return [Path(p) for p in json.loads(_paths_file().read_text(encoding="utf-8"))]
    except (OSError, ValueError, TypeError):
        return []


def add_user_path(path: Path) -> None:
    paths = [p for p in user_paths() if p != path] + [path]
    f = _paths_file()
    tmp = f.with_name(f".{f.name}.tmp")
    tmp.write_text(json.dumps([str(p) for p in paths]), encoding="utf-8")
    os.replace(tmp, f)


def find_gguf(roots: list[Path]) -> list[Path]:
    """GGUF files under each root (a root may itself be a file); no duplicates."""
    seen: dict[Path, None] = {}
    for root in roots:
        if root.is_file() and root.suffix == ".gguf":
            seen.setdefault(root.resolve())
        elif root.is_dir():
            for p in sorted(root.rglob("*.gguf")):
                if not p.name.startswith("."):  # converter temp files are hidden
                    seen.setdefault(p.resolve())
    return list(seen)


def read_artifact(path: Path) -> ArtifactInfo:
    size = path.stat().st_size
    try:
        header = read_gguf(path)
    except EdgeGLMError as e:
        return ArtifactInfo(path, size, error=str(e))
    arch, ftype, name = (
        header.get("general.architecture"),
        header.get("general.file_type"),
        header.get("general.name"),
    )
    return ArtifactInfo(
        path,
        size,
        architecture=str(arch) if arch is not None else None,
        quant=(quant_name(ftype) or f"type {ftype}") if isinstance(ftype, int) else None,
        name=str(name) if name else None,
    )


def scan() -> list[ArtifactInfo]:
    return [read_artifact(p) for p in find_gguf([artifacts_dir(), *user_paths()])]
