"""Decode speed through EdgeGLM against llama-cpp-python used directly.

    .venv/bin/python benchmarks/runtime_overhead.py MODEL.gguf [--tokens 128] [--repeat 5]

Both sides load the same GGUF with the same llama.cpp settings (context,
threads, and the AMX-safe weight-buffer choice EdgeGLM makes on this CPU) and
decode greedily; runs alternate so machine noise hits both alike. EdgeGLM's
side is its Backend.generate (detokenizing, stop-string checks, timings);
llama-cpp-python's is a bare loop over Llama.generate. Use a random-weight
model (benchmarks/synthetic.py) so neither stops early at end-of-text.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from edgeglm.backends.base import SamplingParams
from edgeglm.backends.llamacpp import LlamaCppModel, _default_params, extra_buffers_safe
from edgeglm.hardware import usable_threads


def ours(m: LlamaCppModel, prompt: list[int], n: int) -> float:
    gen = m.generate(prompt, SamplingParams(max_tokens=n))
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            t = stop.value.timings
            if t.completion_tokens < n:
                raise SystemExit(
                    f"EdgeGLM stopped at end-of-text after {t.completion_tokens} tokens: "
                    "use a random-weight model with a large vocabulary (benchmarks/synthetic.py)"
                ) from None
            return float(t.decode_tokens_per_second)


def raw(llm: object, prompt: list[int], n: int) -> float:
    t_first = 0.0
    for i, _tok in enumerate(llm.generate(prompt, temp=0.0, reset=True)):  # type: ignore[attr-defined]
        if i == 0:
            t_first = time.perf_counter()
        if i == n - 1:
            break
    return (n - 1) / (time.perf_counter() - t_first)


def main() -> None:
    import llama_cpp

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("model", type=Path)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=usable_threads())
    args = ap.parse_args()
    n_ctx = 512
    m = LlamaCppModel(args.model, n_ctx=n_ctx, n_threads=args.threads)
    with _default_params(use_extra_bufts=extra_buffers_safe()):
        llm = llama_cpp.Llama(
            str(args.model),
            n_ctx=n_ctx,
            n_threads=args.threads,
            n_threads_batch=args.threads,
            verbose=False,
        )
    prompt = m.tokenize("The quick brown fox jumps over the lazy dog. " * 4)
    ours(m, prompt, 8), raw(llm, prompt, 8)  # warm-up
    a, b = [], []
    for _ in range(args.repeat):
        a.append(ours(m, prompt, args.tokens))
        b.append(raw(llm, prompt, args.tokens))
    result = {
        "model": str(args.model),
        "threads": args.threads,
        "tokens": args.tokens,
        "edgeglm_decode_tps": [round(x, 2) for x in a],
        "llama_cpp_python_decode_tps": [round(x, 2) for x in b],
        "ratio_of_medians": round(statistics.median(a) / statistics.median(b), 4),
        "ratio_of_best": round(max(a) / max(b), 4),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
