from __future__ import annotations

from edgeglm.backends.base import StopStrings, Timings


def _stream(pieces: list[str], stops: tuple[str, ...]) -> tuple[str, bool]:
    s = StopStrings(stops)
    out = []
    for p in pieces:
        emit, stopped = s.feed(p)
        out.append(emit)
        if stopped:
            return "".join(out), True
    return "".join(out) + s.flush(), False


def test_stop_string_split_across_pieces_is_never_emitted() -> None:
    assert _stream(["Hello <|us", "er|> more"], ("<|user|>",)) == ("Hello ", True)


def test_partial_match_that_fails_is_released() -> None:
    assert _stream(["a <|u", "nrelated"], ("<|user|>",)) == ("a <|unrelated", False)


def test_held_text_is_flushed_at_the_end() -> None:
    assert _stream(["tail <|"], ("<|user|>",)) == ("tail <|", False)


def test_no_stops_passes_through() -> None:
    assert _stream(["a", "b"], ()) == ("ab", False)


def test_decode_rate_excludes_the_prefill_token() -> None:
    t = Timings(prompt_tokens=10, prompt_seconds=0.5, completion_tokens=11, decode_seconds=2.0)
    assert t.decode_tokens_per_second == 5.0
    assert t.prefill_tokens_per_second == 20.0
    assert Timings().decode_tokens_per_second == 0.0
