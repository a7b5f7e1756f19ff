"""Streaming text from tokens: whole characters, and stop strings never shown in part."""

from __future__ import annotations

from collections.abc import Callable

from edgeglm.backends.text import StopStrings, TokenText


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


def test_the_earliest_stop_string_wins() -> None:
    assert _stream(["a </s> b <|user|>"], ("<|user|>", "</s>")) == ("a ", True)


def _bytes_decoder(pieces: dict[int, bytes]) -> Callable[[list[int]], str]:
    return lambda ids: b"".join(pieces[i] for i in ids).decode("utf-8", errors="replace")


def test_token_text_waits_for_whole_characters() -> None:
    euro = "€".encode()  # three bytes, one per token here
    t = TokenText(_bytes_decoder({1: euro[:1], 2: euro[1:2], 3: euro[2:], 4: b"!"}))
    assert [t.push(i) for i in (1, 2, 3, 4)] == ["", "", "€", "!"]
    assert t.flush() == ""


def test_token_text_flushes_an_incomplete_character() -> None:
    t = TokenText(_bytes_decoder({1: b"a", 2: "€".encode()[:2]}))
    assert t.push(1) == "a" and t.push(2) == ""
    assert t.flush() == "\ufffd"


def test_stop_string_split_across_tokens_is_cut() -> None:
    words = TokenText(_bytes_decoder({1: b"ab", 2: b"<", 3: b"/s", 4: b">x"}))
    stops = StopStrings(["</s>"])
    assert stops.feed(words.push(1)) == ("ab", False)
    assert stops.feed(words.push(2)) == ("", False)  # "<" may start "</s>"
    assert stops.feed(words.push(3)) == ("", False)
    assert stops.feed(words.push(4)) == ("", True)
    words = TokenText(_bytes_decoder({1: b"a<", 2: b"b"}))
    stops = StopStrings(["</s>"])
    assert stops.feed(words.push(1)) == ("a", False)
    assert stops.feed(words.push(2)) == ("<b", False)
