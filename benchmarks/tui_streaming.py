"""Streaming speed through the chat app against ``edgeglm run``, on the same GGUF.

    .venv/bin/python benchmarks/tui_streaming.py [GGUF] [--tokens 512] [--repeat 5]
        [--via pilot,tmux]

Without GGUF, the tiny random-weight GLM-4 test fixture (tests/fixtures/hf/glm4)
is converted to Q8_0 into EdgeGLM's cache, as ``run`` would: its replies never
end early at an end-of-text token (greedy, random weights), so every run
decodes exactly ``--tokens`` tokens, and it decodes thousands of tokens per
second, where any cost the app adds per token shows most.

Three ways of getting the same reply (same prompt, no system prompt, greedy,
seed 0, the plan's launch spec), each a fresh process per repeat, taken in
turn (run, pilot, tmux, run, ...) so a drift in machine speed hits all alike:

* ``run``: ``edgeglm run GGUF -p PROMPT -n TOKENS --temp 0 --json``;
* ``pilot``: the real app (``create_app`` with the real services) under
  Textual's headless test driver, the prompt set and sent with Enter (after
  one short warm-up reply, so the wall time leaves out starting the chat
  template's worker);
* ``tmux``: the real app in a real terminal (a 100x30 tmux window), so
  every update is also rendered to terminal escape codes.

Each reports the decode speed the backend measured (llama.cpp's generate
loop, so time the consumer of the stream takes between tokens counts), which
is what ``run`` prints and what the app's stats line shows at the end. The
pilot side also reports wall-clock tokens/s from Enter to the reply being
finished on screen. Figures are medians over the repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "hf" / "glm4"
PROMPT = "Tell me a long story about a lighthouse keeper and the sea."
TPS = re.compile(r"([\d.]+) tok/s")


def default_gguf() -> str:
    from edgeglm.artifacts import ensure_gguf

    return str(ensure_gguf(FIXTURE, "Q8_0"))


def via_run(gguf: str, tokens: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "edgeglm", "run", gguf, "-p", PROMPT, "-n", str(tokens)]
    cmd += ["--temp", "0", "--json"]
    # outside the repo root, where `python -m edgeglm` would import the bare
    # source folder instead of the installed package
    with tempfile.TemporaryDirectory() as cwd:
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, check=False)
    if r.returncode != 0:
        raise SystemExit(f"edgeglm run failed ({r.returncode}): {r.stderr.strip()}")
    data = json.loads(r.stdout)
    t = data["timings"]
    threads = (data.get("settings") or {}).get("n_threads")
    return {
        "decode_tps": t["decode_tokens_per_s"],
        "tokens": t["completion_tokens"],
        "threads": threads,
    }


def _settings(tokens: int) -> Any:
    from edgeglm.tui.settings import ChatSettings

    return replace(ChatSettings(), temperature=0.0, top_p=1.0, top_k=0, max_tokens=tokens, seed=0)


async def _pilot(gguf: str, tokens: int) -> dict[str, Any]:
    from multiprocessing import resource_tracker

    from textual.widgets import Input, TextArea

    from edgeglm.tui.app import create_app
    from edgeglm.tui.widgets_chat import StatsBar

    resource_tracker.ensure_running()  # as run_app does, before Textual takes stderr
    app = create_app(gguf)
    async with app.run_test(size=(100, 30)) as pilot:
        screen: Any = app.screen
        deadline = time.monotonic() + 300
        while screen.session.backend is None or screen.model_state != "ready":
            if time.monotonic() > deadline:
                raise SystemExit("the app did not load the model in 300 s")
            await pilot.pause(0.05)
        prompt = screen.query_one("#prompt")

        async def send(max_tokens: int) -> float:
            screen.settings = _settings(max_tokens)
            if isinstance(prompt, Input):
                prompt.value = PROMPT
            elif isinstance(prompt, TextArea):
                prompt.text = PROMPT
            prompt.focus()
            t0 = time.perf_counter()
            await pilot.press("enter")
            # a plain sleep: Pilot.pause would also force a redraw each time,
            # load the app itself does not have
            while screen.generating:
                await asyncio.sleep(0.01)
            return time.perf_counter() - t0

        # a first short reply starts the chat template's worker process, which
        # the measured reply should not pay for; then a new chat
        await send(8)
        await pilot.press("ctrl+n")
        await pilot.pause()
        wall = await send(tokens)
        await pilot.pause()
        shown = str(screen.query_one(StatsBar).render())
        backend: Any = screen.session.backend
        threads = (getattr(backend, "settings", None) or {}).get("n_threads")
    done = getattr(screen, "last_completion", None)
    n = done.timings.completion_tokens if done is not None else tokens
    m = TPS.search(shown)
    return {
        "decode_tps": float(m.group(1)) if m else None,
        "ttft_s": done.timings.time_to_first_token if done is not None else None,
        "wall_s": wall,
        "wall_tps": n / wall,
        "tokens": n,
        "threads": threads,
        "stats": shown,
    }


def via_pilot(gguf: str, tokens: int) -> dict[str, Any]:
    code = [sys.executable, __file__, "--child", "pilot", gguf, "--tokens", str(tokens)]
    r = subprocess.run(code, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"pilot child failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return result


def _serve(gguf: str, tokens: int) -> None:
    """The app as ``edgeglm chat GGUF`` runs it, with the benchmark's sampling."""
    from multiprocessing import resource_tracker

    from edgeglm.tui.app import create_app
    from edgeglm.tui.screen_chat import ChatScreen

    resource_tracker.ensure_running()  # as run_app does, before Textual takes stderr
    app = create_app(gguf)

    def configure() -> None:
        if isinstance(app.screen, ChatScreen):
            app.screen.settings = _settings(tokens)
        else:
            app.call_after_refresh(configure)

    app.call_later(configure)
    app.run()


def via_tmux(gguf: str, tokens: int) -> dict[str, Any]:
    sock = f"edgeglm-bench-{os.getpid()}"

    def tmux(*args: str) -> str:
        r = subprocess.run(["tmux", "-L", sock, "-f", "/dev/null", *args],
                           capture_output=True, text=True, check=True)  # fmt: skip
        return r.stdout

    def wait(pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = tmux("capture-pane", "-p", "-t", "app")
            if pattern in screen:
                return screen
            if time.monotonic() > deadline:
                raise SystemExit(f"tmux: {pattern!r} did not appear; screen:\n{screen}")
            time.sleep(0.25)  # seldom: each look costs CPU the app runs on too

    app = shlex.join(["env", "TERM=xterm-256color", sys.executable, __file__,
                      "--child", "serve", gguf, "--tokens", str(tokens)])  # fmt: skip
    gate = shlex.join(["tmux", "-L", sock, "wait-for", "sized"])
    with tempfile.TemporaryDirectory() as cwd:
        tmux("new-session", "-d", "-s", "app", "-x", "100", "-y", "30", "-c", cwd,
             f"{gate} && exec {app}")  # fmt: skip
        try:
            tmux("resize-window", "-t", "app", "-x", "100", "-y", "30")
            tmux("wait-for", "-S", "sized")
            wait("ready (", 300)
            tmux("send-keys", "-t", "app", "-l", PROMPT)
            tmux("send-keys", "-t", "app", "Enter")
            screen = wait("· done (", 300)
        finally:
            subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True, check=False)
    line = next(x for x in screen.splitlines() if "· done (" in x)
    m = TPS.search(line)
    return {"decode_tps": float(m.group(1)) if m else None, "stats": line.strip()}


def _median(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("gguf", nargs="?", help="GGUF file (default: the glm4 test fixture, Q8_0)")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--via", default="pilot,tmux", help="app drivers: pilot, tmux or both")
    ap.add_argument("--child", choices=("pilot", "serve"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "pilot":
        print(json.dumps(asyncio.run(_pilot(args.gguf, args.tokens))))
        return
    if args.child == "serve":
        _serve(args.gguf, args.tokens)
        return
    gguf = args.gguf or default_gguf()
    drivers = [d.strip() for d in args.via.split(",") if d.strip()]
    if "tmux" in drivers and shutil.which("tmux") is None:
        print("tmux is not installed: measuring without it", file=sys.stderr)
        drivers.remove("tmux")
    sides = {"run": via_run, "pilot": via_pilot, "tmux": via_tmux}
    order = ["run", *drivers]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in order}
    for i in range(args.repeat):
        for name in order:
            r = sides[name](gguf, args.tokens)
            results[name].append(r)
            print(f"[{i + 1}/{args.repeat}] {name}: {json.dumps(r)}", file=sys.stderr)
    print(f"{gguf}: {args.tokens} tokens, {args.repeat} repeats, medians")
    runs = [r["decode_tps"] for r in results["run"]]
    for name in order:
        decode = _median([r["decode_tps"] for r in results[name]])
        line = f"  {name:6} decode {decode or 0:8.1f} tok/s"
        # each round's ratio to the run measured just before it: a machine
        # that speeds up or slows down between rounds moves both alike
        ratios = [r["decode_tps"] / b for r, b in zip(results[name], runs, strict=True)
                  if r["decode_tps"] and b]  # fmt: skip
        if name != "run" and ratios:
            line += f"  ({statistics.median(ratios):.2f}x run, median of per-round ratios)"
        walls = [r["wall_tps"] for r in results[name] if "wall_tps" in r]
        if walls:
            line += f"  wall {statistics.median(walls):8.1f} tok/s (Enter to reply on screen)"
        threads = sorted({int(r["threads"]) for r in results[name] if r.get("threads")})
        if threads:
            line += f"  threads {threads}"
        print(line)


if __name__ == "__main__":
    main()
