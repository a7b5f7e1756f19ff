"""The one set of request checks every backend and command shares (backends/base.py),
and run_isolated's one-line report of an unexpected exception in the child."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from edgeglm.backends.base import (
    SEED_MAX,
    SamplingParams,
    check_count,
    check_n_ctx,
    check_text,
    check_threads,
    sampling_problems,
)
from edgeglm.backends.isolated import ChildTraceback, run_isolated
from edgeglm.backends.sampling import Sampler
from edgeglm.errors import BackendError, UsageError


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", -5),
        ("max_tokens", 0),
        ("max_tokens", 2**31),
        ("max_tokens", 3.0),
        ("max_tokens", True),
        ("temperature", -1.0),
        ("temperature", math.nan),
        ("temperature", math.inf),
        ("temperature", "0.7"),
        ("top_p", 0.0),
        ("top_p", 1.0000001),
        ("top_p", math.nan),
        ("min_p", -0.1),
        ("min_p", 2.0),
        ("top_k", -1),
        ("top_k", 2**31),
        ("repeat_penalty", 0.0),
        ("repeat_penalty", -1.0),
        ("repeat_penalty", math.inf),
        ("seed", -1),
        ("seed", SEED_MAX + 1),
        ("stop", ("",)),
        ("stop", ("ok", 3)),
        ("stop", ("caf\udce9",)),
        ("stop", "not a list"),
    ],
)
def test_meaningless_sampling_settings_are_refused_by_name(field: str, value: Any) -> None:
    with pytest.raises(UsageError, match=f"invalid sampling parameters: {field} ") as info:
        SamplingParams(**{field: value})
    assert "\n" not in str(info.value)
    assert sampling_problems({field: value})


@pytest.mark.parametrize(
    "ok",
    [
        {},
        {"max_tokens": 1, "temperature": 0.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0},
        {"max_tokens": 2**31 - 1, "top_k": 2**31 - 1, "seed": SEED_MAX},
        {"temperature": 1e-3, "top_p": 1e-9, "min_p": 1.0, "repeat_penalty": 1e-3},
        {"max_tokens": np.int64(8), "temperature": np.float32(0.5)},
        {"stop": ["<|user|>", "\n\n"]},
    ],
)
def test_meaningful_settings_pass(ok: dict[str, Any]) -> None:
    SamplingParams(**ok)
    assert sampling_problems(ok) == []


def test_a_params_object_altered_after_it_was_built_is_still_refused() -> None:
    p = SamplingParams()
    object.__setattr__(p, "temperature", -1.0)
    with pytest.raises(UsageError, match="temperature"):
        Sampler(p)


def test_text_must_be_valid_utf8() -> None:
    assert check_text("héllo 世界", "--prompt") == "héllo 世界"
    assert check_text("", "--prompt") == ""
    # a non-UTF-8 byte on the command line arrives as a lone surrogate
    with pytest.raises(
        UsageError, match=r"--prompt is not valid UTF-8 \(byte 0xff at character 3\)"
    ):
        check_text("abc\udcff", "--prompt")
    with pytest.raises(UsageError, match="U\\+D800"):
        check_text("\ud800", "text")
    with pytest.raises(UsageError, match="is empty"):
        check_text("", "--prompt", empty_ok=False)
    with pytest.raises(UsageError, match="must be text"):
        check_text(b"bytes", "--prompt")


def test_counts_context_and_threads() -> None:
    assert check_count("repeat", 3, 1, 10) == 3
    for bad in (0, 11, -1, 2.5, True, "3", None):
        with pytest.raises(UsageError, match="repeat must be a whole number from 1 to 10"):
            check_count("repeat", bad, 1, 10)
    assert check_n_ctx(2048, 2048) == 2048
    with pytest.raises(UsageError, match="from 1 to"):
        check_n_ctx(0)
    with pytest.raises(UsageError, match="exceeds the model's trained context \\(2048"):
        check_n_ctx(100_000_000, 2048)
    assert check_threads(None) is None and check_threads(4) == 4
    with pytest.raises(UsageError, match="threads"):
        check_threads(100_000)


def test_an_unexpected_child_exception_is_one_line_with_the_traceback_kept(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EDGEGLM_DEBUG", raising=False)
    with pytest.raises(BackendError) as info:
        run_isolated(exec, "raise ValueError('first line\\nsecond line')", what="the probe")
    assert str(info.value) == (
        "the probe failed in a child process: ValueError: first line second line"
    )
    cause = info.value.__cause__
    assert isinstance(cause, ChildTraceback) and "Traceback (most recent call last)" in str(cause)
    assert "Traceback" not in capfd.readouterr().err
    monkeypatch.setenv("EDGEGLM_DEBUG", "1")
    with pytest.raises(BackendError):
        run_isolated(exec, "raise ValueError('boom')", what="the probe")
    assert "Traceback (most recent call last)" in capfd.readouterr().err
