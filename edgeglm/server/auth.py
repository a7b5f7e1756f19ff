"""API keys: ``Authorization: Bearer KEY`` or ``X-Api-Key: KEY``, compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from pathlib import Path

from edgeglm.errors import UsageError

# Paths anyone may read: a load balancer's health check carries no key.
OPEN_PATHS = frozenset({"/health"})


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request carries (Bearer first), or None."""
    auth = headers.get("authorization")
    if auth is not None:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = headers.get("x-api-key")
    return key.strip() if key else None


def key_matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison (hmac.compare_digest), as bytes so any text compares."""
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))


def read_key_file(path: Path) -> str:
    """The key in ``path``: its first line, stripped; an empty or unreadable file is refused."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise UsageError(f"--api-key-file {path}: cannot read ({reason})") from e
    lines = text.strip().splitlines()
    key = lines[0].strip() if lines else ""
    if not key:
        raise UsageError(f"--api-key-file {path}: the file is empty")
    return key


def check_key(key: str, what: str = "--api-key") -> str:
    if not key.strip() or any(c.isspace() for c in key.strip()):
        raise UsageError(f"{what}: a key must be non-empty and contain no spaces")
    return key.strip()
