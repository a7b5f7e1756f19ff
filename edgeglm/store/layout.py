"""The model store on disk: one folder per model, each with its manifest.

::

    <store_dir()>/
      org--model/                  the entry of "org/model"
        manifest.json              every file below, with size, sha256 and role
        source/                    the Hugging Face checkpoint (config, tokenizer, safetensors)
        artifacts/Q4_K_M.gguf      what EdgeGLM converted from it
        artifacts/onnx-int4/...
      .staging/                    work folders: a pull, an import, a replaced entry on its way out
      .locks/org--model.lock       taken while the entry's folder or manifest changes

Nothing appears in an entry half-made: new entries (and replaced ones) are
built in ``.staging`` on the same filesystem and renamed into place; a
manifest is rewritten through ``atomic_output``. A folder taken from
``.staging`` is the caller's work (a pull, an import) and is moved; any other
folder is copied, never touched. Every change to an entry (install, an
artifact recorded, a removal) holds the entry's lock (``entry_lock``), so two
processes converting the same model at once both get their artifact recorded.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from edgeglm.errors import CheckpointError, ModelNotFoundError, UsageError
from edgeglm.fileio import atomic_output, write_error
from edgeglm.paths import store_dir
from edgeglm.store.manifest import (
    HASH_CHUNK,
    MANIFEST_NAME,
    FileRecord,
    Manifest,
    Source,
    check_path,
    hash_file,
    role_of,
    tool_versions,
    valid_name,
)

STAGING = ".staging"
LOCKS = ".locks"
# name -> (size, sha256) of files already hashed (relative to the folder given)
Digests = dict[str, tuple[int, str]]


@dataclass(frozen=True)
class ArtifactInfo:
    """One converted artifact of an entry: a GGUF file or an ONNX folder."""

    name: str  # "Q4_K_M.gguf", "onnx-int4": its name under artifacts/
    kind: str  # "gguf" or "onnx"
    path: Path
    size: int  # bytes, as recorded
    quant: str  # "Q4_K_M", "int4"
    files: tuple[FileRecord, ...]

    def architecture(self) -> str:
        """The architecture it was converted for ("" when it cannot be read)."""
        import json

        from edgeglm.errors import EdgeGLMError

        try:
            if self.kind == "gguf":
                from edgeglm.gguf_file import read_gguf

                return read_gguf(self.path).architecture
            doc = json.loads((self.path / "genai_config.json").read_text(encoding="utf-8"))
            return str(doc.get("model", {}).get("type", ""))
        except (EdgeGLMError, OSError, ValueError, AttributeError):
            return ""


@dataclass(frozen=True)
class Entry:
    name: str
    root: Path
    manifest: Manifest

    @property
    def source_dir(self) -> Path:
        return self.root / "source"

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "artifacts"

    @property
    def source_files(self) -> tuple[FileRecord, ...]:
        return tuple(f for f in self.manifest.files if f.path.startswith("source/"))

    @property
    def has_source(self) -> bool:
        return bool(self.source_files)

    def artifacts(self) -> list[ArtifactInfo]:
        """The recorded artifacts, by name: GGUF files and ONNX folders."""
        groups: dict[str, list[FileRecord]] = {}
        for f in self.manifest.files:
            parts = f.path.split("/")
            if parts[0] == "artifacts" and f.role in ("gguf", "onnx"):
                groups.setdefault(parts[1], []).append(f)
        found = []
        for top, files in sorted(groups.items()):
            kind = "gguf" if files[0].role == "gguf" else "onnx"
            if kind == "gguf":
                quant = top[: -len(".gguf")] if top.lower().endswith(".gguf") else top
            else:
                quant = top[len("onnx-") :] if top.lower().startswith("onnx-") else top
            size = sum(f.size for f in files)
            found.append(
                ArtifactInfo(top, kind, self.artifacts_dir / top, size, quant, tuple(files))
            )
        return found

    def artifact(self, name: str) -> ArtifactInfo | None:
        """The artifact called ``name``: "Q4_K_M", "Q4_K_M.gguf", "onnx-int4"
        (case does not matter)."""
        want = name.casefold()
        for a in self.artifacts():
            if want in (a.name.casefold(), a.quant.casefold()) and (
                a.kind == "gguf" or want == a.name.casefold()
            ):
                return a
        return None


def check_name(name: str) -> str:
    if not valid_name(name):
        raise UsageError(
            f"{name!r} is not a store model name (NAME or ORG/NAME: letters, digits, '.', '_' "
            "and '-', starting with a letter or digit, no '--' or '..')"
        )
    return name


def entry_dir(name: str) -> Path:
    """The folder of ``name``'s entry ("org/model" -> "org--model"), existing or not."""
    return store_dir() / check_name(name).replace("/", "--")


def load_entry(root: Path) -> Entry:
    what = str(root)
    try:
        data = (root / MANIFEST_NAME).read_bytes()
    except OSError as e:
        raise CheckpointError(f"{root / MANIFEST_NAME}: cannot read ({e.strerror or e})") from e
    m = Manifest.parse(data, what=what)
    if m.name.replace("/", "--") != root.name:
        raise CheckpointError(f"{root / MANIFEST_NAME}: names {m.name!r}, not this folder")
    return Entry(m.name, root, m)


def find(name: str) -> Entry | None:
    """The entry of ``name``, None if the store has none. A damaged manifest
    is a CheckpointError naming it."""
    root = entry_dir(name)
    if not (root / MANIFEST_NAME).is_file():
        return None
    return load_entry(root)


def open_entry(name: str) -> Entry:
    entry = find(name)
    if entry is None:
        raise ModelNotFoundError(
            f"{name}: not in the model store ({store_dir()}); see edgeglm models"
        )
    return entry


def scan() -> tuple[list[Entry], list[str]]:
    """Every entry in the store, and a line for each folder that is not one."""
    found: list[Entry] = []
    problems: list[str] = []
    for d in sorted(store_dir().iterdir()):
        if d.name.startswith(".") or not d.is_dir():
            continue
        try:
            found.append(load_entry(d))
        except CheckpointError as e:
            problems.append(str(e))
    return found, problems


def entries() -> list[Entry]:
    return scan()[0]


def staging_dir(prefix: str) -> Path:
    """A fresh folder in the store's ``.staging``: on the store's filesystem, so
    what is built there is renamed into the store in one step."""
    base = store_dir() / STAGING
    try:
        base.mkdir(exist_ok=True)
        _sweep(base)
        return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=base))
    except OSError as e:
        raise write_error(e, base) from e


# Staging folders of processes that were killed (SIGKILL, power loss) are
# removed by the next one: only those a day old whose process is gone, so a
# store shared between machines never loses another machine's work in progress.
_STALE_S = 24 * 3600
_STAGED = re.compile(r"[a-z]+-(\d+)-")


def _sweep(base: Path) -> None:
    now = time.time()
    for d in base.iterdir():
        m = _STAGED.match(d.name)
        try:
            if m is None or now - d.lstat().st_mtime < _STALE_S:
                continue
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except (OSError, OverflowError):
            continue


def in_staging(path: Path) -> bool:
    try:
        return path.resolve().is_relative_to((store_dir() / STAGING).resolve())
    except OSError:
        return False


def regular_files(
    folder: Path, *, what: str, link_ok: Callable[[str], bool] | None = None
) -> list[str]:
    """Every file below ``folder`` as a POSIX relative path, sorted. Symlinks,
    devices, sockets and FIFOs are refused: a store holds plain files only
    (``link_ok``: the file symlinks that are to be read as the file they name)."""
    found: list[str] = []

    def walk(d: Path, rel: str) -> None:
        try:
            items = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as e:
            raise CheckpointError(f"{d}: cannot read ({e.strerror or e})") from e
        for item in items:
            name = f"{rel}{item.name}"
            if item.is_symlink() and link_ok is not None and link_ok(name):
                if not os.path.isfile(item.path):
                    raise CheckpointError(f"{what}: {name} links to no regular file")
                found.append(name)
            elif item.is_symlink():
                raise CheckpointError(f"{what}: {name} is a symlink; only plain files are stored")
            elif item.is_dir(follow_symlinks=False):
                walk(Path(item.path), f"{name}/")
            elif item.is_file(follow_symlinks=False):
                found.append(name)
            else:
                raise CheckpointError(f"{what}: {name} is not a regular file")

    walk(folder, "")
    return found


def copy_hashing(src: Path, dst: Path, *, expect: int | None = None) -> tuple[int, str]:
    """Copy ``src`` to a new file ``dst`` in one read pass, hashing what is
    copied: (size, sha256). ``expect``: the size ``src`` must have."""
    h = hashlib.sha256()
    buf = bytearray(HASH_CHUNK)
    view = memoryview(buf)
    size = 0
    try:
        fin = open(src, "rb")  # noqa: SIM115 (closed below, before dst)
    except OSError as e:
        raise CheckpointError(f"{src}: cannot read ({e.strerror or e})") from e
    with fin:
        try:
            fout = open(dst, "xb")  # noqa: SIM115
        except OSError as e:
            raise write_error(e, dst) from e
        with fout:
            while True:
                try:
                    n = fin.readinto(buf)
                except OSError as e:
                    raise CheckpointError(f"{src}: cannot read ({e.strerror or e})") from e
                if not n:
                    break
                chunk = view[:n]
                h.update(chunk)
                try:
                    fout.write(chunk)
                except OSError as e:
                    raise write_error(e, dst) from e
                size += n
    if expect is not None and size != expect:
        raise CheckpointError(f"{src}: {size} bytes, expected {expect} (changed while copied?)")
    return size, h.hexdigest()


def _records(root: Path, top: str, names: list[str], digests: Digests | None) -> list[FileRecord]:
    """Manifest records for ``root/<name>`` stored at ``top/<name>``, reusing
    ``digests`` where the file's size still agrees (nothing is hashed twice)."""
    records = []
    for rel in names:
        path = f"{top}/{rel}"
        check_path(path, what=str(root))
        known = (digests or {}).get(rel)
        size = (root / rel).stat().st_size
        if known is not None and known[0] == size:
            digest = known[1]
        else:
            size, digest = hash_file(root / rel)
        records.append(FileRecord(path, size, digest, role_of(path)))
    return records


def write_manifest(root: Path, manifest: Manifest) -> None:
    with atomic_output(root / MANIFEST_NAME) as tmp:
        tmp.write_bytes(manifest.to_json())


@contextlib.contextmanager
def entry_lock(name: str) -> Iterator[None]:
    """Held while ``name``'s entry changes: writers in other processes wait
    their turn (an advisory flock on ``.locks/org--model.lock``, released by
    the kernel if the holder dies). Not re-entrant: take it once per change."""
    base = store_dir() / LOCKS
    path = base / (check_name(name).replace("/", "--") + ".lock")
    try:
        base.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+b")  # noqa: SIM115 - held for the whole block
    except OSError as e:
        raise write_error(e, path) from e
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def install(work: Path, name: str) -> Entry:
    """Rename the complete entry built in ``work`` (a staging folder) to
    ``name``'s place, replacing any entry there (moved aside, then deleted)."""
    with entry_lock(name):
        return _install(work, name)


def _install(work: Path, name: str) -> Entry:
    final = entry_dir(name)
    final.parent.mkdir(parents=True, exist_ok=True)
    old: Path | None = None
    try:
        if final.exists():
            old = staging_dir("old-")
            os.rename(final, old / "entry")
        os.rename(work, final)
    except OSError as e:
        if old is not None and (old / "entry").exists() and not final.exists():
            try:
                os.rename(old / "entry", final)  # put the old entry back
            except OSError:
                old = None  # left in .staging rather than lost
        raise write_error(e, final) from e
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return load_entry(final)


def add_checkpoint(
    name: str, folder: Path, source: Source, digests: Digests | None = None
) -> Entry:
    """Make ``folder`` (a complete Hugging Face checkpoint) the source of ``name``.

    A folder inside the store's ``.staging`` (``staging_dir``) is moved, and
    is gone afterwards whatever happens; any other folder is copied while it
    is hashed. ``digests`` (relative path -> (size, sha256)) are the hashes
    the caller already computed, used where the size agrees. An entry with the
    same source files is left as it is (the new folder is dropped); an entry
    with other files is replaced, its artifacts with it (they were converted
    from the old files).
    """
    check_name(name)
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelNotFoundError(f"{folder}: no such folder")
    from edgeglm.checkpoint.hf import _cache_blob_link

    moved = in_staging(folder)
    # Copied from a Hugging Face cache snapshot: its files are links into the
    # repo's blobs, read as the files they are.
    names = regular_files(
        folder, what=str(folder), link_ok=None if moved else partial(_cache_blob_link, folder)
    )
    if not names:
        raise CheckpointError(f"{folder}: no files")
    work = staging_dir("add-")
    try:
        src_dir = work / "source"
        known: Digests = dict(digests or {})
        if moved:
            os.rename(folder, src_dir)
        else:
            for rel in names:
                (src_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                known[rel] = copy_hashing(folder / rel, src_dir / rel)
        files = _records(src_dir, "source", names, known)
        existing = find(name)
        if existing is not None and set(existing.source_files) == set(files):
            return existing
        manifest = Manifest(name=name, source=source, files=(), tools=tool_versions())
        write_manifest(work, manifest.with_files(files))
        entry = install(work, name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if moved:
            shutil.rmtree(folder, ignore_errors=True)
    return entry


def _artifact_top(entry: Entry, path: Path) -> str:
    try:
        rel = path.relative_to(entry.artifacts_dir)
    except ValueError:
        raise UsageError(f"{path}: not in {entry.artifacts_dir}") from None
    if len(rel.parts) != 1:
        raise UsageError(
            f"{path}: artifacts are files or folders directly in {entry.artifacts_dir}"
        )
    return rel.parts[0]


def add_artifact(entry: Entry, path: Path, digests: Digests | None = None) -> Entry:
    """Record the artifact at ``path`` (a GGUF file or an ONNX folder directly
    under the entry's ``artifacts/``), hashing it unless ``digests`` (relative
    to ``path``'s folder for a folder, the file's name for a file) has it."""
    top = _artifact_top(entry, path)
    if path.is_symlink() or not (path.is_file() or path.is_dir()):
        raise CheckpointError(f"{path}: not a regular file or folder")
    if path.is_dir():
        names = [f"{top}/{n}" for n in regular_files(path, what=str(path))]
        known = {f"{top}/{k}": v for k, v in (digests or {}).items()}
    else:
        names = [top]
        known = dict(digests or {})
    files = _records(entry.artifacts_dir, "artifacts", names, known)
    with entry_lock(entry.name):
        fresh = find(entry.name) or entry  # another process may have recorded something since
        kept = _outside(fresh.manifest.files, f"artifacts/{top}")
        manifest = replace(fresh.manifest, tools=tool_versions()).with_files([*kept, *files])
        write_manifest(entry.root, manifest)
    return Entry(entry.name, entry.root, manifest)


def _outside(files: tuple[FileRecord, ...], prefix: str) -> list[FileRecord]:
    """The records that are not ``prefix`` and not below it."""
    return [f for f in files if f.path != prefix and not f.path.startswith(prefix + "/")]


def disk_bytes(path: Path) -> int:
    """Bytes the files below ``path`` (or the file itself) occupy on disk."""
    total = 0
    for p in [path, *(path.rglob("*") if path.is_dir() else [])]:
        with contextlib.suppress(OSError):
            st = p.lstat()
            if stat.S_ISREG(st.st_mode):
                total += st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size
    return total


def remove(name: str, artifact: str | None = None) -> int:
    """Delete ``name``'s entry, or only its ``artifact``; the bytes freed.
    The files are moved out of the entry first, then deleted: an interrupted
    removal leaves a consistent entry (or none) and rubbish in ``.staging``."""
    with entry_lock(name):
        return _remove(name, artifact)


def _remove(name: str, artifact: str | None) -> int:
    entry = open_entry(name)
    if artifact is None:
        freed = disk_bytes(entry.root)
        trash = staging_dir("rm-")
        try:
            os.rename(entry.root, trash / "entry")
        except OSError as e:
            shutil.rmtree(trash, ignore_errors=True)
            raise write_error(e, entry.root) from e
        shutil.rmtree(trash, ignore_errors=True)
        return freed
    if artifact == "source":
        raise UsageError(f"{name}: rm {name} removes the whole model; its source cannot go alone")
    found = entry.artifact(artifact)
    if found is None:
        raise UsageError(f"{name} has no artifact {artifact!r}; it has: {known_artifacts(entry)}")
    freed = disk_bytes(found.path)
    kept = _outside(entry.manifest.files, f"artifacts/{found.name}")
    # The manifest first: interrupted after it, the entry has an unrecorded
    # file (verify names it), never a recorded file that is gone.
    write_manifest(entry.root, entry.manifest.with_files(kept))
    trash = staging_dir("rm-")
    try:
        if found.path.exists():
            os.rename(found.path, trash / found.name)
    except OSError as e:
        raise write_error(e, found.path) from e
    finally:
        shutil.rmtree(trash, ignore_errors=True)
    return freed


def known_artifacts(entry: Entry) -> str:
    names = (["source"] if entry.has_source else []) + [a.name for a in entry.artifacts()]
    return ", ".join(names) or "nothing"


def entry_name_of(root: Path) -> str | None:
    """The store name of the entry folder ``root`` ("org--model": "org/model")
    if it is one in the store (else None); nothing is read but its place."""
    if not (root / MANIFEST_NAME).is_file():
        return None
    try:
        if root.parent.resolve() != store_dir().resolve():
            return None
    except OSError:
        return None
    return root.name.replace("--", "/")  # store names never hold "--"


def store_entry_of(folder: Path) -> Entry | None:
    """The entry whose ``source/`` is ``folder``, if it is one (else None)."""
    if folder.name != "source" or entry_name_of(folder.parent) is None:
        return None
    try:
        return load_entry(folder.parent)
    except (OSError, CheckpointError):
        return None
