"""What every converter does with its output: temp names, stale temps, digests.

Outputs are written under a hidden temporary name beside the target
(``.NAME<mark><pid>``) and renamed into place when complete. A conversion
killed with SIGKILL cannot clean up after itself, so the next conversion to
the same target removes temporaries whose process no longer exists.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def clean_stale_temps(out: Path, marks: tuple[str, ...]) -> None:
    """Remove ``.{out.name}{mark}{pid}`` files or folders whose process is gone."""
    for mark in marks:
        for stale in out.parent.glob(f".{out.name}{mark}*"):
            pid = stale.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not pid_alive(int(pid)):
                if stale.is_dir():
                    shutil.rmtree(stale, ignore_errors=True)
                else:
                    stale.unlink(missing_ok=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()
