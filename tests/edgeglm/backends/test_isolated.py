from __future__ import annotations

import pytest
from helpers import (
    child_abort,
    child_double,
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
