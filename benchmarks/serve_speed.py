"""Decode speed through ``edgeglm serve`` against ``edgeglm run``, and what slots add.

    .venv/bin/python benchmarks/serve_speed.py MODEL.gguf [--tokens 64] [--repeat 5]

1. Single stream: ``edgeglm run MODEL -p ... -n N --temp T --json`` (its own
   decode tokens/s, measured inside the process) against one streamed chat
   request to ``edgeglm serve MODEL --temp T`` (decode tokens/s as the client
   sees it, from an N-token reply against a 1-token one: HTTP, SSE and the
   engine's process hop are all inside). Interleaved repeats, medians, and
   the ratio server / run.
2. Batching: aggregate decode tokens/s of ``--slots`` clients at once against
   a server with ``--parallel SLOTS``, over the single stream of part 1.
3. Under ``--crowd`` concurrent clients (the 4-slot server): aggregate tokens/s
   and time to first token p50/p99 (the server's own histogram, from queueing
   to the first token).

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
            [sys.executable, "-m", "edgeglm", "serve", model, "--port", "0", *args],
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
    """One streamed chat, read to its end: completion tokens (the server's
    usage) and the wall time from sending it to ``[DONE]``."""
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
    n = 0
    for raw in resp:
        line = raw.decode().strip()
        if line.startswith("data: {"):
            event: Any = json.loads(line[6:])
            if event.get("usage"):
                n = int(event["usage"]["completion_tokens"])
    wall = time.perf_counter() - t0
    conn.close()
    return {"tokens": n, "wall_s": wall}


def served_decode_tps(where: tuple[str, int], tokens: int) -> float:
    """Decode tokens/s through the server as a client sees it: a reply of
    ``tokens`` against one of 1 token, so prefill and the request's fixed
    costs cancel and every per-token cost (engine, process hop, SSE) stays in.
    (A random model's tokens are often without text, so pieces cannot be timed.)"""
    one = stream_chat(where, 1)
    full = stream_chat(where, tokens)
    return (full["tokens"] - one["tokens"]) / (full["wall_s"] - one["wall_s"])


def ttft_quantiles(before: str, after: str, qs: tuple[float, ...]) -> list[float]:
    """Quantiles of the server's own time-to-first-token histogram (from
    queueing to the first token) over the requests between two /metrics pages,
    interpolated within buckets as Prometheus' histogram_quantile does."""

    def buckets(text: str) -> dict[float, float]:
        found = re.findall(
            r'edgeglm_time_to_first_token_seconds_bucket\{le="([^"]+)"\} (\S+)', text
        )
        return {float(le): float(v) for le, v in found}

    b0, b1 = buckets(before), buckets(after)
    edges = sorted(b1)
    counts = [b1[e] - b0.get(e, 0.0) for e in edges]
    total = counts[-1]
    out = []
    for q in qs:
        rank, lo, below = q * total, 0.0, 0.0
        for edge, cum in zip(edges, counts, strict=True):
            if cum >= rank:
                if edge == float("inf"):
                    out.append(lo)
                else:
                    share = (rank - below) / (cum - below) if cum > below else 1.0
                    out.append(lo + (edge - lo) * share)
                break
            lo, below = edge, cum
    return out


def metrics_page(where: tuple[str, int]) -> str:
    conn = http.client.HTTPConnection(*where, timeout=60)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return text


def run_once(model: str, tokens: int, temp: str) -> float:
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
    """``clients`` threads, ``each`` streamed chats apiece: aggregate tokens/s
    (all completion tokens over the wall time) and the server's TTFT p50/p99."""
    results: list[dict[str, float]] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        for k in range(each):
            r = stream_chat(where, tokens, f"{PROMPT} ({i}-{k})")
            with lock:
                results.append(r)

    before = metrics_page(where)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    p50, p99 = ttft_quantiles(before, metrics_page(where), (0.5, 0.99))
    return {
        "aggregate_tps": sum(r["tokens"] for r in results) / wall,
        "server_ttft_p50_s": p50,
        "server_ttft_p99_s": p99,
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
    ap.add_argument("--temp", default="0", help="both sides' temperature (seed 0)")
    a = ap.parse_args()

    report: dict[str, Any] = {"model": a.model, "tokens": a.tokens, "repeat": a.repeat}
    report["temperature"] = a.temp
    with server(a.model, "-c", str(a.ctx), "--parallel", "1", "--temp", a.temp) as single:
        stream_chat(single, 8)  # warm-up
        runs, served = [], []
        for _ in range(a.repeat):  # interleaved, so a drift in machine speed hits both
            runs.append(run_once(a.model, a.tokens, a.temp))
            served.append(served_decode_tps(single, a.tokens))
        report["run_decode_tps_median"] = statistics.median(runs)
        report["serve_decode_tps_median"] = statistics.median(served)
        report["serve_over_run"] = (
            report["serve_decode_tps_median"] / report["run_decode_tps_median"]
        )
        report["single_stream_aggregate"] = concurrent(single, 1, a.tokens, each=a.repeat)
    slotted = ("-c", str(a.ctx * a.slots), "--parallel", str(a.slots), "--temp", a.temp)
    with server(a.model, *slotted) as slots:
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
