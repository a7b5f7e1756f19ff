"""The TUI's plain-Python parts: think splitting, the conversation store, artifacts, bench rows."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from tui_support.fakes import bench_report, write_gguf

from edgeglm.tui import artifacts
from edgeglm.tui.bench_view import cells, latency_ms, pareto
from edgeglm.tui.settings import ChatSettings
from edgeglm.tui.store import Conversation, ConversationStore, Turn
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
    found = {a.path.name: a for a in artifacts.scan()}
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
