"""``edgeglm import`` and ``edgeglm verify``: nothing unverified reaches the store.

A bundle (a tar file, or the folder it was unpacked into) is checked in this
order, and the first problem ends the import with one line naming the file:

1. ``manifest.json`` comes first and parses strictly (manifest.py: every
   path, size and digest);
2. the store's disk has room for the manifest's total size;
3. every other member is a regular file named exactly as a manifest path,
   with the recorded size: ``..``, absolute paths, symlinks, hard links,
   devices, FIFOs, names the manifest does not list ("extra file") and
   duplicates are refused, and any manifest path with no member is named as
   missing, all from the tar headers before one data byte is read;
4. each file is streamed into a staging folder of the store while it is
   hashed (never ``tarfile.extract``: the bundle chooses no path we write);
   a digest that differs names the file.

Only then is the staging folder renamed into the store. Any failure removes
it: nothing is half-imported, and the input is only ever read. An entry of
the same name is left alone when it already holds every file of the bundle,
refused when it holds other files, and replaced (atomically) with ``force``.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from edgeglm.errors import CheckpointError, InsufficientDiskError, ModelNotFoundError, UsageError
from edgeglm.fileio import write_error
from edgeglm.paths import store_dir
from edgeglm.store.layout import Entry, find, install, staging_dir, write_manifest
from edgeglm.store.manifest import (
    HASH_CHUNK,
    MANIFEST_NAME,
    MAX_FILES,
    MAX_MANIFEST_BYTES,
    FileRecord,
    Manifest,
    unsafe,
)
from edgeglm.units import human_bytes

# (bytes done, bytes in all)
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Member:
    """A file of the bundle: its manifest path, size, and where its bytes are
    (an offset in the tar, or a file of the unpacked folder)."""

    name: str
    size: int
    offset: int = 0
    path: Path | None = None


@dataclass(frozen=True)
class ImportResult:
    entry: Entry
    imported: bool  # False: the store already held every file of the bundle
    bytes: int
    repaired: tuple[str, ...] = ()  # files of that entry put back from the bundle


class _Reader:
    """A bundle's members, in order, as headers only; ``open`` reads one."""

    def __init__(self, src: Path) -> None:
        self.src = src

    def manifest_bytes(self) -> bytes:
        raise NotImplementedError

    def members(self) -> Iterator[Member | str]:
        """Each member after the manifest, or the name of a folder (tolerated
        only where the manifest has files below it)."""
        raise NotImplementedError

    def open(self, m: Member) -> io.RawIOBase:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _kind(info: tarfile.TarInfo) -> str | None:
    """What is wrong with a member's type (None: a plain file)."""
    if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE) and info.sparse is None:
        return None
    if info.issym():
        return f"a symlink (to {info.linkname!r})"
    if info.islnk():
        return f"a hard link (to {info.linkname!r})"
    if info.ischr() or info.isblk():
        return "a device file"
    if info.isfifo():
        return "a FIFO"
    if info.isdir():
        return "a folder"
    return f"a tar member of type {info.type!r}, not a plain file"


class _TarReader(_Reader):
    def __init__(self, src: Path) -> None:
        super().__init__(src)
        try:
            self.f: BinaryIO = open(src, "rb")  # noqa: SIM115 (closed in close())
        except OSError as e:
            raise CheckpointError(f"{src}: cannot read ({e.strerror or e})") from e
        try:
            # "r:": headers are read one by one as we ask, seeking over data;
            # members are never extracted by tarfile.
            self.tar = tarfile.open(fileobj=self.f, mode="r:")  # noqa: SIM115
        except (tarfile.TarError, OSError) as e:
            self.f.close()
            raise CheckpointError(f"{src}: not a tar file ({e})") from None

    def _next(self) -> tarfile.TarInfo | None:
        try:
            return self.tar.next()
        except (tarfile.TarError, OSError, UnicodeError) as e:
            raise CheckpointError(f"{self.src}: damaged or truncated tar ({e})") from None

    def manifest_bytes(self) -> bytes:
        first = self._next()
        if first is None or first.name != MANIFEST_NAME:
            got = "nothing" if first is None else repr(first.name)
            raise CheckpointError(
                f"{self.src}: the first member must be {MANIFEST_NAME}, found {got} "
                "(not an EdgeGLM bundle?)"
            )
        bad = _kind(first)
        if bad:
            raise CheckpointError(f"{self.src}: {MANIFEST_NAME} is {bad}")
        if first.size > MAX_MANIFEST_BYTES:
            raise CheckpointError(f"{self.src}: {MANIFEST_NAME} is over {MAX_MANIFEST_BYTES} bytes")
        with self.open(Member(MANIFEST_NAME, first.size, first.offset_data)) as f:
            data = f.read(first.size)
        if len(data) != first.size:
            raise CheckpointError(f"{self.src}: {MANIFEST_NAME} is truncated")
        return data

    def members(self) -> Iterator[Member | str]:
        while (info := self._next()) is not None:
            bad = _kind(info)
            if info.isdir():
                if info.size:
                    raise CheckpointError(f"{self.src}: folder member {info.name!r} carries data")
                yield info.name
                continue
            if bad:
                raise CheckpointError(f"{self.src}: member {info.name!r} is {bad}; refused")
            yield Member(info.name, info.size, info.offset_data)

    def open(self, m: Member) -> io.RawIOBase:
        # Our own handle at the member's data: the tar's bytes, read once.
        f = open(self.src, "rb", buffering=0)  # noqa: SIM115
        f.seek(m.offset)
        return cast(io.RawIOBase, f)

    def close(self) -> None:
        self.tar.close()
        self.f.close()


class _FolderReader(_Reader):
    """An unpacked bundle: ``manifest.json`` and the files at their paths."""

    def manifest_bytes(self) -> bytes:
        path = self.src / MANIFEST_NAME
        try:
            st = path.lstat()
        except OSError:
            raise CheckpointError(
                f"{self.src}: no {MANIFEST_NAME} (not an EdgeGLM bundle?)"
            ) from None
        if not stat.S_ISREG(st.st_mode):
            raise CheckpointError(f"{path}: not a regular file")
        if st.st_size > MAX_MANIFEST_BYTES:
            raise CheckpointError(f"{path}: over {MAX_MANIFEST_BYTES} bytes")
        try:
            return path.read_bytes()
        except OSError as e:
            raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from e

    def members(self) -> Iterator[Member | str]:
        def walk(d: Path, rel: str) -> Iterator[Member | str]:
            try:
                items = sorted(os.scandir(d), key=lambda e: e.name)
            except OSError as e:
                raise CheckpointError(f"{d}: cannot read ({e.strerror or e})") from e
            for item in items:
                name = f"{rel}{item.name}"
                if name == MANIFEST_NAME:
                    continue
                st = item.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    yield name
                    yield from walk(Path(item.path), f"{name}/")
                elif stat.S_ISREG(st.st_mode):
                    yield Member(name, st.st_size, path=Path(item.path))
                else:
                    what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file"
                    raise CheckpointError(f"{self.src}: {name} is {what}; refused")

        yield from walk(self.src, "")

    def open(self, m: Member) -> io.RawIOBase:
        assert m.path is not None
        return cast(io.RawIOBase, open(m.path, "rb", buffering=0))


def _reader(src: Path) -> _Reader:
    if src.is_dir():
        return _FolderReader(src)
    if src.is_file():
        return _TarReader(src)
    if src.exists():
        raise CheckpointError(f"{src}: not a tar file or a folder")
    raise ModelNotFoundError(f"{src}: no such file or folder")


def check_free_disk(src: Path, manifest: Manifest) -> None:
    """Refuse before writing anything when the store's disk cannot hold the bundle."""
    store = store_dir()
    free = shutil.disk_usage(store).free
    need = manifest.total_size
    if need > free:
        raise InsufficientDiskError(
            f"{src}: not enough free disk to import it: it needs {need} bytes "
            f"({human_bytes(need)}), {store} has {free} bytes ({human_bytes(free)}) free"
        )


def _members(reader: _Reader, manifest: Manifest) -> list[Member]:
    """The bundle's members checked against the manifest, headers only."""
    what = str(reader.src)
    records = {f.path: f for f in manifest.files}
    folders = {"/".join(p.split("/")[:n]) for p in records for n in range(1, p.count("/") + 1)}
    seen: dict[str, Member] = {}
    for m in reader.members():
        if isinstance(m, str):  # a folder: only one that holds manifest paths
            name = m.rstrip("/")
            if name not in folders:
                raise CheckpointError(f"{what}: extra folder {name!r}, not in the manifest")
            continue
        if m.name == MANIFEST_NAME:
            raise CheckpointError(f"{what}: a second {MANIFEST_NAME}")
        rec = records.get(m.name)
        if rec is None and unsafe(m.name):
            raise CheckpointError(f"{what}: member {m.name!r} has an unsafe path; refused")
        if rec is None:
            raise CheckpointError(f"{what}: extra file {m.name!r}, not in the manifest")
        if m.name in seen:
            raise CheckpointError(f"{what}: {m.name!r} appears twice")
        if m.size != rec.size:
            raise CheckpointError(f"{what}: {m.name}: {m.size} bytes, the manifest says {rec.size}")
        seen[m.name] = m
        if len(seen) > MAX_FILES:
            raise CheckpointError(f"{what}: over {MAX_FILES} files")
    missing = [p for p in records if p not in seen]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise CheckpointError(f"{what}: missing file(s) {', '.join(missing[:3])}{more}")
    return [seen[f.path] for f in manifest.files]


def _same(existing: Entry, manifest: Manifest) -> bool:
    """The entry already holds every file of the bundle, from the same source."""
    have = set(existing.manifest.files)
    return existing.manifest.source == manifest.source and all(f in have for f in manifest.files)


def import_bundle(
    src: Path, *, force: bool = False, progress: Progress | None = None
) -> ImportResult:
    """Verify the bundle at ``src`` and add it to the store (module docstring)."""
    src = Path(src)
    reader = _reader(src)
    work: Path | None = None
    try:
        manifest = Manifest.parse(reader.manifest_bytes(), what=str(src))
        check_free_disk(src, manifest)
        existing = find(manifest.name) if not force else None
        if existing is not None and not _same(existing, manifest):
            raise UsageError(
                f"{src}: {manifest.name} is already in the store with other files; "
                f"edgeglm import --force replaces it (or edgeglm rm {manifest.name})"
            )
        members = _members(reader, manifest)
        work = staging_dir("import-")
        done, total = 0, manifest.total_size
        buf = bytearray(HASH_CHUNK)
        view = memoryview(buf)
        for m, rec in zip(members, manifest.files, strict=True):
            dst = work / rec.path
            dst.parent.mkdir(parents=True, exist_ok=True)
            h = hashlib.sha256()
            try:
                fout = open(dst, "xb", buffering=0)  # noqa: SIM115
            except OSError as e:
                raise write_error(e, dst) from e
            with reader.open(m) as fin, fout:
                left = m.size
                while left:
                    try:
                        n = fin.readinto(view[: min(left, len(buf))])
                    except OSError as e:
                        raise CheckpointError(f"{src}: cannot read ({e.strerror or e})") from e
                    if not n:
                        raise CheckpointError(f"{src}: {rec.path} is truncated")
                    h.update(view[:n])
                    _write_all(fout, view[:n], dst)
                    left -= n
                    done += n
                    if progress is not None:
                        progress(done, total)
            if h.hexdigest() != rec.sha256:
                raise CheckpointError(
                    f"{src}: {rec.path}: sha256 {h.hexdigest()} differs from the manifest's "
                    f"{rec.sha256} (corrupted or changed in transit)"
                )
        if existing is not None:  # every byte checked: the store should have them all
            repaired = _repair(existing, manifest, work)
            return ImportResult(existing, False, total, repaired)
        write_manifest(work, manifest)
        entry = install(work, manifest.name)
        work = None
        return ImportResult(entry, True, total)
    finally:
        reader.close()
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


def _repair(existing: Entry, manifest: Manifest, work: Path) -> tuple[str, ...]:
    """Put the bundle's verified copy in place of any file of ``existing`` that
    no longer matches its record (each replaced atomically)."""
    damaged = []
    for f in manifest.files:
        if _check_file(existing.root, f.path, f.size, f.sha256) is not None:
            target = existing.root / f.path
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.is_symlink() or target.is_dir():
                    raise CheckpointError(f"{target}: not a regular file; edgeglm rm it first")
                os.replace(work / f.path, target)
            except OSError as e:
                raise write_error(e, target) from e
            damaged.append(f.path)
    return tuple(damaged)


def _write_all(f: BinaryIO, data: memoryview, path: Path) -> None:
    try:
        while data:
            n = f.write(data)
            data = data[n or 0 :]
    except OSError as e:
        raise write_error(e, path) from e


def verify(entry: Entry) -> list[str]:
    """Re-hash ``entry`` in place: one line per problem (none: it verifies).
    Missing files, size or digest changes, and files the manifest does not
    list (or that are not plain files) in ``source/`` and ``artifacts/``."""
    return file_problems(entry, entry.manifest.files, digests=True) + extra_files(entry)


def quick_check(entry: Entry) -> list[str]:
    """What can be seen without reading data: missing files, changed sizes,
    extra files. Not a digest check."""
    return file_problems(entry, entry.manifest.files, digests=False) + extra_files(entry)


def file_problems(entry: Entry, records: Iterable[FileRecord], *, digests: bool) -> list[str]:
    """A line for each of ``records`` that is missing, not a plain file, of
    another size or (``digests``: re-hashed) of other content."""
    problems = []
    for f in records:
        problem = _check_file(entry.root, f.path, f.size, f.sha256 if digests else None)
        if problem is not None:
            problems.append(problem)
    return problems


def _check_file(root: Path, rel: str, size: int, digest: str | None) -> str | None:
    from edgeglm.store.manifest import hash_file

    path = root / rel
    try:
        st = path.lstat()
    except FileNotFoundError:
        return f"{path}: missing"
    except OSError as e:
        return f"{path}: cannot read ({e.strerror or e})"
    if not stat.S_ISREG(st.st_mode):
        return f"{path}: not a regular file"
    if st.st_size != size:
        return f"{path}: {st.st_size} bytes, the manifest says {size}"
    if digest is None:
        return None
    try:
        _, got = hash_file(path)
    except CheckpointError as e:
        return str(e)
    if got != digest:
        return f"{path}: sha256 differs from the manifest (changed or corrupted)"
    return None


def extra_files(entry: Entry) -> list[str]:
    recorded = {f.path for f in entry.manifest.files}
    found = []
    for top in ("source", "artifacts"):
        base = entry.root / top
        if not base.is_dir() or base.is_symlink():
            if base.is_symlink() or (base.exists() and not base.is_dir()):
                found.append(f"{base}: not a folder")
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            rel = Path(dirpath).relative_to(entry.root).as_posix()
            for name in sorted(filenames) + sorted(
                d for d in dirnames if Path(dirpath, d).is_symlink()
            ):
                if f"{rel}/{name}" not in recorded:
                    found.append(f"{Path(dirpath) / name}: extra file, not in the manifest")
    for item in sorted(entry.root.iterdir()):
        if item.name not in ("source", "artifacts", MANIFEST_NAME):
            found.append(f"{item}: extra file, not in the manifest")
    return found
