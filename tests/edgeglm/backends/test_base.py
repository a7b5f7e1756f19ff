from __future__ import annotations

from edgeglm.backends.base import Timings


def test_decode_rate_excludes_the_prefill_token() -> None:
    t = Timings(prompt_tokens=10, prompt_seconds=0.5, completion_tokens=11, decode_seconds=2.0)
    assert t.decode_tokens_per_second == 5.0
    assert t.prefill_tokens_per_second == 20.0
    assert Timings().decode_tokens_per_second == 0.0
