"""The TUI's plain-Python parts: think splitting, the conversation store, artifacts, bench rows."""

from __future__ import annotations

import io
import json
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from tui_support.fakes import bench_report, write_gguf

from edgeglm.tui import artifacts
from edgeglm.tui.bench_view import REFERENCE_TICK, cells, latency_ms, pareto, plot_layout
from edgeglm.tui.context import ContextOverflow, fit_context, reply_room
from edgeglm.tui.modal_export import problem, targets
from edgeglm.tui.settings import ChatSettings
from edgeglm.tui.store import Conversation, ConversationStore, Turn
from edgeglm.tui.streaming import (
    MAX_DELAY_S,
    MIN_DELAY_S,
    ReplyBuffer,
    Taken,
    live_tps,
    next_delay,
)
from edgeglm.tui.thinking import ThinkSplitter
from edgeglm.units import human_bytes


def split(pieces: list[str]) -> list[tuple[str, str]]:
    s = ThinkSplitter()
    out = [p for piece in pieces for p in s.feed(piece)] + s.flush()
    merged: list[tuple[str, str]] = []
    for part, text in out:
        if merged and merged[-1][0] == part:
            merged[-1] = (part, merged[-1][1] + text)
        else:
            merged.append((part, text))
    return merged


@pytest.mark.parametrize(
    "pieces",
    [
        ["<think>ab</think>cd"],
        ["<", "think>a", "b</", "think", ">cd"],
        ["<thi", "nk>ab</think", ">", "cd"],
    ],
)
def test_think_tags_split_across_chunks(pieces: list[str]) -> None:
    assert split(pieces) == [("think", "ab"), ("answer", "cd")]


def test_no_think_block_is_all_answer() -> None:
    assert split(["Hel", "lo <think> inline"]) == [("answer", "Hello <think> inline")]
    assert split(["<"]) == [("answer", "<")]  # a lone "<" is flushed as answer


def test_unclosed_think_stays_reasoning() -> None:
    assert split(["<think>still going </th"]) == [("think", "still going </th")]


def test_store_round_trip_and_newest_first(cache: Path) -> None:
    store = ConversationStore()
    a = Conversation(system="sys", turns=[Turn("user", "first question " * 10)])
    a.retitle()
    store.save(a)
    b = Conversation(turns=[Turn("user", "second"), Turn("assistant", "ok", "why", True)])
    store.save(b)
    (store.root / "broken.json").write_text("{not json")
    listed = store.list()
    assert [c.id for c in listed] == [b.id, a.id]  # the broken file is skipped
    assert listed[0].turns[1] == Turn("assistant", "ok", "why", True)
    assert len(a.title) <= 48 and a.title.endswith("…")
    assert a.messages()[0] == {"role": "system", "content": "sys"}
    assert not list(store.root.glob(".*.tmp"))  # atomic writes leave no temp files
    store.delete(a.id)
    assert [c.id for c in store.list()] == [b.id]


def test_artifacts_scan_reads_header_and_remembers_paths(cache: Path, tmp_path: Path) -> None:
    write_gguf(cache / "artifacts" / "m" / "Q4_K_M.gguf", "glm4", 15, "m")
    elsewhere = write_gguf(tmp_path / "own" / "x.gguf", "deepseek2", 1, "x")
    (tmp_path / "own" / "broken.gguf").write_bytes(b"GGUF\x03\x00\x00\x00junk")
    artifacts.add_user_path(elsewhere.parent)
    listed: list[artifacts.ArtifactInfo] = []
    read: list[artifacts.ArtifactInfo] = []
    artifacts.scan(listed.extend, read.append, lambda: False)
    assert sorted(a.path.name for a in listed) == ["Q4_K_M.gguf", "broken.gguf", "x.gguf"]
    assert not any(a.known for a in listed)  # listed before any header is read
    found = {a.path.name: a for a in read}
    assert (found["Q4_K_M.gguf"].architecture, found["Q4_K_M.gguf"].quant) == ("glm4", "Q4_K_M")
    assert (found["x.gguf"].architecture, found["x.gguf"].quant) == ("deepseek2", "F16")
    assert found["broken.gguf"].error is not None
    assert json.loads((cache / "tui-paths.json").read_text()) == [str(elsewhere.parent)]


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (None, 512, 2048, 5 * 2**30)] == [
        "–",
        "512 B",
        "2.0 KiB",
        "5.0 GiB",
    ]


def test_pareto_front_and_cells() -> None:
    rows = bench_report().rows
    front = {r.quant for r in pareto(rows)}
    assert front == {"F16", "Q8_0", "Q6_K", "Q4_K_M"}
    assert latency_ms(rows[3]) == pytest.approx(1000 / 95)
    assert cells(rows[0], True)[:2] == ("★", "glm4-tiny F16") and cells(rows[0], True)[7] == "ref"


def test_plot_layout_uses_the_svg_ticks_and_keeps_the_reference_apart() -> None:
    """The app's plot ticks as the exported SVG does (round steps, KL decades),
    and the reference sits in a band of its own under the log axis, not on the front."""
    rows = bench_report().rows
    unscored = replace(rows[2], label="no quality", quant="Q5_K", kl_mean=None)
    layout = plot_layout([*rows, unscored])
    assert layout.x_ticks == [0, 5, 10, 15, 20, 25] and layout.x_labels[:2] == ["0", "5"]
    assert layout.y_labels == [REFERENCE_TICK, "1e-3", "1e-2", "1e-1"]
    assert layout.y_ticks[1:] == pytest.approx([-3.0, -2.0, -1.0])
    (ref,) = [p for p in layout.points if p.row.reference]
    assert ref.row.quant == "F16" and ref.y == layout.y_ticks[0] < layout.y_ticks[1]
    assert [p.row.quant for p in layout.front] == ["Q4_K_M", "Q6_K", "Q8_0"]
    assert [r.quant for r in layout.unplaced] == ["Q5_K"]
    assert "Q5_K" not in {p.row.quant for p in layout.points}


def test_settings_validation_and_sampling() -> None:
    assert ChatSettings(temperature=-1, top_p=0, top_k=-1, max_tokens=0, seed=-1).problems()
    params = ChatSettings(temperature=0.3, max_tokens=64).sampling()
    assert (params.temperature, params.max_tokens) == (0.3, 64)
    assert "<|user|>" in params.stop


def test_real_planner_plans_the_fixture_with_reasons(fixtures_dir: Path) -> None:
    from rich.console import Console
    from tui_support.fakes import hardware

    from edgeglm.planner.explain import render_plan
    from edgeglm.tui.services import plan_model

    plan = plan_model(str(fixtures_dir / "glm4"), hardware())
    console = Console(width=100, record=True, file=io.StringIO())
    console.print(render_plan(plan))
    text = console.export_text()
    assert "llama.cpp" in text and "why" in text


def test_no_plan_reaches_the_runtime_loader(tmp_path: Path) -> None:
    """`edgeglm chat --no-plan`: the app's loader opens models with the backend's
    defaults, not the planner's (real llama.cpp on the converted glm4 fixture)."""
    from helpers import HF_FIXTURES

    from edgeglm.converters.gguf.convert import convert
    from edgeglm.runtime import planned_spec, unplanned_spec
    from edgeglm.tui.services import open_backend

    gguf = tmp_path / "m.gguf"
    convert(HF_FIXTURES / "glm4", gguf, "Q8_0")
    for use_plan, want in ((True, planned_spec(gguf)), (False, unplanned_spec(gguf))):
        m = open_backend(str(gguf), backend="auto", n_ctx=256, use_plan=use_plan)
        try:
            assert m.settings["flash_attn"] == want.flash_attn  # type: ignore[attr-defined]
            assert m.settings["type_k"] == want.type_k  # type: ignore[attr-defined]
        finally:
            m.close()


def test_reply_buffer_hands_over_everything_once() -> None:
    buf = ReplyBuffer()
    assert buf.take() == Taken("", 0, None, 0.0)
    buf.push("Hel", 1, 0.5)
    buf.push("lo", 1, 0.6)
    buf.push("", 1, 0.7)  # a token whose text is held back (a stop string may follow)
    first = buf.take()
    assert (first.text, first.tokens, first.t_first, first.elapsed) == ("Hello", 3, 0.5, 0.7)
    assert live_tps(first) == pytest.approx(2 / 0.2)
    assert buf.take().text == ""  # taken once
    buf.push(" world", 1, 0.8)
    assert buf.take() == Taken(" world", 4, 0.5, 0.8)


def test_reply_buffer_from_another_thread() -> None:
    buf = ReplyBuffer()
    pieces = [f"{i} " for i in range(20000)]

    def work() -> None:
        for i, p in enumerate(pieces):
            buf.push(p, 1, i * 1e-4)

    t = threading.Thread(target=work)
    t.start()
    got = []
    while t.is_alive():
        got.append(buf.take().text)
    t.join()
    got.append(buf.take().text)
    assert "".join(got) == "".join(pieces)


def test_redraws_space_out_when_they_get_expensive() -> None:
    assert next_delay(0.0) == MIN_DELAY_S  # at most 20 a second
    assert next_delay(0.03) == pytest.approx(0.15)  # the UI thread busy a fifth of the time
    assert next_delay(10.0) == MAX_DELAY_S  # text still shows twice a second


def _encode(messages: list[dict[str, str]]) -> list[int]:
    """Two tokens of framing per message plus one per word, like a chat template."""
    return [0] * sum(2 + len(m["content"].split()) for m in messages)


def _chat(*contents: str, system: str | None = None) -> list[dict[str, str]]:
    out = [{"role": "system", "content": system}] if system else []
    roles = ("user", "assistant")
    return out + [{"role": roles[i % 2], "content": c} for i, c in enumerate(contents)]


def test_fit_context_keeps_everything_that_fits() -> None:
    msgs = _chat("a b", "c d", "e f", system="be brief")
    fitted = fit_context(msgs, _encode, n_ctx=100, room=10)
    assert fitted.dropped == 0 and len(fitted.prompt) == len(_encode(msgs))


def test_fit_context_drops_whole_exchanges_oldest_first_keeping_the_system_prompt() -> None:
    ten = " ".join("w" * 10)
    msgs = _chat(ten, ten, ten, ten, ten, system="sys")  # 3 + 12 * 5 = 63 tokens
    seen: list[list[dict[str, str]]] = []

    def encode(m: list[dict[str, str]]) -> list[int]:
        seen.append(m)
        return _encode(m)

    fitted = fit_context(msgs, encode, n_ctx=60, room=20)  # 40 tokens for the prompt
    assert fitted.dropped == 2 and len(fitted.prompt) == 3 + 12 * 3
    kept = next(m for m in seen if len(_encode(m)) == len(fitted.prompt))
    assert kept[0]["role"] == "system" and kept[1]["role"] == "user"
    assert len(seen) <= 4  # a binary search, not a try per turn


def test_fit_context_sends_the_last_exchange_with_what_room_there_is() -> None:
    msgs = _chat("a " * 30, "b " * 30, "c " * 30)
    fitted = fit_context(msgs, _encode, n_ctx=40, room=20)  # the last alone: 32 tokens
    assert fitted.dropped == 2 and len(fitted.prompt) == 32


def test_fit_context_refuses_a_message_that_fills_the_context() -> None:
    with pytest.raises(ContextOverflow) as e:
        fit_context(_chat("x " * 50, system="sys"), _encode, n_ctx=40, room=10)
    assert (e.value.tokens, e.value.n_ctx) == (3 + 52, 40)


def test_reply_room() -> None:
    assert reply_room(512, 2048) == 512
    assert reply_room(4096, 2048) == 1024  # never more than half the context
    assert reply_room(0, 1) == 1


def test_export_targets_and_problems(tmp_path: Path) -> None:
    assert [p.name for p in targets(tmp_path / "run.json")] == [
        "run.json", "run.svg", "run.csv", "run.md"
    ]  # fmt: skip
    assert targets(tmp_path / "v1.2")[0].name == "v1.2.json"
    assert problem(tmp_path / "run") is None
    assert problem(tmp_path / "missing" / "run") == f"{tmp_path / 'missing'}: no such folder"
    (tmp_path / "run.md").write_text("")
    assert "run.md exist already" in (problem(tmp_path / "run") or "")
