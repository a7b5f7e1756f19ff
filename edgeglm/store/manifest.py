"""The manifest of a store entry or bundle: ``manifest.json``, schema 1.

::

    {"schema": 1, "name": "org/model",
     "source": {"repo": "org/model", "revision": "<commit sha>"|null, "endpoint": url|null},
     "tools": {"edgeglm": "0.1.0", "gguf": ..., "llama_cpp_python": ..., "huggingface_hub": ...,
               "onnxruntime": ...|null},
     "files": [{"path": "source/config.json", "size": 708, "sha256": "<64 hex>",
                "role": "config"}, ...]}

A manifest arrives from another machine (``edgeglm import``), so parsing is
strict: every path it names is checked here, once, before any file is
touched (Ollama's digest checks had path-traversal CVEs: CVE-2024-37032).
A path is a plain POSIX relative path under ``source/`` (the Hugging Face
checkpoint) or ``artifacts/`` (what EdgeGLM converted from it): no ``..``,
``.``, empty parts, backslashes, NUL or control characters, and no two
paths that would land on one file (equal, equal but for case, or one a
folder of the other).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

from edgeglm.errors import CheckpointError

SCHEMA = 1
MANIFEST_NAME = "manifest.json"
TOP_FOLDERS = ("source", "artifacts")
# weights: safetensors and their index; tokenizer: what tokenizers/transformers
# read to tokenize and to render chat; config: config.json and other JSON;
# gguf / onnx: converted artifacts (every file of an ONNX folder); recipe: a
# conversion recipe; other: anything else a checkpoint carries (README, LICENSE).
ROLES = ("weights", "tokenizer", "config", "gguf", "onnx", "recipe", "other")
# Bounds a hostile manifest cannot exceed before it is even parsed.
MAX_MANIFEST_BYTES = 16 << 20
MAX_FILES = 100_000
MAX_PATH_CHARS = 1024
HASH_CHUNK = 4 << 20  # large reads: hashing runs at disk speed, memory stays flat

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TOKENIZER = {"tokenizer.model", "special_tokens_map.json", "chat_template.jinja"}
_TOOL_PACKAGES = {
    "edgeglm": "edgeglm",
    "gguf": "gguf",
    "llama_cpp_python": "llama-cpp-python",
    "huggingface_hub": "huggingface-hub",
    "onnxruntime": "onnxruntime",
}


@dataclass(frozen=True)
class Source:
    """Where the checkpoint came from: a hub repo at a commit, through an endpoint
    (None: huggingface.co, or a local folder with no repo)."""

    repo: str | None = None
    revision: str | None = None
    endpoint: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return {"repo": self.repo, "revision": self.revision, "endpoint": self.endpoint}


@dataclass(frozen=True)
class FileRecord:
    path: str  # "source/config.json", "artifacts/Q4_K_M.gguf", "artifacts/onnx-int4/model.onnx"
    size: int
    sha256: str
    role: str

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "role": self.role}


@dataclass(frozen=True)
class Manifest:
    name: str
    source: Source
    files: tuple[FileRecord, ...]
    tools: dict[str, str | None] = field(default_factory=dict)
    schema: int = SCHEMA

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def file(self, path: str) -> FileRecord | None:
        return next((f for f in self.files if f.path == path), None)

    def restricted(self, paths: Iterable[str]) -> Manifest:
        keep = set(paths)
        return replace(self, files=tuple(f for f in self.files if f.path in keep))

    def with_files(self, files: Iterable[FileRecord]) -> Manifest:
        """This manifest with ``files`` (sorted by path), checked as a parsed one is."""
        ordered = tuple(sorted(files, key=lambda f: f.path))
        check_paths([f.path for f in ordered], what=f"manifest of {self.name}")
        return replace(self, files=ordered)

    def to_json(self) -> bytes:
        doc = {
            "schema": self.schema,
            "name": self.name,
            "source": self.source.to_json(),
            "tools": self.tools,
            "files": [f.to_json() for f in self.files],
        }
        return (json.dumps(doc, indent=1) + "\n").encode("utf-8")

    @classmethod
    def parse(cls, data: bytes, *, what: str) -> Manifest:
        """A manifest read from ``what`` (a bundle or entry, for messages); every
        field is checked and the first problem is a CheckpointError naming it."""
        if len(data) > MAX_MANIFEST_BYTES:
            raise CheckpointError(f"{what}: manifest.json is over {MAX_MANIFEST_BYTES >> 20} MiB")
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise CheckpointError(f"{what}: manifest.json is not valid JSON ({e})") from None
        if not isinstance(doc, dict):
            raise CheckpointError(f"{what}: manifest.json is not a JSON object")
        schema = doc.get("schema")
        if type(schema) is not int or schema != SCHEMA:
            raise CheckpointError(
                f"{what}: manifest.json schema {schema!r} is not supported (this EdgeGLM reads "
                f"schema {SCHEMA})"
            )
        name = doc.get("name")
        if not isinstance(name, str) or not valid_name(name):
            raise CheckpointError(f"{what}: manifest.json name {name!r} is not a model name")
        src = doc.get("source")
        if not isinstance(src, dict):
            raise CheckpointError(f"{what}: manifest.json source is not an object")
        source = Source(
            repo=_opt_str(src, "repo", what),
            revision=_opt_str(src, "revision", what),
            endpoint=_opt_str(src, "endpoint", what),
        )
        tools_doc = doc.get("tools", {})
        if not isinstance(tools_doc, dict):
            raise CheckpointError(f"{what}: manifest.json tools is not an object")
        tools = {str(k): _opt_str(tools_doc, k, what) for k in tools_doc}
        files_doc = doc.get("files")
        if not isinstance(files_doc, list):
            raise CheckpointError(f"{what}: manifest.json files is not a list")
        if len(files_doc) > MAX_FILES:
            raise CheckpointError(f"{what}: manifest.json lists over {MAX_FILES} files")
        files = tuple(_file_record(i, f, what) for i, f in enumerate(files_doc))
        check_paths([f.path for f in files], what=what)
        return cls(name=name, source=source, files=files, tools=tools, schema=schema)


def valid_name(name: str) -> bool:
    """A store name: ``model`` or ``org/model``, as Hugging Face spells repo ids.
    "--" and ".." are refused (as the hub refuses them): "org/model" is stored
    as the folder "org--model", so "org--model" itself must not be a name."""
    return (
        len(name) <= 200
        and NAME_RE.fullmatch(name) is not None
        and "--" not in name
        and ".." not in name
    )


def _opt_str(doc: dict[str, Any], key: str, what: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise CheckpointError(f"{what}: manifest.json {key} {value!r} is not a string or null")
    return value


def _file_record(i: int, doc: object, what: str) -> FileRecord:
    if not isinstance(doc, dict):
        raise CheckpointError(f"{what}: manifest.json files[{i}] is not an object")
    path, size, digest, role = (doc.get(k) for k in ("path", "size", "sha256", "role"))
    if not isinstance(path, str):
        raise CheckpointError(f"{what}: manifest.json files[{i}] has no path")
    check_path(path, what=what)
    if type(size) is not int or size < 0:
        raise CheckpointError(f"{what}: {path}: size {size!r} is not a byte count")
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise CheckpointError(f"{what}: {path}: sha256 {digest!r} is not 64 lowercase hex digits")
    if role not in ROLES:
        raise CheckpointError(f"{what}: {path}: role {role!r} is not one of {', '.join(ROLES)}")
    return FileRecord(path=path, size=size, sha256=digest, role=str(role))


def unsafe(path: str) -> bool:
    """A path that must never be written below a folder: absolute, drive or
    backslash paths, ``..``, ``.`` or empty parts, NUL or control characters."""
    parts = path.split("/")
    return (
        not path
        or len(path) > MAX_PATH_CHARS
        or _CONTROL.search(path) is not None
        or "\\" in path
        or path.startswith("/")
        or ":" in parts[0]
        or any(p in ("", ".", "..") for p in parts)
    )


def check_path(path: str, *, what: str) -> str:
    """``path`` if it is a manifest path (see the module docstring)."""
    if unsafe(path):
        raise CheckpointError(f"{what}: unsafe path {path!r} in manifest.json")
    parts = path.split("/")
    if len(parts) < 2 or parts[0] not in TOP_FOLDERS:
        raise CheckpointError(
            f"{what}: path {path!r} in manifest.json is not under source/ or artifacts/"
        )
    return path


def check_paths(paths: list[str], *, what: str) -> None:
    """No two paths that would land on one file: duplicates, case-only
    differences (macOS and Windows folders), or a file that is another's folder."""
    seen: dict[str, str] = {}
    for p in paths:
        key = p.casefold()
        if key in seen:
            kind = "duplicate path" if seen[key] == p else "paths differing only in case"
            raise CheckpointError(f"{what}: {kind} {p!r} in manifest.json")
        seen[key] = p
    for p in paths:
        parts = p.casefold().split("/")
        for n in range(2, len(parts)):
            folder = "/".join(parts[:n])
            if folder in seen:
                raise CheckpointError(
                    f"{what}: {seen[folder]!r} in manifest.json is both a file and the folder "
                    f"of {p!r}"
                )


def role_of(path: str) -> str:
    """The role of a file by its manifest path."""
    parts = PurePosixPath(path).parts
    name = parts[-1]
    low = name.lower()
    if parts[0] == "artifacts":
        if low.endswith(".gguf"):
            return "gguf"
        if len(parts) > 2 and parts[1].lower().startswith("onnx"):
            return "onnx"
        if low.endswith(".json"):
            return "recipe"
        return "other"
    if low.endswith(".safetensors") or low == "model.safetensors.index.json":
        return "weights"
    if low in _TOKENIZER or (low.startswith("tokenizer") and low.endswith((".json", ".model"))):
        return "tokenizer"
    if low.endswith(".json") or low.endswith(".jinja"):
        return "config" if not low.endswith(".jinja") else "tokenizer"
    return "other"


def hash_file(path: Path) -> tuple[int, str]:
    """(size, sha256 hex) of a file, streamed in large reads: never whole in memory."""
    h = hashlib.sha256()
    buf = bytearray(HASH_CHUNK)
    view = memoryview(buf)
    size = 0
    try:
        with open(path, "rb") as f:
            while n := f.readinto(buf):
                h.update(view[:n])
                size += n
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from e
    return size, h.hexdigest()


def tool_versions() -> dict[str, str | None]:
    """Versions of the tools that made or moved these files (None: not installed)."""
    found: dict[str, str | None] = {}
    for key, dist in _TOOL_PACKAGES.items():
        version: str | None = None
        for candidate in (dist, f"{dist}-gpu"):
            try:
                version = metadata.version(candidate)
                break
            except metadata.PackageNotFoundError:
                continue
        found[key] = version
    return found
