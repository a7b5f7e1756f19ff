"""``edgeglm bundle``: a store entry (or part of it) as one tar file.

The bundle is an uncompressed POSIX tar (PAX headers), ``manifest.json``
first, then each selected file at its manifest path. Weights do not
compress, and an uncompressed tar is one sequential write here and one
sequential read on the other side.

The tar is written here rather than by ``tarfile.add``: each file is read
once, every chunk both hashed and written, so a file that changed since it
was recorded fails the bundle (nothing is left at the output path) instead
of carrying bytes the manifest does not describe. Headers come from
``tarfile.TarInfo``; entries have mode 0644, owner 0 and mtime 0, so the same
entry always gives the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from edgeglm.errors import CheckpointError, UsageError
from edgeglm.fileio import atomic_output
from edgeglm.store.layout import Entry, known_artifacts
from edgeglm.store.manifest import HASH_CHUNK, MANIFEST_NAME, FileRecord, Manifest

# (bytes done, bytes in all)
Progress = Callable[[int, int], None]
_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE


@dataclass(frozen=True)
class BundleResult:
    output: Path
    manifest: Manifest
    bytes: int  # the bundle's size


def select(entry: Entry, names: Iterable[str] | None) -> list[FileRecord]:
    """The files a bundle of ``names`` carries: everything for none; else
    "source" for the checkpoint and each named artifact ("Q4_K_M",
    "Q4_K_M.gguf", "onnx-int4"). An unknown name is a UsageError listing
    what there is."""
    wanted = list(names or [])
    if not wanted:
        return list(entry.manifest.files)
    paths: set[str] = set()
    for name in wanted:
        if name == "source" and entry.has_source:
            paths.update(f.path for f in entry.source_files)
            continue
        found = entry.artifact(name)
        if found is None:
            raise UsageError(
                f"{entry.name} has no {name!r} to bundle; it has: {known_artifacts(entry)}"
            )
        paths.update(f.path for f in found.files)
    return [f for f in entry.manifest.files if f.path in paths]


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    info.type = tarfile.REGTYPE
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")


def _pad(size: int) -> bytes:
    return b"\0" * (-size % _BLOCK)


def write_bundle(
    entry: Entry,
    out: Path,
    artifacts: list[str] | None = None,
    progress: Progress | None = None,
) -> BundleResult:
    """Write the bundle of ``entry`` (``artifacts``: see ``select``) to ``out``."""
    files = select(entry, artifacts)
    manifest = entry.manifest.restricted(f.path for f in files)
    out = Path(out)
    try:
        inside = out.resolve().is_relative_to(entry.root.resolve())
    except OSError:
        inside = False
    if inside:
        raise UsageError(f"{out}: inside the model's own store entry; write the bundle elsewhere")
    total = manifest.total_size
    done = 0
    written = 0
    buf = bytearray(HASH_CHUNK)
    view = memoryview(buf)
    with atomic_output(out) as tmp, open(tmp, "wb", buffering=0) as dst:

        def put(data: bytes | memoryview) -> None:
            nonlocal written
            mv = memoryview(data)
            while mv:  # a raw write may be short
                n = dst.write(mv)
                mv = mv[n or 0 :]
                written += n or 0

        head = manifest.to_json()
        put(_header(MANIFEST_NAME, len(head)) + head + _pad(len(head)))
        for f in files:
            path = entry.root / f.path
            h = hashlib.sha256()
            try:
                src = open(path, "rb")  # noqa: SIM115 (closed below)
            except OSError as e:
                raise CheckpointError(
                    f"{path}: cannot read ({e.strerror or e}); edgeglm verify {entry.name}"
                ) from e
            with src:
                size = os.fstat(src.fileno()).st_size
                if size != f.size:
                    raise CheckpointError(
                        f"{path}: {size} bytes, the manifest says {f.size}; it changed since it "
                        f"was recorded (edgeglm verify {entry.name})"
                    )
                put(_header(f.path, f.size))
                left = f.size
                while left:
                    n = src.readinto(view[: min(left, len(buf))])
                    if not n:
                        raise CheckpointError(f"{path}: shorter than recorded ({f.size} bytes)")
                    h.update(view[:n])
                    put(view[:n])
                    left -= n
                    done += n
                    if progress is not None:
                        progress(done, total)
                if src.read(1):
                    raise CheckpointError(f"{path}: grew while it was bundled")
            if h.hexdigest() != f.sha256:
                raise CheckpointError(
                    f"{path}: sha256 differs from the manifest (changed or corrupted since it was "
                    f"recorded); edgeglm verify {entry.name}"
                )
            put(_pad(f.size))
        put(b"\0" * (2 * _BLOCK))  # end of archive
        put(b"\0" * (-written % _RECORD))
    return BundleResult(out, manifest, written)
