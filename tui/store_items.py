"""The model store as rows for the Models screen: each entry's source checkpoint and
its converted artifacts, with what is known of their state.

Listing only stats files (``quick_check``'s kind of check: present, plain,
of the recorded size), so it is fast enough to run on every rescan; a full
re-hash is ``verify_items``, run in a worker when asked, one file at a time
so that it reports progress and can stop between files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from edgeglm.store.importer import extra_files, file_problems
from edgeglm.store.layout import Entry, scan
from edgeglm.store.manifest import FileRecord

# (file, bytes done, bytes in all)
VerifyProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class StoreItem:
    """One row: an entry's checkpoint ("source") or one of its artifacts."""

    key: str  # what `edgeglm run` takes: "org/model" (its checkpoint), "org/model:Q4_K_M.gguf"
    model: str
    origin: str  # "repo@commit" (12 hex digits at most), "" for a local folder
    part: str  # "source", "Q4_K_M.gguf", "onnx-int4"
    kind: str  # "checkpoint", "gguf", "onnx"
    quant: str
    size: int  # bytes, as recorded
    path: Path
    problems: tuple[str, ...]  # from the listing's size check (no digests)


def origin(entry: Entry) -> str:
    source = entry.manifest.source
    if not source.repo:
        return ""
    return f"{source.repo}@{(source.revision or '?')[:7]}"


def _groups(entry: Entry) -> list[tuple[StoreItem, tuple[FileRecord, ...]]]:
    """Each row of ``entry`` with the records it stands for (no problems yet)."""
    rows: list[tuple[StoreItem, tuple[FileRecord, ...]]] = []
    where = origin(entry)
    if entry.has_source:
        files = entry.source_files
        item = StoreItem(
            entry.name,
            entry.name,
            where,
            "source",
            "checkpoint",
            "",
            sum(f.size for f in files),
            entry.source_dir,
            (),
        )
        rows.append((item, files))
    for a in entry.artifacts():
        item = StoreItem(
            f"{entry.name}:{a.name}", entry.name, where, a.name, a.kind, a.quant, a.size, a.path, ()
        )
        rows.append((item, a.files))
    return rows


def list_store() -> tuple[list[StoreItem], list[str]]:
    """Every entry's rows, sizes checked; and a line per folder that is not an entry."""
    entries, damaged = scan()
    items: list[StoreItem] = []
    for entry in entries:
        rows = _groups(entry)
        extra = tuple(extra_files(entry))
        for i, (item, files) in enumerate(rows):
            problems = tuple(file_problems(entry, files, digests=False))
            if i == 0:  # files nobody recorded belong to the entry: shown on its first row
                problems += extra
            items.append(replace(item, problems=problems))
    return items, damaged


def verify_items(
    entry: Entry, progress: VerifyProgress, cancelled: Callable[[], bool]
) -> dict[str, tuple[str, ...]] | None:
    """Re-hash every file of ``entry``: the problems of each row (by key; none:
    it verifies), the lines ``importer.verify`` gives, split by row. None when
    ``cancelled`` said stop (checked between files)."""
    rows = _groups(entry)
    total = sum(f.size for _, files in rows for f in files)
    done = 0
    found: dict[str, tuple[str, ...]] = {}
    for i, (item, files) in enumerate(rows):
        problems: list[str] = []
        for f in files:
            if cancelled():
                return None
            progress(f.path, done, total)
            problems += file_problems(entry, [f], digests=True)
            done += f.size
        if i == 0:
            problems += extra_files(entry)
        found[item.key] = tuple(problems)
    progress("", done, total)
    return found
