"""The real `edgeglm` command on requests that must be refused or bounded.

- every bad command-line value (tests/malformed/cli_values.py) on ``run`` with
  both backends (a GGUF in llama.cpp, an ONNX folder in ONNX Runtime),
  ``score`` and ``bench``: exit 2, one line on stderr, no traceback, nothing on
  stdout;
- every chat-template bomb (tests/malformed/templates.py) through ``run``:
  exit 4, one line, within a hang guard, and the whole process tree's peak
  memory far below what the bomb asks for;
- ``score -o`` and ``bench -o`` on an unwritable place or a full disk: exit
  2 or 5, one line, nothing at the output path and no temporary file left.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from helpers import HF_FIXTURES
from malformed.cli_values import CASE_NAMES, CliValueCase, build_cli_value_cases
from malformed.templates import EXPECTED, build_template_cases, source_gguf

from edgeglm.errors import ExitCode

HANG_GUARD_S = 300  # a guard against hangs, not a speed check
# Not the repo root, where `python -m edgeglm` would find the bare source folder.
NEUTRAL_CWD = os.environ["HOME"]  # the suite's temporary home (tests/conftest.py)


def edgeglm(
    args: Sequence[str | bytes], *, env: dict[str, str] | None = None, fsize: int | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m edgeglm ARGS``; with ``fsize``, under a file-size limit (a full disk:
    writes past it fail with EFBIG, SIGXFSZ ignored, as a full disk gives ENOSPC)."""
    cmd: list[str | bytes] = [sys.executable, "-m", "edgeglm", *args]
    if fsize is not None:
        boot = (
            "import os, resource, signal, sys; "
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({fsize}, {fsize})); "
            "os.execv(sys.executable, sys.argv[1:])"
        )
        cmd = [sys.executable, "-c", boot, *cmd]
    r = subprocess.run(
        cmd,
        capture_output=True,
        timeout=HANG_GUARD_S,
        env={**os.environ, **(env or {})},
        cwd=NEUTRAL_CWD,
    )
    return subprocess.CompletedProcess(
        r.args, r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
    )


def assert_one_line_error(r: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == code, (r.args, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    assert re.search(fragment, lines[0]), lines[0]


@pytest.fixture(scope="module")
def gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return source_gguf(tmp_path_factory.mktemp("gguf"))


@pytest.fixture(scope="module")
def onnx_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgeglm.converters.onnx import convert

    return convert(HF_FIXTURES / "glm4", tmp_path_factory.mktemp("onnx") / "int4", "int4").output


@pytest.fixture(scope="module")
def cases_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-values")


@pytest.fixture(scope="module")
def cases(cases_dir: Path) -> dict[str, CliValueCase]:
    return build_cli_value_cases(cases_dir)


@pytest.fixture(scope="module")
def template_cases(gguf: Path) -> dict[str, Path]:
    return build_template_cases(gguf.parent)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_values_exit_2_with_one_line(
    name: str, cases: dict[str, CliValueCase], cases_dir: Path, gguf: Path, onnx_folder: Path
) -> None:
    case = cases[name]
    before = sorted(p.name for p in cases_dir.rglob("*"))
    # run takes both backends; score and bench refuse before any model matters
    models = [gguf, onnx_folder] if case.command == "run" else [gguf]
    for model in models:
        r = edgeglm(case.argv(str(model)))
        assert_one_line_error(r, case.exit_code, re.escape(case.message))
        assert r.stdout == ""
    assert sorted(p.name for p in cases_dir.rglob("*")) == before  # no output, no temporary


def test_the_good_values_next_to_the_bad_ones_work(gguf: Path, onnx_folder: Path) -> None:
    for model in (gguf, onnx_folder):
        sampling = ["--temp", "0.7", "--top-p", "0.9", "--top-k", "40", "--min-p", "0.05"]
        more = ["--repeat-penalty", "1.1", "--seed", "7", "--ctx", "2048", "--system", "Hi."]
        r = edgeglm(["run", str(model), "-p", "Hello", "-n", "4", *sampling, *more])
        assert r.returncode == 0, r.stderr


def _run_measured(args: Sequence[str]) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run the CLI and also return the peak resident memory (bytes) of its whole
    process tree: wait4's rusage takes the largest of the process and every
    descendant it waited for (the template worker included)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeglm", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=NEUTRAL_CWD,
    )
    guard = threading.Timer(HANG_GUARD_S, proc.kill)
    guard.start()
    out: list[bytes] = []
    err: list[bytes] = []
    readers = [
        threading.Thread(target=lambda s, b: b.append(s.read()), args=(proc.stdout, out)),
        threading.Thread(target=lambda s, b: b.append(s.read()), args=(proc.stderr, err)),
    ]
    for t in readers:
        t.start()
    _, status, usage = os.wait4(proc.pid, 0)
    guard.cancel()
    for t in readers:
        t.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    done = subprocess.CompletedProcess(
        args, proc.returncode, out[0].decode(errors="replace"), err[0].decode(errors="replace")
    )
    return done, usage.ru_maxrss * 1024  # kilobytes on Linux


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="wait4 rusage in kilobytes")
# One bomb per limit through the real command (time, memory, a compile error);
# test_chat_template.py puts every bomb through the renderer itself.
@pytest.mark.parametrize("name", ["nested_loops", "string_repetition", "syntax_error"])
def test_template_bombs_exit_4_with_one_line_in_bounded_memory(
    name: str, template_cases: dict[str, Path]
) -> None:
    path = template_cases[name]
    # a hang would be killed at HANG_GUARD_S, and the exit code would say so
    r, peak = _run_measured(["run", str(path), "-p", "Hello", "-n", "4"])
    assert_one_line_error(r, int(ExitCode.BAD_CHECKPOINT), EXPECTED[name])
    assert path.name in r.stderr and "chat template is broken" in r.stderr
    # the bombs ask for 5 GiB and more; the worker's limit is 1 GiB above its start
    assert peak < 2 * 2**30, f"peak resident memory {peak / 2**30:.1f} GiB"


def _no_temporaries(folder: Path) -> None:
    assert not [
        p.name for p in folder.iterdir() if "edgeglm-tmp" in p.name or p.name.startswith(".")
    ]


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE")
def test_score_on_a_full_disk_exits_5_and_leaves_nothing(gguf: Path, tmp_path: Path) -> None:
    text = tmp_path / "t.txt"
    text.write_text("def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1)\n" * 4)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    env = {"EDGEGLM_CACHE_DIR": str(tmp_path / "cache"), "PYTHONDONTWRITEBYTECODE": "1"}
    # logits are tokens x 1024 floats: far past 16 KiB; the cache's files stay below it
    r = edgeglm(
        ["score", str(gguf), "--text", str(text), "-o", str(out_dir / "s.npz")],
        env=env,
        fsize=16 << 10,
    )
    assert_one_line_error(r, int(ExitCode.CONVERSION_FAILED), "not enough disk space")
    assert list(out_dir.iterdir()) == []
    r = edgeglm(["score", str(gguf), "--text", str(text), "-o", str(out_dir / "s.npz")], env=env)
    assert r.returncode == 0, r.stderr
    assert [p.name for p in out_dir.iterdir()] == ["s.npz"]  # the name as given


def test_score_to_an_unwritable_place_exits_2(gguf: Path, tmp_path: Path) -> None:
    text = tmp_path / "t.txt"
    text.write_text("hello world")
    target = Path("/proc/edgeglm-score.npz")  # refuses new files, even for root
    r = edgeglm(["score", str(gguf), "--text", str(text), "-o", str(target)])
    assert_one_line_error(r, int(ExitCode.USAGE), "cannot write there")
    assert not target.exists()


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE")
def test_bench_report_on_a_full_disk_exits_5_and_writes_none_of_the_files(
    gguf: Path, tmp_path: Path
) -> None:
    out_dir = tmp_path / "reports"
    out_dir.mkdir()
    env = {"EDGEGLM_CACHE_DIR": str(tmp_path / "cache"), "PYTHONDONTWRITEBYTECODE": "1"}
    # the JSON report is ~2 KB; the cache's small files fit below 1 KiB
    args = ["bench", str(gguf), "--repeat", "1", "-o", str(out_dir / "r.json")]
    r = edgeglm(args, env=env, fsize=1 << 10)
    assert_one_line_error(r, int(ExitCode.CONVERSION_FAILED), "not enough disk space")
    assert list(out_dir.iterdir()) == []
    r = edgeglm(args, env=env)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == ["r.csv", "r.json", "r.md", "r.svg"]
