"""CPU inference: EdgeGLM's ONNX int4 in ONNX Runtime against llama.cpp Q4_0, side by side.

    .venv/bin/python benchmarks/onnx_vs_llamacpp.py [--layers 24] [--threads N] [--repeat 3]
    .venv/bin/python benchmarks/onnx_vs_llamacpp.py --experts 64 --top-k 4 --layers 8

Both engines run the same synthetic checkpoint (benchmarks/synthetic.py):
GLM-Edge-1.5B-shaped by default (``--layers`` shrinks it for a quick look), or
with ``--experts`` a small Glm4MoeForCausalLM routing ``--top-k`` of them,
converted by EdgeGLM: ONNX ``int4`` (MatMulNBits blocks of 128, int8
activations; MoE layers in QMoE) and GGUF ``Q4_0``. Each engine prefills the
same random prompt, then decodes ``--gen`` tokens one at a time with a greedy
pick (no eos: every run does the same work), with the same thread count,
alternating engines per repeat. Wall times come from perf_counter around the
engine calls only; medians over the repeats. The report gives the ratios too,
since this machine is shared and noisy; the goal is ONNX decode >= 1.0x
llama.cpp. Accuracy (mean KL from transformers) is benchmarks/onnx_int4_kl.py's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from synthetic import make  # noqa: E402

from edgeglm.hardware import usable_threads  # noqa: E402


def bench_onnx(folder: Path, prompt: list[int], gen: int, threads: int) -> dict[str, float]:
    """Through the backend's own generate(): greedy, eos ignored, timings it measured."""
    from edgeglm.backends.base import SamplingParams
    from edgeglm.backends.onnx import OnnxModel

    m = OnnxModel(folder, n_threads=threads)
    m.eos_ids = set()  # a random model may emit eos at any step; run them all
    try:
        stream = m.generate(prompt, SamplingParams(max_tokens=gen + 1))
        while True:
            try:
                next(stream)
            except StopIteration as stop:
                t = stop.value.timings
                break
        # the first token comes out of prefill: decode_seconds covers the next `gen`
        return {"prefill_s": t.prompt_seconds, "decode_s": t.decode_seconds}
    finally:
        m.close()


def bench_llamacpp(gguf: Path, prompt: list[int], gen: int, threads: int) -> dict[str, float]:
    from edgeglm.backends.llamacpp import LlamaCppModel

    m = LlamaCppModel(gguf, n_ctx=len(prompt) + gen + 8, n_threads=threads)
    llm = m.llm
    n_vocab = llm.n_vocab()

    def last_logits() -> np.ndarray:
        return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))  # type: ignore[no-untyped-call]

    try:
        llm.reset()  # type: ignore[no-untyped-call]
        t0 = time.perf_counter()
        llm.eval(prompt)
        logits = last_logits()
        t1 = time.perf_counter()
        for _ in range(gen):  # as generate(): one eval per token after the prefill one
            llm.eval([int(np.argmax(logits))])
            logits = last_logits()
        t2 = time.perf_counter()
        return {"prefill_s": t1 - t0, "decode_s": t2 - t1}
    finally:
        m.close()


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "edgeglm-bench")
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--threads", type=int, default=usable_threads())
    ap.add_argument("--prompt", type=int, default=128, help="prompt tokens")
    ap.add_argument("--gen", type=int, default=64, help="decoded tokens")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--experts",
        type=int,
        default=0,
        help="a Glm4MoeForCausalLM with this many routed experts instead",
    )
    ap.add_argument("--top-k", type=int, default=4, help="experts per token (with --experts)")
    args = ap.parse_args()

    from edgeglm.converters.gguf.convert import convert as to_gguf
    from edgeglm.converters.onnx import convert as to_onnx

    work: Path = args.workdir
    tag = f"{args.layers}l" + (f"-{args.experts}e{args.top_k}" if args.experts else "")
    src_name = f"glm4-moe-synth-{tag}" if args.experts else f"glm-edge-synth-{tag}"
    src = make(work / src_name, args.layers, experts=args.experts, top_k=args.top_k)
    onnx_dir, gguf = work / f"onnx-int4-{tag}", work / f"q4_0-{tag}.gguf"
    if not (onnx_dir / "model.onnx").exists():
        to_onnx(src, onnx_dir, "int4")
    if not gguf.exists():
        to_gguf(src, gguf, "Q4_0", threads=args.threads)
    vocab = json.loads((src / "config.json").read_text())["vocab_size"]
    prompt = np.random.default_rng(0).integers(0, vocab - 64, args.prompt).tolist()

    runs: dict[str, list[dict[str, float]]] = {"onnx": [], "llamacpp": []}
    for _ in range(args.repeat):  # interleaved: a noisy neighbour slows both alike
        runs["onnx"].append(bench_onnx(onnx_dir, prompt, args.gen, args.threads))
        runs["llamacpp"].append(bench_llamacpp(gguf, prompt, args.gen, args.threads))

    def rate(engine: str, key: str, n: int) -> float:
        return n / statistics.median(r[key] for r in runs[engine])

    decode = {e: rate(e, "decode_s", args.gen) for e in runs}
    prefill = {e: rate(e, "prefill_s", args.prompt) for e in runs}
    report = {
        "checkpoint": (
            f"Glm4Moe, {args.experts} experts top-{args.top_k}, {args.layers} layers"
            if args.experts
            else f"GLM-Edge-1.5B-shaped, {args.layers} layers"
        )
        + " (benchmarks/synthetic.py)",
        "cpu": _cpu_name(),
        "threads": args.threads,
        "prompt_tokens": args.prompt,
        "decode_tokens": args.gen,
        "repeats": args.repeat,
        "onnx_int4_decode_tok_s": round(decode["onnx"], 2),
        "llamacpp_q4_0_decode_tok_s": round(decode["llamacpp"], 2),
        "decode_ratio": round(decode["onnx"] / decode["llamacpp"], 3),
        "onnx_int4_prefill_tok_s": round(prefill["onnx"], 2),
        "llamacpp_q4_0_prefill_tok_s": round(prefill["llamacpp"], 2),
        "prefill_ratio": round(prefill["onnx"] / prefill["llamacpp"], 3),
        "onnx_bytes": sum(p.stat().st_size for p in onnx_dir.iterdir()),
        "gguf_bytes": gguf.stat().st_size,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
