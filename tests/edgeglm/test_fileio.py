"""edgeglm.fileio: the path check for names a model gives, and the atomic writer."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from edgeglm.errors import CheckpointError, ExitCode, InsufficientDiskError, UsageError
from edgeglm.fileio import atomic_output, contained, same_file, write_error


@pytest.mark.parametrize(
    "name",
    ["", "/etc/passwd", "../x.safetensors", "a/../../x", "C:\\x", "C:x", "a\\..\\b", "\\\\srv\\s"],
)
def test_contained_refuses_names_that_leave_the_folder(tmp_path: Path, name: str) -> None:
    with pytest.raises(CheckpointError):
        contained(tmp_path, name, what="index.json")


def test_contained_refuses_a_symlink_on_the_way(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "w.safetensors").write_bytes(b"x")
    model = tmp_path / "model"
    model.mkdir()
    (model / "sub").symlink_to(outside)
    with pytest.raises(CheckpointError, match="symlink"):
        contained(model, "sub/w.safetensors", what="index.json")


def test_contained_accepts_plain_relative_names(tmp_path: Path) -> None:
    assert contained(tmp_path, "a/b.safetensors", what="x") == tmp_path / "a" / "b.safetensors"
    with pytest.raises(UsageError):  # the caller picks the error class
        contained(tmp_path, "../b", what="x", error=UsageError)


def test_write_errors_map_to_exit_codes(tmp_path: Path) -> None:
    full = write_error(OSError(errno.ENOSPC, "No space left on device"), tmp_path / "o")
    assert isinstance(full, InsufficientDiskError)
    assert full.exit_code == ExitCode.CONVERSION_FAILED
    denied = write_error(OSError(errno.EROFS, "Read-only file system"), tmp_path / "o")
    assert isinstance(denied, UsageError) and "Read-only" in str(denied)


def test_atomic_output_places_the_file_only_when_complete(tmp_path: Path) -> None:
    final = tmp_path / "out.bin"
    with atomic_output(final) as tmp:
        tmp.write_bytes(b"done")
        assert not final.exists()
    assert final.read_bytes() == b"done"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_atomic_output_leaves_nothing_on_failure(tmp_path: Path) -> None:
    final = tmp_path / "out.bin"
    final.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_output(final) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert final.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_atomic_output_maps_write_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="directory"), atomic_output(tmp_path):
        pass
    with pytest.raises(UsageError, match="does not exist"), atomic_output(tmp_path / "a" / "b"):
        pass
    parent_is_file = tmp_path / "f"
    parent_is_file.write_bytes(b"")
    with pytest.raises(UsageError), atomic_output(parent_is_file / "out"):
        pass


def test_same_file_sees_hard_links_and_symlinks(tmp_path: Path) -> None:
    a = tmp_path / "a"
    a.write_bytes(b"x")
    os.link(a, tmp_path / "hard")
    (tmp_path / "soft").symlink_to(a)
    assert same_file(a, tmp_path / "hard") and same_file(a, tmp_path / "soft")
    assert not same_file(a, tmp_path / "missing")
