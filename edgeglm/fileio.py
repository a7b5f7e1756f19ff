"""Files named by models and files we write: the two places input meets the disk.

``contained`` is the one check for every path a model file names (a shard in
``model.safetensors.index.json``, ONNX external data, a file listed in
``genai_config.json``): it must be a plain relative path that stays inside the
model's folder, with no symlink on the way out.

``atomic_output`` is the one way EdgeGLM writes a file at a path the user
chose: under a hidden temporary name beside it, renamed into place only when
complete, removed on any failure. ``write_error`` turns the ``OSError`` of a
failed write into the error the user should see: a full disk is a conversion
failure (exit 5), an unwritable location is a usage error (exit 2).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath, PureWindowsPath

from edgeglm.errors import CheckpointError, EdgeGLMError, InsufficientDiskError, UsageError

# Out of space, over quota, or past the file-size limit (RLIMIT_FSIZE).
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def contained(
    root: Path, name: str, *, what: str, error: type[EdgeGLMError] = CheckpointError
) -> Path:
    """``root / name`` if ``name`` is a relative path that stays inside ``root``.

    ``what`` names the file that gave the path, for the message. Refused:
    empty names, absolute or drive paths (POSIX or Windows), backslashes,
    ``..`` components, and symlinks anywhere below ``root``. The path need not
    exist; callers check that with the error that fits them.
    """
    posix, win = PurePosixPath(name), PureWindowsPath(name)
    if not name or "\0" in name or posix.is_absolute() or win.is_absolute() or win.drive:
        raise error(f"{what}: path {name!r} is not relative to {root}")
    if "\\" in name or ".." in posix.parts:
        raise error(f"{what}: path {name!r} leaves {root}")
    path = root
    for part in posix.parts:
        path = path / part
        if path.is_symlink():
            raise error(f"{what}: path {name!r} goes through a symlink ({path})")
    return path


def write_error(e: OSError, path: Path) -> EdgeGLMError:
    """The user-facing error for a write to ``path`` that failed with ``e``."""
    reason = e.strerror or str(e)
    if e.errno in _NO_SPACE:
        return InsufficientDiskError(f"{path}: not enough disk space to write it ({reason})")
    return UsageError(f"{path}: cannot write there ({reason})")


def temp_name(final: Path, mark: str = ".edgeglm-tmp-") -> Path:
    """The hidden temporary beside ``final`` that this process writes first."""
    return final.parent / f".{final.name}{mark}{os.getpid()}"


@contextmanager
def atomic_output(final: Path, *, mark: str = ".edgeglm-tmp-") -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success rename it to ``final``.

    On any exception (a write error, Ctrl-C, a bug) the temporary is removed
    and nothing appears at ``final``. ``OSError`` from the body or the rename
    comes out as ``write_error``.
    """
    if final.is_dir():
        raise UsageError(f"{final}: is a directory; give a file path")
    if not final.parent.is_dir():
        raise UsageError(f"{final.parent}: output folder does not exist")
    tmp = temp_name(final, mark)
    try:
        yield tmp
        os.replace(tmp, final)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise write_error(e, final) from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def same_file(a: Path, b: Path) -> bool:
    """True when both exist and are one file (same path, symlink or hard link)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
