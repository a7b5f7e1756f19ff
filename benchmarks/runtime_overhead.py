"""Decode speed through EdgeGLM's ``generate()`` against stock llama-cpp-python.

    .venv/bin/python benchmarks/synthetic.py /tmp/syn            # 1.3 B GLM-Edge-shaped
    .venv/bin/edgeglm convert /tmp/syn -o /tmp/syn.gguf -q Q4_K_M
    .venv/bin/python benchmarks/runtime_overhead.py /tmp/syn.gguf [--tokens 64] [--repeat 12]

EdgeGLM's side is what ``edgeglm run``, the TUI and the server use: the model
opened by ``edgeglm.runtime.open_backend`` with the planner's settings for this
machine, then ``Backend.generate`` (sampling, detokenizing, stop strings,
timings). The other side is llama-cpp-python as a user would load it:
``llama_cpp.Llama(path, n_ctx=..., n_threads=...)`` with its own defaults for
everything else, decoding with ``Llama.generate``; that process never imports
EdgeGLM. Only the context and thread count are matched, so the figure is the
runtime's overhead rather than a different thread choice
(``--stock-threads default`` leaves those to llama-cpp-python too).

Each side lives in its own child process, loaded once; the parent asks them
in turn (ABBA order, so a drift in machine speed hits both alike) and both
sides are timed the same way, from outside the code under test: wall clock
around the whole call, for a fixed token count. A crash in either child (ggml's
AMX kernels in some builds) is reported, not propagated.

Use a random-weight model (benchmarks/synthetic.py) so that neither side
stops early at an end-of-text token.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import time
from multiprocessing.connection import Connection
from typing import Any

PROMPT = "The quick brown fox jumps over the lazy dog. " * 8


def _edgeglm_side(conn: Connection, model: str, n_ctx: int) -> None:
    from edgeglm.backends.base import SamplingParams
    from edgeglm.runtime import open_backend

    m = open_backend(model, n_ctx=n_ctx)
    prompt = m.tokenize(PROMPT)
    conn.send({"settings": getattr(m, "settings", {}), "prompt_tokens": len(prompt)})
    while (n := conn.recv()) is not None:
        t0 = time.perf_counter()
        gen = m.generate(prompt, SamplingParams(max_tokens=n, temperature=0.0))
        try:
            while True:
                next(gen)
        except StopIteration as stop:
            done = stop.value
        wall = time.perf_counter() - t0
        t = done.timings
        conn.send(
            {
                "tokens": len(done.tokens),
                "wall_s": wall,
                "self_reported_s": t.prompt_seconds + t.decode_seconds,
                "self_reported_decode_tps": t.decode_tokens_per_second,
            }
        )


def _stock_side(
    conn: Connection, model: str, n_ctx: int, threads: int | None, repack: bool
) -> None:
    import llama_cpp
    import llama_cpp.llama_cpp as lib

    if not repack:  # llama-cli's --no-repack; llama_cpp.Llama has no argument for it
        default = lib.llama_model_default_params

        def no_repack() -> Any:
            p = default()
            p.use_extra_bufts = False
            return p

        lib.llama_model_default_params = no_repack
    kw: dict[str, Any] = {} if threads is None else {"n_threads": threads}
    llm = llama_cpp.Llama(model, n_ctx=n_ctx, verbose=False, **kw)
    prompt = llm.tokenize(PROMPT.encode(), add_bos=False)
    conn.send(
        {
            "settings": {"n_ctx": n_ctx, "n_threads": llm.n_threads, "repack": repack},
            "prompt_tokens": len(prompt),
        }
    )
    while (n := conn.recv()) is not None:
        t0 = time.perf_counter()
        stamps = []
        for _tok in llm.generate(prompt, temp=0.0, reset=True):
            stamps.append(time.perf_counter())
            if len(stamps) == n:
                break
        decode = (n - 1) / (stamps[-1] - stamps[0]) if n > 1 else 0.0
        conn.send({"tokens": len(stamps), "wall_s": stamps[-1] - t0, "decode_tps": decode})


class Side:
    def __init__(self, name: str, target: Any, *args: Any) -> None:
        ctx = mp.get_context("spawn")
        self.name = name
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(child, *args))
        self.proc.start()
        child.close()  # so that a dead child reads as EOF here, not as a hang
        self.info: dict[str, Any] = self.recv()

    def recv(self) -> dict[str, Any]:
        try:
            msg: dict[str, Any] = self.conn.recv()
        except EOFError:
            self.proc.join(5)
            raise SystemExit(
                f"{self.name}: the process died (exit code {self.proc.exitcode}); "
                "a negative code is the signal that killed llama.cpp"
            ) from None
        return msg

    def run(self, n: int) -> dict[str, Any]:
        self.conn.send(n)
        return self.recv()

    def close(self) -> None:
        if self.proc.is_alive():
            self.conn.send(None)
        self.proc.join(30)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("model", help="a GGUF file")
    ap.add_argument("--tokens", type=int, default=64, help="tokens generated per run")
    ap.add_argument("--repeat", type=int, default=12, help="runs per side, interleaved")
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument(
        "--stock-threads",
        default="match",
        help="'match' (EdgeGLM's thread count), 'default' (llama-cpp-python's) or a number",
    )
    ap.add_argument(
        "--stock-repack",
        choices=("on", "off"),
        default="on",
        help="llama.cpp's weight repacking on the stock side: 'on' is its default; 'off' "
        "(llama-cli's --no-repack) is what EdgeGLM does on CPUs with AMX, where ggml's "
        "AMX kernels in llama-cpp-python 0.3.36 crash",
    )
    args = ap.parse_args()

    ours = Side("EdgeGLM", _edgeglm_side, args.model, args.ctx)
    if args.stock_threads == "match":
        threads = ours.info["settings"].get("n_threads")
    else:
        threads = None if args.stock_threads == "default" else int(args.stock_threads)
    stock = Side(
        "llama-cpp-python", _stock_side, args.model, args.ctx, threads, args.stock_repack == "on"
    )
    if ours.info["prompt_tokens"] != stock.info["prompt_tokens"]:
        raise SystemExit("the two sides tokenized the prompt differently")
    for side in (ours, stock):  # warm-up: page in the weights, build the graphs
        side.run(8)
    a: list[dict[str, Any]] = []
    b: list[dict[str, Any]] = []
    for i in range(args.repeat):
        first, second = (ours, stock) if i % 2 == 0 else (stock, ours)
        for side in (first, second):
            (a if side is ours else b).append(side.run(args.tokens))
    ours.close()
    stock.close()

    short = [r["tokens"] for r in a + b if r["tokens"] != args.tokens]
    if short:
        raise SystemExit(
            f"a run stopped early ({short} tokens): use a random-weight model "
            "(benchmarks/synthetic.py), which does not emit end-of-text"
        )
    # Tokens per second over the whole call (prompt, then N tokens), timed the
    # same way from outside on both sides. llama-cpp-python's generate() keeps
    # the KV cache of a repeated prompt on both sides alike, so after the
    # warm-up this is almost all decode.
    ea = [args.tokens / r["wall_s"] for r in a]
    eb = [args.tokens / r["wall_s"] for r in b]
    pairs = sorted(x / y for x, y in zip(ea, eb, strict=True))
    q1, _, q3 = statistics.quantiles(pairs, n=4)
    # EdgeGLM's own timings (what `run --json` and the TUI print) against the wall clock
    unaccounted = [r["wall_s"] - r["self_reported_s"] for r in a]
    print(
        json.dumps(
            {
                "model": args.model,
                "tokens_per_run": args.tokens,
                "repeat": args.repeat,
                "prompt_tokens": ours.info["prompt_tokens"],
                "edgeglm_settings": ours.info["settings"],
                "llama_cpp_python_settings": stock.info["settings"],
                "edgeglm_tps": _r(ea),
                "llama_cpp_python_tps": _r(eb),
                "median_edgeglm_tps": round(statistics.median(ea), 3),
                "median_llama_cpp_python_tps": round(statistics.median(eb), 3),
                "ratio_of_medians": round(statistics.median(ea) / statistics.median(eb), 4),
                "paired_ratio_median": round(statistics.median(pairs), 4),
                "paired_ratio_iqr": [round(q1, 4), round(q3, 4)],
                "edgeglm_self_reported_decode_tps": _r([r["self_reported_decode_tps"] for r in a]),
                "llama_cpp_python_decode_tps": _r([r["decode_tps"] for r in b]),
                "edgeglm_wall_minus_self_reported_s": _r(unaccounted, 4),
            },
            indent=2,
        )
    )


def _r(xs: list[float], digits: int = 3) -> list[float]:
    return [round(x, digits) for x in xs]


if __name__ == "__main__":
    main()
