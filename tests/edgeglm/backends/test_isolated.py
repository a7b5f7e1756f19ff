from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest
from helpers import (
    child_abort,
    child_double,
    child_ggml_assert,
    child_interrupt_self,
    child_segfault,
    child_signal_state,
    child_usage_error,
)

from edgeglm.backends.isolated import run_isolated
from edgeglm.errors import BackendError, UsageError


def test_result_comes_back() -> None:
    assert run_isolated(child_double, 21) == 42


@pytest.mark.parametrize(("fn", "sig"), [(child_segfault, "SIGSEGV"), (child_abort, "SIGABRT")])
def test_native_crash_becomes_a_backend_error(fn: object, sig: str) -> None:
    with pytest.raises(BackendError, match=sig):
        run_isolated(fn)  # type: ignore[arg-type]


def test_typed_errors_cross_the_process_boundary() -> None:
    with pytest.raises(UsageError, match="bad input"):
        run_isolated(child_usage_error)


def test_ctrl_c_belongs_to_the_parent() -> None:
    # Blocked while the child imports (no KeyboardInterrupt traceback over the
    # parent's message), ignored once it runs, and the mask is clean again.
    assert run_isolated(child_signal_state) == (True, True, False)
    assert run_isolated(child_interrupt_self) == "survived"


def test_the_parent_keeps_its_signal_mask() -> None:
    import signal

    before = signal.pthread_sigmask(signal.SIG_BLOCK, ())
    run_isolated(child_double, 1)
    assert signal.pthread_sigmask(signal.SIG_BLOCK, ()) == before


@pytest.mark.parametrize("gdb", ["without gdb", "with gdb"])
def test_a_ggml_assert_shows_one_line_and_keeps_the_log(
    gdb: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A real abort in ggml: the message carries the assertion, not the backtrace
    ggml prints through gdb when gdb is on PATH; the whole log is kept in a file."""
    if gdb == "with gdb":
        if shutil.which("gdb") is None:
            pytest.skip("gdb is not installed")
    else:
        # ggml looks gdb up on PATH; a PATH with only python keeps it out.
        bare = tmp_path / "bin"
        bare.mkdir()
        (bare / "python").symlink_to(sys.executable)
        monkeypatch.setenv("PATH", str(bare))
    monkeypatch.setenv("EDGEGLM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("EDGEGLM_DEBUG", raising=False)
    with pytest.raises(BackendError) as info:
        run_isolated(child_ggml_assert)
    message = str(info.value)
    terminal = capfd.readouterr()
    assert terminal.out == "" and terminal.err == "", "the child wrote to the terminal"
    assert "\n" not in message
    assert re.search(
        r"SIGABRT\): GGML_ASSERT\(ggml_can_mul_mat\(a, b\)\) failed at ggml\.c:\d+;", message
    )
    kept = re.search(r"\(full log: (\S+)\)$", message)
    assert kept, message
    log = Path(kept.group(1))
    assert log.parent == tmp_path / "cache" / "logs"
    text = log.read_text()
    assert "GGML_ASSERT(ggml_can_mul_mat(a, b)) failed" in text
    if gdb == "with gdb":
        assert "ggml_mul_mat" in text  # the backtrace is in the log, not on the terminal
