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

4. With ``--llama-bin DIR`` (a llama.cpp build's bin/ folder, e.g. from the
   engine's sources: cmake -B build -DGGML_RPC=ON && cmake --build build
   --target llama-server llama-batched-bench): the same crowd against
   llama-server with the same slots, context, threads and batch sizes, runs
   interleaved, with time to first token as the client sees it on both
   (first streamed text of a /v1/completions request); and
   llama-batched-bench's decode speed at 1 and SLOTS sequences: the batching
   gain llama.cpp's own engine reaches on this CPU, the ceiling for part 2.

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


def _stream(where: tuple[str, int], path: str, body: dict[str, Any]) -> dict[str, float]:
    """One streamed request read to ``[DONE]``: completion tokens (the usage
    the server sends last), wall time, and time to the first text."""
    conn = http.client.HTTPConnection(*where, timeout=600)
    t0 = time.perf_counter()
    conn.request("POST", path, json.dumps({**body, "stream": True, "stream_options": USAGE}))
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:200]!r}")
    first, n = None, 0
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: {"):
            continue
        event: Any = json.loads(line[6:])
        if event.get("usage"):
            n = int(event["usage"]["completion_tokens"])
        if first is None and any(
            c.get("text") or (c.get("delta") or {}).get("content")
            for c in event.get("choices") or []
        ):
            first = time.perf_counter() - t0
    wall = time.perf_counter() - t0
    conn.close()
    if not n:
        raise RuntimeError("the server sent no usage")
    return {"tokens": n, "wall_s": wall, "ttft_s": first if first is not None else wall}


USAGE = {"include_usage": True}


def stream_chat(where: tuple[str, int], tokens: int, prompt: str = PROMPT) -> dict[str, float]:
    """One streamed chat (the model's own sampling defaults)."""
    messages = [{"role": "user", "content": prompt}]
    return _stream(where, "/v1/chat/completions", {"messages": messages, "max_tokens": tokens})


def stream_completion(
    where: tuple[str, int], tokens: int, prompt: str, seed: int = 0
) -> dict[str, float]:
    """One streamed /v1/completions request, the same on edgeglm serve and
    llama-server. Sampled, not greedy: a random model's greedy token is often
    one without text, which neither server streams as text."""
    body = {"prompt": prompt, "max_tokens": tokens, "temperature": 1.0, "seed": seed}
    return _stream(where, "/v1/completions", body)


def crowd(where: tuple[str, int], clients: int, tokens: int) -> dict[str, float]:
    """``clients`` threads, two streamed completions apiece: aggregate tokens/s and
    the client-side time to first text, p50/p99."""
    results: list[dict[str, float]] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        for k in range(2):
            r = stream_completion(where, tokens, f"{PROMPT} ({i}-{k})", seed=i * 2 + k)
            with lock:
                results.append(r)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ttft = sorted(r["ttft_s"] for r in results)
    return {
        "aggregate_tps": sum(r["tokens"] for r in results) / wall,
        "ttft_p50_s": statistics.median(ttft),
        "ttft_p99_s": ttft[min(len(ttft) - 1, round(0.99 * (len(ttft) - 1)))],
    }


@contextmanager
def llama_server(bin_dir: Path, model: str, *args: str) -> Iterator[tuple[str, int]]:
    """llama.cpp's own llama-server on a free loopback port."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [str(bin_dir / "llama-server"), "-m", model, "--host", "127.0.0.1"]
    with tempfile.NamedTemporaryFile("w+", suffix=".log") as log:
        proc = subprocess.Popen(
            [*cmd, "--port", str(port), *args], stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 600
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"llama-server failed: {Path(log.name).read_text()[-2000:]}")
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    conn.request("GET", "/health")
                    if conn.getresponse().status == 200:
                        break
                except OSError:
                    pass
                time.sleep(0.2)
            yield "127.0.0.1", port
        finally:
            proc.terminate()
            proc.wait(60)


def batched_bench(bin_dir: Path, model: str, slots: int, threads: int) -> dict[str, float]:
    """llama-batched-bench's decode tokens/s (S_TG) at 1 and ``slots`` sequences."""
    args = ["-c", "4096", "-npp", "64", "-ntg", "32", "-npl", f"1,{slots}", "-t", str(threads)]
    out = subprocess.run(
        [str(bin_dir / "llama-batched-bench"), "-m", model, *args, "-fa", "on"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split("|") for line in out.splitlines() if re.match(r"\|\s+64 \|", line)]
    speeds = {int(r[3]): float(r[8]) for r in rows}
    return {"decode_tps_1": speeds[1], f"decode_tps_{slots}": speeds[slots]} | {
        "gain": speeds[slots] / speeds[1]
    }


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
    ap.add_argument("--threads", type=int, default=2, help="both servers' threads")
    ap.add_argument("--llama-bin", type=Path, help="llama.cpp bin/ folder: compare with it")
    ap.add_argument("--compare-only", action="store_true", help="with --llama-bin: part 4 alone")
    a = ap.parse_args()
    slotted = ("-c", str(a.ctx * a.slots), "--parallel", str(a.slots), "--temp", a.temp)
    if a.compare_only:
        if a.llama_bin is None:
            ap.error("--compare-only needs --llama-bin")
        print(
            json.dumps({"model": a.model, "llama_cpp": compare_llama_server(a, slotted)}, indent=2)
        )
        return

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
    if a.llama_bin is not None:
        report["llama_cpp"] = compare_llama_server(a, slotted)
    print(json.dumps(report, indent=2))


def compare_llama_server(a: argparse.Namespace, slotted: tuple[str, ...]) -> dict[str, Any]:
    """The crowd on edgeglm serve and llama-server (same slots, context, threads,
    batches), interleaved; and llama-batched-bench's own batching gain."""
    threads = ("-t", str(a.threads))
    same = ("-c", str(a.ctx * a.slots), "-np", str(a.slots), *threads, "-fa", "on")
    ours_runs: list[dict[str, float]] = []
    theirs_runs: list[dict[str, float]] = []
    with (
        server(a.model, *slotted, *threads) as ours,
        llama_server(a.llama_bin, a.model, *same, "-b", "512", "-ub", "512") as theirs,
    ):
        stream_completion(ours, 8, PROMPT)
        stream_completion(theirs, 8, PROMPT)
        for _ in range(a.repeat):
            ours_runs.append(crowd(ours, a.crowd, a.tokens))
            theirs_runs.append(crowd(theirs, a.crowd, a.tokens))

    def medians(runs: list[dict[str, float]]) -> dict[str, float]:
        return {k: statistics.median(r[k] for r in runs) for k in runs[0]}

    out: dict[str, Any] = {
        "clients": a.crowd,
        "edgeglm_serve": medians(ours_runs),
        "llama_server": medians(theirs_runs),
    }
    out["aggregate_tps_ratio"] = (
        out["edgeglm_serve"]["aggregate_tps"] / out["llama_server"]["aggregate_tps"]
    )
    out["batched_bench"] = batched_bench(a.llama_bin, a.model, a.slots, a.threads)
    return out


if __name__ == "__main__":
    main()
