"""The malformed-input corpus through every command that accepts each input.

One run of every_command.py (in its own process) gives one record per case
and command; each test below checks one promise of the README across all of
them and lists every case that breaks it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

DRIVER = Path(__file__).with_name("every_command.py")
# Peak resident memory of the driver and of its largest child, for any case.
MEMORY_BOUND = 2 << 30

Record = dict[str, Any]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> list[Record]:
    folder = tmp_path_factory.mktemp("malformed")
    results = folder / "results.json"
    proc = subprocess.run(
        [sys.executable, str(DRIVER), str(folder / "corpus"), str(results)],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    records: list[Record] = json.loads(results.read_text(encoding="utf-8"))
    return records


def _broken(records: list[Record], bad: Callable[[Record], str | None]) -> list[str]:
    out = []
    for r in records:
        why = bad(r)
        if why:
            c = r["case"]
            out.append(f"{c['kind']}/{c['name']} via {c['command']}: {why}")
    return out


def test_the_corpus_reaches_every_command(outcomes: list[Record]) -> None:
    seen = {(r["case"]["kind"], r["case"]["command"]) for r in outcomes}
    for command in ("plan", "run", "score", "bench", "chat"):
        assert ("gguf", command) in seen
        assert ("checkpoint", command) in seen
    assert ("checkpoint", "convert-gguf") in seen and ("checkpoint", "convert-onnx") in seen
    assert {c for k, c in seen if k == "gguf-metadata"} == set(
        seen_commands := {"plan", "run", "score", "bench", "chat"}
    )
    assert {c for k, c in seen if k == "llama-abort"} == seen_commands - {"plan"}


def test_every_case_exits_with_its_documented_code(outcomes: list[Record]) -> None:
    def bad(r: Record) -> str | None:
        want = r["case"]["expect"]
        if r["exit_code"] != want:
            return f"exit {r['exit_code']}, want {want}: {r['stderr'].strip()[-300:]!r}"
        return None

    assert not (broken := _broken(outcomes, bad)), "\n".join(broken)


def test_every_message_is_one_line_without_a_traceback(outcomes: list[Record]) -> None:
    def bad(r: Record) -> str | None:
        lines = [ln for ln in r["stderr"].splitlines() if ln.strip()]
        stderr: str = r["stderr"]
        if "Traceback" in stderr:
            return "traceback: " + stderr[-300:]
        if len(lines) != 1 or not lines[0].startswith("error: "):
            return f"{len(lines)} lines: {r['stderr'][-300:]!r}"
        return None

    assert not (broken := _broken(outcomes, bad)), "\n".join(broken)


def test_inputs_unchanged_and_nothing_at_the_output(outcomes: list[Record]) -> None:
    def bad(r: Record) -> str | None:
        if not r["inputs_unchanged"]:
            return "an input changed"
        if not r["out_dir_empty"]:
            left = sorted(p.name for p in Path(r["case"]["out_dir"]).iterdir())
            return f"left in the output folder: {left}"
        return None

    assert not (broken := _broken(outcomes, bad)), "\n".join(broken)


def test_memory_stays_bounded(outcomes: list[Record]) -> None:
    # Time is bounded by the driver: a case still running after its guard is
    # recorded with exit code -1, which the exit-code test reports.
    def bad(r: Record) -> str | None:
        peak = max(r["peak_rss_bytes"], r["children_peak_rss_bytes"])
        if peak > MEMORY_BOUND:
            return f"peak memory {peak / 2**30:.1f} GiB"
        return None

    assert not (broken := _broken(outcomes, bad)), "\n".join(broken)
