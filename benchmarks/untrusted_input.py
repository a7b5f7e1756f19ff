"""What treating model files as untrusted costs, next to what users would otherwise run.

    .venv/bin/edgeglm convert tests/fixtures/hf/glm4 -o /tmp/glm4.gguf   # or any GGUF
    .venv/bin/python benchmarks/untrusted_input.py /tmp/glm4.gguf [--repeat 30]

Three side-by-side figures, each the median of interleaved repeats:

- chat template: one render of the model's own template for a 6-message chat,
  in Jinja's sandbox in process (what EdgeGLM did before, and what
  llama-cpp-python does) against EdgeGLM's bounded worker process (warm);
- GGUF header: EdgeGLM's strict reader (``edgeglm.gguf_file.read_gguf``)
  against gguf-py's ``GGUFReader``, both reading the whole header;
- content check: the SHA-256 that keys "already verified" on a file's first
  sight (MB/s), against the stat-keyed memo hit every later run pays.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Write a haiku about GPUs."},
    {
        "role": "assistant",
        "content": "Silicon rivers / carry light through tiny gates / warm hum of thinking",
    },
    {"role": "user", "content": "Now one about CPUs."},
    {
        "role": "assistant",
        "content": "Patient cores count on / each step in its turn / caches hold their breath",
    },
    {"role": "user", "content": "And one about memory bandwidth."},
]


def _median_s(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def interleaved(a: Callable[[], Any], b: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Medians of ``a`` and ``b`` timed in ABBA rounds (a drift hits both alike)."""
    ta: list[float] = []
    tb: list[float] = []
    for i in range(repeat):
        for fn, out in ((a, ta), (b, tb)) if i % 2 == 0 else ((b, tb), (a, ta)):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("gguf", type=Path)
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()

    from gguf import GGUFReader
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from edgeglm.chat import FALLBACK_TEMPLATE
    from edgeglm.chat_template import render_template
    from edgeglm.gguf_file import read_gguf

    header = read_gguf(args.gguf)
    template = str(header.get("tokenizer.chat_template") or FALLBACK_TEMPLATE)
    context = {"messages": MESSAGES, "add_generation_prompt": True}
    compiled = ImmutableSandboxedEnvironment().from_string(template)
    assert render_template(template, context) == compiled.render(**context)  # and warms it up

    inproc, worker = interleaved(
        lambda: compiled.render(**context), lambda: render_template(template, context), args.repeat
    )
    print(
        f"chat template render: in-process sandbox {inproc * 1e3:.3f} ms, "
        f"EdgeGLM worker {worker * 1e3:.3f} ms (+{(worker - inproc) * 1e3:.3f} ms per turn)"
    )

    # read_gguf keeps parsed headers per file identity within a process: time
    # fresh parses, as a new command would.
    from edgeglm import gguf_file

    def strict() -> None:
        gguf_file._MEMO.clear()
        read_gguf(args.gguf)

    ours, theirs = interleaved(strict, lambda: GGUFReader(args.gguf), max(5, args.repeat // 3))
    print(
        f"GGUF header read ({args.gguf.stat().st_size / 2**20:.0f} MiB file): "
        f"EdgeGLM strict reader {ours * 1e3:.1f} ms, gguf-py GGUFReader {theirs * 1e3:.1f} ms"
    )

    def sha() -> None:
        h = hashlib.sha256()
        with open(args.gguf, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)

    first = _median_s(sha, 3)
    memo = _median_s(lambda: os.stat(args.gguf), args.repeat)
    size = args.gguf.stat().st_size
    print(
        f"content check: SHA-256 {size / first / 1e6:.0f} MB/s on first sight "
        f"({first:.2f} s for this file); later runs {memo * 1e6:.0f} µs (stat-keyed memo)"
    )


if __name__ == "__main__":
    main()
