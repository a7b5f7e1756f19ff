"""Local model artifacts for the Models screen and the model picker: GGUF files and ONNX folders.

Where they are: EdgeGLM's conversion cache, ``cache_dir()/artifacts``, the
one folder ``edgeglm run`` and this app convert checkpoints into
(``edgeglm.artifacts.cached_path``), and the paths the user added
(remembered in ``cache_dir()/tui-paths.json``).

What they hold comes from the GGUF header (EdgeGLM's strict reader; a
malformed file is listed with the reason it was refused) or from the ONNX
model's metadata. Reading a header takes seconds for a large vocabulary, so
nothing waits for it: ``find`` and ``peek`` list paths and sizes at once with
whatever is already known, and ``read`` (run in a worker) fills in the rest.
What was read is memoized on the file's identity (device, inode, size,
mtime, ctime), the way edgeglm.artifacts memoizes digests, and with its
helpers: in memory, and in ``cache_dir()/tui-artifact-meta.json`` for the
next start.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from edgeglm.artifacts import cached_path, file_identity, load_memo, memoizable, resolve, save_memo
from edgeglm.converters.gguf.quant_types import quant_name
from edgeglm.errors import EdgeGLMError, UsageError
from edgeglm.fileio import contained
from edgeglm.gguf_file import read_gguf
from edgeglm.paths import cache_dir

Kind = Literal["gguf", "onnx"]
MEMO_FILE = "tui-artifact-meta.json"
ONNX_MODEL = "model.onnx"
# "<checkpoint>-<fingerprint>", the folder cached_path names per checkpoint
_FINGERPRINTED = re.compile(r"^(?P<name>.+)-[0-9a-f]{16}$")


@dataclass(frozen=True)
class ArtifactInfo:
    path: Path
    kind: Kind
    size_bytes: int
    architecture: str | None = None
    quant: str | None = None
    name: str | None = None
    error: str | None = None  # why its metadata could not be read
    known: bool = True  # False until ``read`` has looked inside

    @property
    def label(self) -> str:
        if store_model(self.path) is not None:  # org/model:Q4_K_M, as commands name it
            return checkpoint_name(self.path)
        return self.name or checkpoint_name(self.path)

    @property
    def in_cache(self) -> bool:
        return is_cached(self.path)

    @property
    def format(self) -> str:
        return "GGUF" if self.kind == "gguf" else "ONNX"


def artifacts_dir() -> Path:
    return cache_dir() / "artifacts"


def is_cached(path: Path) -> bool:
    """Whether ``path`` is something EdgeGLM converted (inside its cache), not a user's file."""
    return path.resolve().is_relative_to(artifacts_dir().resolve())


def store_model(path: Path) -> str | None:
    """The store name of the model whose converted artifact ``path`` is
    (``<store>/org--model/artifacts/Q4_K_M.gguf``: ``org/model``), else None."""
    from edgeglm.store.layout import entry_name_of

    return entry_name_of(path.parent.parent) if path.parent.name == "artifacts" else None


def checkpoint_name(path: Path) -> str:
    """A readable name from the path: the checkpoint's for cached artifacts,
    ``org/model:Q4_K_M`` for a store model's."""
    stem = path.stem if path.suffix.lower() == ".gguf" else path.name
    model = store_model(path)
    if model is not None:
        return f"{model}:{stem}"
    if is_cached(path) and path.parent.resolve() != artifacts_dir().resolve():
        m = _FINGERPRINTED.match(path.parent.name)
        return m.group("name") if m else path.parent.name
    return stem


# -- the paths the user added ------------------------------------------------


def _paths_file() -> Path:
    return cache_dir() / "tui-paths.json"


def user_paths() -> list[Path]:
    try:
        data = json.loads(_paths_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [Path(p) for p in data if isinstance(p, str)] if isinstance(data, list) else []


def _write_user_paths(paths: list[Path]) -> None:
    f = _paths_file()
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_name(f".{f.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps([str(p) for p in paths]), encoding="utf-8")
    os.replace(tmp, f)


def add_user_path(path: Path) -> None:
    _write_user_paths([p for p in user_paths() if p != path] + [path])


def forget_user_path(path: Path) -> bool:
    """Stop listing ``path`` (or the added folder holding it); the files stay.
    False when it was not added by the user."""
    kept = [p for p in user_paths() if p != path and not path.is_relative_to(p)]
    if len(kept) == len(user_paths()):
        return False
    _write_user_paths(kept)
    return True


# -- finding -------------------------------------------------------------------


def is_onnx_folder(path: Path) -> bool:
    """A folder EdgeGLM's ONNX backend opens (what edgeglm.artifacts.resolve calls ONNX)."""
    return path.is_dir() and ((path / "genai_config.json").is_file() or any(path.glob("*.onnx")))


def find(roots: list[Path]) -> list[tuple[Path, Kind]]:
    """GGUF files and ONNX folders under each root (a root may itself be one),
    each once. Hidden entries are skipped: converters write there first."""
    seen: dict[Path, Kind] = {}
    for root in roots:
        if root.is_file():
            if root.suffix.lower() == ".gguf":
                seen.setdefault(root.resolve(), "gguf")
            continue
        if is_onnx_folder(root):
            seen.setdefault(root.resolve(), "onnx")
            continue
        if not root.is_dir():
            continue
        for folder, dirs, files in os.walk(root):
            here = Path(folder)
            dirs.sort()
            for d in list(dirs):
                if d.startswith(".") or is_onnx_folder(here / d):
                    dirs.remove(d)  # an ONNX folder is one artifact: not walked into
                    if not d.startswith("."):
                        seen.setdefault((here / d).resolve(), "onnx")
            for f in sorted(files):
                if f.lower().endswith(".gguf") and not f.startswith("."):
                    seen.setdefault((here / f).resolve(), "gguf")
    return list(seen.items())


def roots() -> list[Path]:
    """Where artifacts are: the conversion cache, each store model's
    ``artifacts/`` (the Models screen lists those in its own table), and
    the paths the user added."""
    from edgeglm.store.layout import entries

    try:
        stored = [e.artifacts_dir for e in entries()]
    except EdgeGLMError:  # an unusable store: the rest is still listed
        stored = []
    return [artifacts_dir(), *stored, *user_paths()]


# -- what they hold ------------------------------------------------------------

_memo: dict[str, str] | None = None  # identity -> metadata (JSON), as on disk
_memo_lock = threading.Lock()
_memo_dirty = False


def _memo_entries() -> dict[str, str]:
    global _memo
    if _memo is None:
        _memo = load_memo(MEMO_FILE)
    return _memo


def _onnx_model(folder: Path) -> Path | None:
    """The folder's model file: EdgeGLM's model.onnx, else the first .onnx."""
    if (folder / ONNX_MODEL).is_file():
        return folder / ONNX_MODEL
    return next(iter(sorted(folder.glob("*.onnx"))), None)


def _stat(path: Path, kind: Kind) -> os.stat_result:
    """The file whose identity stands for the artifact's content."""
    if kind == "onnx":
        return (_onnx_model(path) or path).stat()
    return path.stat()


def _size(path: Path, kind: Kind) -> int:
    if kind == "gguf":
        return path.stat().st_size
    return sum(e.stat().st_size for e in os.scandir(path) if e.is_file())


def _key(path: Path, kind: Kind, st: os.stat_result) -> str:
    # the path too: the same inode under two names is listed under each
    return f"{kind}:{path}:{file_identity(st)}"


def peek(path: Path, kind: Kind) -> ArtifactInfo:
    """What is known without reading the file: its size, and its metadata if
    it was read before and has not changed since."""
    try:
        size = _size(path, kind)
        st = _stat(path, kind)
    except OSError as e:
        return ArtifactInfo(path, kind, 0, error=f"cannot read ({e.strerror or e})")
    with _memo_lock:
        raw = _memo_entries().get(_key(path, kind, st))
    if raw is not None:
        with contextlib.suppress(ValueError, TypeError):
            data: dict[str, Any] = json.loads(raw)
            return ArtifactInfo(path, kind, size, **data)
    return ArtifactInfo(path, kind, size, known=False)


def read(path: Path, kind: Kind) -> ArtifactInfo:
    """Read the artifact's metadata (slow for a large GGUF: run it in a worker)."""
    known = peek(path, kind)
    if known.known:
        return known
    try:
        before = _stat(path, kind)
    except OSError as e:
        return replace(known, known=True, error=f"cannot read ({e.strerror or e})")
    info = _read_gguf(known) if kind == "gguf" else _read_onnx(known)
    try:
        after = _stat(path, kind)
    except OSError:
        return info
    # memoized only when the file was not changing while it was read, and not
    # so recently written that a change could keep its identity ("racily clean")
    if memoizable(before, after):
        fields = {k: v for k, v in asdict(info).items() if k not in ("path", "kind", "size_bytes")}
        global _memo_dirty
        with _memo_lock:
            entries = _memo_entries()
            key = _key(path, kind, after)
            entries.pop(key, None)
            entries[key] = json.dumps(fields)
            _memo_dirty = True
    return info


def save() -> None:
    """Write what was read since the last save to disk (best effort)."""
    global _memo_dirty
    with _memo_lock:
        if not _memo_dirty or _memo is None:
            return
        save_memo(MEMO_FILE, dict(_memo))
        _memo_dirty = False


def _read_gguf(info: ArtifactInfo) -> ArtifactInfo:
    try:
        header = read_gguf(info.path)
    except EdgeGLMError as e:
        return replace(info, known=True, error=str(e))
    except OSError as e:
        return replace(info, known=True, error=f"cannot read ({e.strerror or e})")
    arch, ftype, name = (
        header.get("general.architecture"),
        header.get("general.file_type"),
        header.get("general.name"),
    )
    return replace(
        info,
        known=True,
        architecture=str(arch) if arch is not None else None,
        quant=(quant_name(ftype) or f"type {ftype}") if isinstance(ftype, int) else None,
        name=str(name) if name else None,
    )


def _read_onnx(info: ArtifactInfo) -> ArtifactInfo:
    """The architecture and precision EdgeGLM's converter records in the model's
    metadata; for other exports, genai_config.json's model type and the folder name."""
    model = _onnx_model(info.path)
    quant = info.path.name[5:] if info.path.name.startswith("onnx-") else None
    arch = None
    try:
        genai = json.loads((info.path / "genai_config.json").read_text(encoding="utf-8"))
        arch = genai["model"]["type"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if model is None:
        return replace(info, known=True, architecture=arch, quant=quant, error="no .onnx file")
    try:
        import onnx

        props = {
            p.key: p.value for p in onnx.load(str(model), load_external_data=False).metadata_props
        }
    except Exception as e:  # protobuf's DecodeError and friends: a file we cannot read
        return replace(info, known=True, error=f"{model.name} is not a readable ONNX model ({e})")
    return replace(
        info,
        known=True,
        architecture=props.get("edgeglm.architecture") or arch,
        quant=props.get("edgeglm.quant") or quant,
    )


# -- listing in a worker ------------------------------------------------------

_recent: dict[Path, ArtifactInfo] = {}  # the last listing, as far as it was read
_recent_lock = threading.Lock()


def recent() -> list[ArtifactInfo]:
    """The last listing (this process), for a screen to show before its own scan ends."""
    with _recent_lock:
        return list(_recent.values())


def scan(
    on_found: Callable[[list[ArtifactInfo]], object],
    on_read: Callable[[ArtifactInfo], object],
    cancelled: Callable[[], bool],
) -> None:
    """List every artifact (``on_found``, at once, with what is known), then read
    the ones not read before, one by one (``on_read``). Runs in a worker thread."""
    found = [peek(path, kind) for path, kind in find(roots())]
    with _recent_lock:
        _recent.clear()
        _recent.update((info.path, info) for info in found)
    on_found(found)
    for info in found:
        if cancelled():
            break
        if not info.known:
            done = read(info.path, info.kind)
            with _recent_lock:
                if info.path in _recent:
                    _recent[info.path] = done
            on_read(done)
    save()


# -- converting and deleting -------------------------------------------------


def conversion_target(source: str, fmt: Kind, quant: str) -> tuple[Path, Path]:
    """(checkpoint folder, output) for converting ``source`` (an HF folder or a
    repo id in the HF cache): the path ``edgeglm run`` converts to, so the
    CLI and the app share one artifact. The names follow
    edgeglm.artifacts.ensure_gguf / ensure_onnx."""
    art = resolve(source)
    if art.kind != "hf":
        raise UsageError(f"{art.path} is already {art.kind.upper()}: add it with 'Add path'")
    name = f"{quant.upper()}.gguf" if fmt == "gguf" else f"onnx-{quant.lower()}"
    return art.path, cached_path(art.path, name)


def delete(info: ArtifactInfo) -> None:
    """Delete a converted artifact from EdgeGLM's cache, then its folder if
    empty. Anything outside the cache is refused: a user's own files are
    never deleted from here (UsageError)."""
    root = artifacts_dir().resolve()
    path = info.path.resolve()
    if not path.is_relative_to(root) or path == root:
        raise UsageError(f"{info.path} is not in EdgeGLM's cache ({root}); remove it yourself")
    # the one check for paths below a root: no symlink on the way out of it
    target = contained(
        root, path.relative_to(root).as_posix(), what=str(info.path), error=UsageError
    )
    if info.kind == "gguf" and target.is_file():
        target.unlink()
    elif info.kind == "onnx" and target.is_dir():
        shutil.rmtree(target)
    else:
        what = "file" if info.kind == "gguf" else "folder"
        raise UsageError(f"{info.path} is no longer a {info.format} {what}")
    parent = target.parent
    while parent != root and parent.is_relative_to(root):
        try:
            parent.rmdir()  # only if empty: other artifacts of the checkpoint stay
        except OSError:
            break
        parent = parent.parent
