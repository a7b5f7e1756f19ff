"""Where EdgeGLM keeps its own state: converted artifacts, probe caches, and
the model store.

Cache: ``EDGEGLM_CACHE_DIR`` overrides everything (tests and air-gapped
installs point it somewhere explicit); otherwise ``$XDG_CACHE_HOME/edgeglm``
or ``~/.cache/edgeglm``. A cache may be deleted at any time.

Store (``edgeglm models``, ``pull``, ``import``): data the user put there on
purpose, so it lives with user data, not in the cache: ``EDGEGLM_MODELS``,
otherwise ``$XDG_DATA_HOME/edgeglm/models`` or ``~/.local/share/edgeglm/models``.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    env = os.environ.get("EDGEGLM_CACHE_DIR")
    if env:
        base = Path(env)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "edgeglm"
    base.mkdir(parents=True, exist_ok=True)
    return base


def store_dir() -> Path:
    """The model store's root (see the module docstring), created on demand."""
    env = os.environ.get("EDGEGLM_MODELS")
    if env:
        base = Path(env).expanduser()
    else:
        xdg = os.environ.get("XDG_DATA_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".local" / "share") / "edgeglm" / "models"
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        from edgeglm.errors import UsageError

        raise UsageError(
            f"{base}: cannot create the model store there ({e.strerror or e}); "
            "set EDGEGLM_MODELS to a writable folder"
        ) from e
    return base
