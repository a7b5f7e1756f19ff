"""Decode speed across two loopback workers against the same model run locally,
and the bytes the client and workers exchange per generated token.

    .venv/bin/python benchmarks/synthetic.py /tmp/syn            # 1.3 B GLM-Edge-shaped
    .venv/bin/edgeglm convert /tmp/syn -o /tmp/syn.gguf -q Q4_K_M
    .venv/bin/python benchmarks/rpc_speed.py /tmp/syn.gguf [--tokens 32] [--repeat 3]

Both sides are loaded once (the workers receive their layers then, and keep
them in their tensor cache); each repeat then generates ``--tokens`` greedy
tokens on each side, interleaved, and the medians are reported. Bytes per
token come from the kernel's counters on the workers' client sockets
(``ss -ti``: bytes received and sent), measured over a long and a one-token
generation so the prompt's share cancels out. Loopback shows the engine's
own cost of the split (serialization, one round trip per device hop per
token); a real network adds its latency per hop and its bandwidth per byte.
Random weights never emit end-of-text, so every run makes the same count.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

PROMPT = "The quick brown fox jumps over the lazy dog. " * 4


def _socket_bytes(port: int) -> tuple[int, int]:
    """(bytes received, bytes sent) on a worker's client connections, from the
    kernel's TCP counters (``ss -ti``: tcp_info's bytes_received / bytes_sent)."""
    out = subprocess.run(
        ["ss", "-tinH", "state", "established", f"( sport = :{port} )"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    received = sum(int(v) for v in re.findall(r"bytes_received:(\d+)", out))
    sent = sum(int(v) for v in re.findall(r"bytes_sent:(\d+)", out))
    return received, sent


def _generate(model: Any, prompt: list[int], tokens: int) -> Any:
    from edgeglm.backends.base import SamplingParams

    gen = model.generate(prompt, SamplingParams(temperature=0.0, max_tokens=tokens))
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("gguf", type=Path)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="threads here and on each worker")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    from rpc_workers import Worker

    from edgeglm.runtime import open_backend

    with tempfile.TemporaryDirectory(prefix="rpc-speed-") as tmp:
        workers = [Worker(Path(tmp), threads=args.threads) for _ in range(2)]
        try:
            rpc = tuple(w.endpoint for w in workers)
            local = open_backend(str(args.gguf), n_ctx=512, n_threads=args.threads)
            split = open_backend(str(args.gguf), n_ctx=512, n_threads=args.threads, rpc=rpc)
            prompt = local.tokenize(PROMPT)
            _generate(local, prompt, 4), _generate(split, prompt, 4)  # warm-up
            tok_s: dict[str, list[float]] = {"local": [], "rpc": []}
            for _ in range(args.repeat):  # interleaved, so drift hits both alike
                for name, m in (("local", local), ("rpc", split)):
                    c = _generate(m, prompt, args.tokens)
                    tok_s[name].append(c.timings.decode_tokens_per_second)

            def traffic(tokens: int) -> tuple[int, int]:
                before = [_socket_bytes(w.port) for w in workers]
                _generate(split, prompt, tokens)
                after = [_socket_bytes(w.port) for w in workers]
                sent = sum(a[0] - b[0] for a, b in zip(after, before, strict=True))
                back = sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
                return sent, back

            long, one = traffic(args.tokens), traffic(1)
            per_token = [(lo - o) / (args.tokens - 1) for lo, o in zip(long, one, strict=True)]
            settings = split.settings  # type: ignore[attr-defined]
            split.close()
            local.close()
        finally:
            for w in workers:
                w.stop()
    report = {
        "model": str(args.gguf),
        "tokens": args.tokens,
        "repeat": args.repeat,
        "threads": args.threads,
        "split": {k: settings[k] for k in ("n_gpu_layers", "tensor_split")},
        "decode_tok_s_median": {k: statistics.median(v) for k, v in tok_s.items()},
        "decode_tok_s_runs": tok_s,
        "bytes_per_token_to_workers": per_token[0],
        "bytes_per_token_from_workers": per_token[1],
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        med = report["decode_tok_s_median"]
        print(f"{args.gguf.name}: {args.tokens} tokens x {args.repeat}, {args.threads} threads")
        print(
            f"  split: n_gpu_layers {settings['n_gpu_layers']}, "
            f"tensor_split {settings['tensor_split']}"
        )
        print(
            f"  decode tok/s (median): local {med['local']:.2f}, "
            f"2 loopback workers {med['rpc']:.2f}"
        )
        print(
            f"  per token: {per_token[0] / 1024:.1f} KiB to the workers, "
            f"{per_token[1] / 1024:.1f} KiB back"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
