"""Bad bundles for ``edgeglm import``, each made from a good one.

``build_bundle_cases(folder, good)`` reads the good bundle ``good`` (a tar
``edgeglm bundle`` wrote: manifest.json first, then ``source/...`` files)
and writes one broken copy per case under ``folder``. It returns
``{case name: BundleCase}``: the path to import, the exit code the import
must end with, and words the one-line message must contain (the file it
names). Every case must leave the store without an entry and without
staging leftovers, and the input unchanged.

Cases: a flipped byte, a missing, extra or renamed file, a member of
another size, a duplicate member, a manifest digest that is not 64 hex
digits, unsafe paths in the manifest or in the tar (``..``, absolute), a
symlink, a hard link, a character device and a FIFO member, a folder member
that is not a manifest folder, the manifest not first, a second manifest,
an unknown schema, a truncated tar, a file that is not a tar, and a
manifest whose total size is larger than any free disk (refused before
anything is written). Folder bundles (an unpacked tar) add a symlink, a
FIFO and an extra file on disk.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXIT_BAD = 4  # CheckpointError: the bundle does not verify
EXIT_DISK = 5  # InsufficientDiskError
MANIFEST = "manifest.json"
WEIGHTS = "source/model.safetensors"
CONFIG = "source/config.json"
TOKENIZER = "source/tokenizer.json"


@dataclass(frozen=True)
class BundleCase:
    path: Path
    expect: int
    words: tuple[str, ...]  # each must appear in the error line


Members = list[tuple[tarfile.TarInfo, bytes]]


def read_members(good: Path) -> Members:
    """Every member of a (small) good bundle, with its bytes."""
    found: Members = []
    with tarfile.open(good) as tar:
        for info in tar:
            f = tar.extractfile(info)
            found.append((info, f.read() if f is not None else b""))
    return found


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    return info, data


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.devmajor, info.devminor = 1, 3  # /dev/null's numbers, for the device case
    return info, b""


def write_members(path: Path, members: Members) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def _manifest(members: Members) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(members[0][1])
    return doc


def _with_manifest(members: Members, doc: dict[str, Any]) -> Members:
    return [_file(MANIFEST, json.dumps(doc).encode()), *members[1:]]


def _record(doc: dict[str, Any], path: str) -> dict[str, Any]:
    rec: dict[str, Any] = next(f for f in doc["files"] if f["path"] == path)
    return rec


def _adding(member: tuple[tarfile.TarInfo, bytes]) -> Callable[[Members], Members]:
    return lambda ms: [*ms, member]


def build_bundle_cases(folder: Path, good: Path) -> dict[str, BundleCase]:
    folder.mkdir(parents=True, exist_ok=True)
    base = read_members(good)
    assert base[0][0].name == MANIFEST, "the good bundle must start with its manifest"
    names = [i.name for i, _ in base]
    assert {WEIGHTS, CONFIG, TOKENIZER} <= set(names), names
    cases: dict[str, BundleCase] = {}

    def tar(name: str, members: Members, expect: int, *words: str) -> None:
        cases[name] = BundleCase(write_members(folder / f"{name}.tar", members), expect, words)

    def edit(name: str, change: Callable[[Members], Members], *words: str) -> None:
        tar(name, change([(i, d) for i, d in base]), EXIT_BAD, *words)

    def edit_manifest(name: str, change: Callable[[dict[str, Any]], None], *words: str) -> None:
        doc = _manifest(base)
        change(doc)
        tar(name, _with_manifest(base, doc), EXIT_BAD, *words)

    def flip(members: Members) -> Members:
        out = []
        for info, data in members:
            if info.name == WEIGHTS:
                i = len(data) // 2
                data = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]
            out.append((info, data))
        return out

    edit("flipped_byte", flip, WEIGHTS, "sha256")
    edit("missing_file", lambda ms: [m for m in ms if m[0].name != TOKENIZER], "missing", TOKENIZER)
    edit("extra_file", lambda ms: [*ms, _file("source/run_me.py", b"print(1)\n")], "extra file",
         "source/run_me.py")  # fmt: skip
    edit(
        "renamed_file",
        lambda ms: [_file("source/config.json.bak", d) if i.name == CONFIG else (i, d)
                    for i, d in ms],
        "source/config.json.bak",
    )  # fmt: skip
    edit(
        "size_differs",
        lambda ms: [_file(CONFIG, d + b" ") if i.name == CONFIG else (i, d) for i, d in ms],
        CONFIG,
        "bytes",
    )
    edit("duplicate_member", lambda ms: [*ms, next(m for m in ms if m[0].name == CONFIG)],
         CONFIG, "twice")  # fmt: skip
    edit("dotdot_member", lambda ms: [*ms, _file("source/../../escaped.txt", b"x")],
         "unsafe path", "source/../../escaped.txt")  # fmt: skip
    edit("absolute_member", lambda ms: [*ms, _file("/tmp/edgeglm-escaped.txt", b"x")],
         "unsafe path", "/tmp/edgeglm-escaped.txt")  # fmt: skip
    for case, kind, words in (
        ("symlink_member", tarfile.SYMTYPE, ("symlink", "source/evil")),
        ("hardlink_member", tarfile.LNKTYPE, ("hard link", "source/evil")),
        ("device_member", tarfile.CHRTYPE, ("device", "source/evil")),
        ("fifo_member", tarfile.FIFOTYPE, ("FIFO", "source/evil")),
    ):
        edit(case, _adding(_special("source/evil", kind, "/etc/passwd")), *words)
    # A symlink in place of a file the manifest lists.
    edit(
        "symlink_as_listed_file",
        lambda ms: [_special(CONFIG, tarfile.SYMTYPE, "/etc/passwd") if i.name == CONFIG
                    else (i, d) for i, d in ms],
        "symlink", CONFIG,
    )  # fmt: skip
    edit("extra_folder", lambda ms: [*ms, _special("source/sub", tarfile.DIRTYPE)],
         "extra folder", "source/sub")  # fmt: skip
    edit("manifest_not_first", lambda ms: [ms[1], ms[0], *ms[2:]], "first member",
         MANIFEST)  # fmt: skip
    edit("second_manifest", lambda ms: [*ms, ms[0]], "second", MANIFEST)

    edit_manifest(
        "digest_not_hex",
        lambda doc: _record(doc, CONFIG).update(sha256="z" * 64),
        CONFIG,
        "64 lowercase hex",
    )
    edit_manifest(
        "digest_too_short",
        lambda doc: _record(doc, CONFIG).update(sha256="ab" * 16),
        CONFIG,
        "64 lowercase hex",
    )
    edit_manifest(
        "manifest_dotdot_path",
        lambda doc: _record(doc, CONFIG).update(path="source/../../config.json"),
        "unsafe path",
        "config.json",
    )
    edit_manifest(
        "manifest_absolute_path",
        lambda doc: _record(doc, CONFIG).update(path="/etc/config.json"),
        "unsafe path",
        "/etc/config.json",
    )
    edit_manifest(
        "manifest_outside_folders",
        lambda doc: _record(doc, CONFIG).update(path="config.json"),
        "not under source/ or artifacts/",
    )
    edit_manifest(
        "manifest_duplicate_path",
        lambda doc: doc["files"].append(dict(_record(doc, CONFIG))),
        "duplicate path",
        CONFIG,
    )
    edit_manifest("unknown_schema", lambda doc: doc.update(schema=2), "schema 2")
    edit_manifest("negative_size", lambda doc: _record(doc, CONFIG).update(size=-1), CONFIG,
                  "size")  # fmt: skip
    edit_manifest("bad_name", lambda doc: doc.update(name="../evil"), "name")

    # Larger than any free disk: refused from the manifest, before a byte is written.
    doc = _manifest(base)
    _record(doc, WEIGHTS).update(size=1 << 62)
    tar("larger_than_disk", _with_manifest(base, doc), EXIT_DISK, "not enough free disk",
        "bytes")  # fmt: skip

    raw = good.read_bytes()
    (folder / "truncated.tar").write_bytes(raw[: len(raw) // 2])
    cases["truncated"] = BundleCase(folder / "truncated.tar", EXIT_BAD, ("truncated",))
    (folder / "not_a_tar.tar").write_bytes(b"this is not a tar file\n" * 100)
    cases["not_a_tar"] = BundleCase(folder / "not_a_tar.tar", EXIT_BAD, ("not a tar",))

    # Unpacked bundles: a folder with manifest.json and the files.
    def unpacked(name: str) -> Path:
        root = folder / name
        for info, data in base:
            (root / info.name).parent.mkdir(parents=True, exist_ok=True)
            (root / info.name).write_bytes(data)
        return root

    root = unpacked("folder_symlink")
    (root / CONFIG).unlink()
    (root / CONFIG).symlink_to("/etc/passwd")
    cases["folder_symlink"] = BundleCase(root, EXIT_BAD, ("symlink", CONFIG))
    root = unpacked("folder_extra_file")
    (root / "source" / "run_me.py").write_text("print(1)\n")
    cases["folder_extra_file"] = BundleCase(root, EXIT_BAD, ("extra file", "source/run_me.py"))
    root = unpacked("folder_fifo")
    os.mkfifo(root / "source" / "pipe")
    cases["folder_fifo"] = BundleCase(root, EXIT_BAD, ("not a regular file", "source/pipe"))
    root = unpacked("folder_flipped_byte")
    data = bytearray((root / WEIGHTS).read_bytes())
    data[len(data) // 3] ^= 0x80
    (root / WEIGHTS).write_bytes(bytes(data))
    cases["folder_flipped_byte"] = BundleCase(root, EXIT_BAD, (WEIGHTS, "sha256"))
    root = unpacked("folder_missing_file")
    (root / TOKENIZER).unlink()
    cases["folder_missing_file"] = BundleCase(root, EXIT_BAD, ("missing", TOKENIZER))
    return cases


def tree(path: Path) -> dict[str, tuple[int, int, int]]:
    """Every file below ``path``: (size, inode, mtime_ns), to see that nothing changed."""
    found = {}
    for p in sorted(path.rglob("*")):
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            found[p.relative_to(path).as_posix()] = (st.st_size, st.st_ino, st.st_mtime_ns)
    return found


def digest(path: Path) -> str:
    """The bytes of a file or folder (names, types and contents), to see that
    an input came out unchanged."""
    import hashlib

    h = hashlib.sha256()
    items = [path] if path.is_file() else sorted(path.rglob("*"))
    for p in items:
        h.update(p.relative_to(path.parent).as_posix().encode() + b"\0")
        if p.is_symlink():
            h.update(b"link:" + os.readlink(p).encode())
        elif p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def store_leftovers(store: Path) -> list[str]:
    """Anything in a store that should be empty: entries, or staging folders
    (the entries' lock files are not data)."""
    if not store.exists():
        return []
    found = [p.name for p in store.iterdir() if p.name not in (".staging", ".locks")]
    staging = store / ".staging"
    if staging.exists():
        found += [f".staging/{p.name}" for p in staging.iterdir()]
    return found
