"""Byte counts for people: one formatter for every view."""

from __future__ import annotations


def human_bytes(n: int | None) -> str:
    """1536 -> "1.5 KiB"; None (not measured) -> "–"."""
    if n is None:
        return "–"
    if n < 1024:
        return f"{n} B"
    size = n / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"
