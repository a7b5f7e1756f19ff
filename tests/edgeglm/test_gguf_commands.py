"""Malformed GGUFs through the commands that take one: plan, run, bench.

Every header-level case must end in exit 4 with one line on stderr, before
anything is loaded (typer's CliRunner, in this process: a case that slipped through
to llama.cpp would abort the test run itself). A GGUF that passes the header
checks but makes llama.cpp abort must end in exit 6 with one line, from
``run`` and ``bench`` alike, even when it replaced a file verified before
with the same size and modification time (real subprocesses: that is the
case where the old behaviour killed the process).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
import typer.testing
from helpers import FIXTURES, edgeglm
from malformed.gguf_cases import (
    GGUF_METADATA_CASE_KEYS,
    build_gguf_base,
    build_gguf_cases,
    build_gguf_metadata_cases,
    llama_abort_bytes,
)
from typer.testing import CliRunner

from edgeglm.cli import _register, app
from edgeglm.errors import ExitCode

PROFILE = str(FIXTURES / "hardware" / "laptop-rtx4060-8gb.json")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gguf-commands")


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEGLM_CACHE_DIR", str(tmp_path / "cache"))


def _one_line_failure(stdout: str, stderr: str, says: str) -> str | None:
    """None if this is a clean refusal: one stderr line saying ``says``, no data."""
    lines = stderr.strip().splitlines()
    if len(lines) != 1 or "Traceback" in stderr or stdout.strip():
        return f"not one line: {stderr!r} {stdout[:200]!r}"
    if says not in lines[0]:
        return f"does not say {says!r}: {lines[0]}"
    return None


@pytest.fixture(scope="module", autouse=True)
def _build_the_command_once() -> Iterator[None]:
    """typer's CliRunner rebuilds the click command from the app on every
    invoke (~25 ms of signature inspection); these tests invoke it ~200 times."""
    _register()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(typer.testing, "_get_command", functools.cache(typer.main.get_command))
        yield


def _invoke(args: list[str]) -> tuple[int, str, str]:
    r = CliRunner().invoke(app, args)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stdout, r.stderr


def _commands(path: Path) -> dict[str, list[str]]:
    return {
        "plan": ["plan", str(path), "--hardware", PROFILE],
        "run": ["run", str(path), "-p", "hi", "-n", "1"],
        "bench": ["bench", str(path), "--repeat", "1"],
    }


def test_every_malformed_gguf_is_exit_4_from_every_command(folder: Path) -> None:
    bad = {}
    for name, path in build_gguf_cases(folder).items():
        for command, args in _commands(path).items():
            code, out, err = _invoke(args)
            problem = _one_line_failure(out, err, str(path))
            if code != ExitCode.BAD_CHECKPOINT or problem:
                bad[f"{name} {command}"] = (code, problem or err)
    assert not bad


def test_metadata_that_disagrees_with_the_tensors_is_exit_4_naming_the_key(folder: Path) -> None:
    bad = {}
    for name, path in build_gguf_metadata_cases(folder).items():
        code, out, err = _invoke(_commands(path)["plan"])
        problem = _one_line_failure(out, err, GGUF_METADATA_CASE_KEYS[name])
        if code != ExitCode.BAD_CHECKPOINT or problem:
            bad[name] = (code, problem or err)
    assert not bad


def test_the_base_file_plans(folder: Path) -> None:
    code, out, err = _invoke([*_commands(build_gguf_base(folder))["plan"], "--json"])
    assert code == 0, err
    assert json.loads(out)["model"]["n_layer"] == 2


def test_real_processes_refuse_malformed_files_in_one_line(folder: Path, tmp_path: Path) -> None:
    cases = build_gguf_cases(folder)
    for command, name in (("run", "bad_magic"), ("plan", "n_kv_huge"), ("bench", "truncated_data")):
        r = edgeglm(*_commands(cases[name])[command], cwd=tmp_path)
        assert r.returncode == ExitCode.BAD_CHECKPOINT, (command, name, r.stderr)
        assert _one_line_failure(r.stdout, r.stderr, "not a") is None


def test_a_verified_file_rewritten_in_place_is_verified_again(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same size, same mtime, new content that makes llama.cpp abort: run and
    bench report a backend failure (exit 6) in one line; neither process dies."""
    from edgeglm import artifacts

    model = tmp_path / "m.gguf"
    good = build_gguf_base(folder).read_bytes()
    model.write_bytes(good)
    monkeypatch.setattr(artifacts, "RACY_NS", 0)  # memoize the digest at once
    artifacts.verify_gguf(model)
    digests = json.loads((tmp_path / "cache" / "gguf-digests.json").read_text())["entries"]
    assert artifacts.file_identity(model.stat()) in digests  # the fast path is armed

    before = model.stat()
    with open(model, "r+b") as f:  # in place: same inode
        f.write(llama_abort_bytes(good))
    os.utime(model, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = model.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )

    for command in ("run", "bench"):
        r = edgeglm(*_commands(model)[command], cwd=tmp_path)
        assert r.returncode == ExitCode.BACKEND_FAILED, (command, r.returncode, r.stderr)
        assert _one_line_failure(r.stdout, r.stderr, "crashed (SIGABRT)") is None
