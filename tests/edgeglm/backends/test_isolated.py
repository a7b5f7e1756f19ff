from __future__ import annotations

import pytest
from helpers import child_abort, child_double, child_segfault, child_usage_error

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
