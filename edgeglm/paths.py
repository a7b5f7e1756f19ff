"""Where EdgeGLM keeps its own state: converted artifacts, probe caches.

``EDGEGLM_CACHE_DIR`` overrides everything (tests and air-gapped installs
point it somewhere explicit); otherwise ``$XDG_CACHE_HOME/edgeglm`` or
``~/.cache/edgeglm``.
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
