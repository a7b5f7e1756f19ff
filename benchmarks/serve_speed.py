"""Decode speed through ``edgeglm serve`` against ``edgeglm run``, and what slots add.

    .venv/bin/python benchmarks/serve_speed.py MODEL.gguf [--tokens 64] [--repeat 5]

1. Single stream: ``edgeglm run MODEL -p ... -n N --temp 0 --json`` (its own
   decode tokens/s, measured inside the process) against one streamed chat
   request to ``edgeglm serve MODEL --temp 0`` (decode tokens/s seen by the
   client: completion tokens after the first, over the time from the first
   streamed piece to the last, so HTTP, SSE and the engine's process hop are
   all inside). Interleaved repeats, medians, and the ratio server / run.
2. Batching: aggregate decode tokens/s of ``--slots`` clients at once against
   a server with ``--parallel SLOTS``, over the single stream of part 1.
3. Under ``--crowd`` concurrent clients (the 4-slot server): aggregate tokens/s
   and time to first token, p50 and p99, as the client sees them.

The servers are the real command in subprocesses on loopback; a random or tiny
model is fine (the figures are speeds, not text). A model that ends its turn
early simply yields fewer tokens: counts come from the server's usage.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PROMPT = "Write a long story about a fox, a dog and a river."


@contextmanager
def server(model: str, *args: str) -> Iterator[tuple[str, int]]:
    """``edgeglm serve`` on an ephemeral loopback port: yields (host, port)."""
    with tempfile.NamedTemporaryFile("w+", suffix=".log") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgeglm", "serve", model, "--port", "0", "--temp", "0", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            cwd=tempfile.gettempdir(),
        )
        try:
            deadline = time.monotonic() + 600
            while not (m := re.search(r"http://[^:]+:(\d+)/v1", Path(log.name).read_text())):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"edgeglm serve failed: {Path(log.name).read_text()}")
                time.sleep(0.1)
            port = int(m.group(1))
            while True:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    conn.request("GET", "/health")
                    if conn.getresponse().status == 200:
                        break
                except OSError:
                    time.sleep(0.1)
            yield "127.0.0.1", port
        finally:
            proc.terminate()
            proc.wait(60)


def stream_chat(where: tuple[str, int], tokens: int, prompt: str = PROMPT) -> dict[str, float]:
    """One streamed chat: completion tokens, time to first piece, decode tokens/s."""
    body = {
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    conn = http.client.HTTPConnection(*where, timeout=600)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", json.dumps(body))
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:200]!r}")
    first = last = 0.0
    n = 0
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        event: Any = json.loads(line[6:])
        if event.get("usage"):
            n = int(event["usage"]["completion_tokens"])
        elif event["choices"] and (event["choices"][0]["delta"].get("content")):
            last = time.perf_counter()
            first = first or last
    conn.close()
    decode = (n - 1) / (last - first) if n > 1 and last > first else 0.0
    return {"tokens": n, "ttft_s": first - t0, "decode_tps": decode, "end": last}


def run_once(model: str, tokens: int) -> float:
    """``edgeglm run``'s own decode tokens/s for the same prompt."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeglm",
            "run",
            model,
            "-p",
            PROMPT,
            "-n",
            str(tokens),
            "--temp",
            "0",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
        stdin=subprocess.DEVNULL,
        cwd=tempfile.gettempdir(),
    )
    return float(json.loads(out.stdout)["timings"]["decode_tokens_per_s"])


def concurrent(where: tuple[str, int], clients: int, tokens: int, each: int = 1) -> dict[str, Any]:
    """``clients`` threads, ``each`` streamed chats apiece: aggregate tokens/s and TTFTs."""
    results: list[dict[str, float]] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        for k in range(each):
            r = stream_chat(where, tokens, f"{PROMPT} ({i}-{k})")
            with lock:
                results.append(r)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ttfts = sorted(r["ttft_s"] for r in results)
    return {
        "aggregate_tps": sum(r["tokens"] for r in results) / wall,
        "ttft_p50_s": statistics.median(ttfts),
        "ttft_p99_s": ttfts[min(len(ttfts) - 1, round(0.99 * (len(ttfts) - 1)))],
        "requests": len(results),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--crowd", type=int, default=16)
    ap.add_argument("--ctx", type=int, default=2048, help="context per slot")
    a = ap.parse_args()

    report: dict[str, Any] = {"model": a.model, "tokens": a.tokens, "repeat": a.repeat}
    with server(a.model, "-c", str(a.ctx), "--parallel", "1") as single:
        stream_chat(single, 8)  # warm-up
        runs, served = [], []
        for _ in range(a.repeat):  # interleaved, so a drift in machine speed hits both
            runs.append(run_once(a.model, a.tokens))
            served.append(stream_chat(single, a.tokens)["decode_tps"])
        report["run_decode_tps_median"] = statistics.median(runs)
        report["serve_decode_tps_median"] = statistics.median(served)
        report["serve_over_run"] = (
            report["serve_decode_tps_median"] / report["run_decode_tps_median"]
        )
        report["single_stream_aggregate"] = concurrent(single, 1, a.tokens, each=a.repeat)
    with server(a.model, "-c", str(a.ctx * a.slots), "--parallel", str(a.slots)) as slots:
        stream_chat(slots, 8)
        batched = [concurrent(slots, a.slots, a.tokens) for _ in range(a.repeat)]
        report["slots_aggregate_tps_median"] = statistics.median(
            b["aggregate_tps"] for b in batched
        )
        report["slots_over_single"] = (
            report["slots_aggregate_tps_median"]
            / report["single_stream_aggregate"]["aggregate_tps"]
        )
        report["crowd"] = {"clients": a.crowd, **concurrent(slots, a.crowd, a.tokens, each=2)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
