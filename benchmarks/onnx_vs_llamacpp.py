"""CPU inference: EdgeGLM's ONNX int4 in ONNX Runtime against llama.cpp Q4_0, side by side.

    .venv/bin/python benchmarks/onnx_vs_llamacpp.py [--layers 24] [--threads N] [--repeat 3]
    .venv/bin/python benchmarks/onnx_vs_llamacpp.py --experts 64 --top-k 4 --layers 8
    .venv/bin/python benchmarks/onnx_vs_llamacpp.py --layers 24 --profile

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

``--profile`` runs the ONNX side alone under ONNX Runtime's profiler (the
backend's session options plus ``enable_profiling``) and reports where the
time goes: kernel milliseconds per op type (MatMulNBits split by its place in
the layer), per prefill and per decoded token, after one warm-up generation.
The profiler adds overhead: compare its shares, not its totals with the above.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

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


def profile_onnx(
    folder: Path, prompt: list[int], gen: int, threads: int, repeat: int, prefix: Path
) -> dict[str, Any]:
    """Kernel milliseconds per op, per prefill and per decoded token (greedy, as
    bench_onnx): medians over the runs of each kind."""
    import onnxruntime as ort

    from edgeglm.backends.onnx import OnnxModel, load_model_folder, session_options

    m = OnnxModel(folder, n_threads=threads)
    so = session_options(threads)
    so.enable_profiling = True
    so.profile_file_prefix = str(prefix)
    m.session = ort.InferenceSession(
        str(load_model_folder(folder)[0]), so, providers=["CPUExecutionProvider"]
    )
    kinds: list[str] = []  # what each session run was, in order
    for _ in range(repeat + 1):  # the first generation warms up (allocations, caches)
        cache = m._new_cache(len(prompt) + gen)
        logits = m._step(prompt, 0, cache)
        for i in range(gen):
            logits = m._step([int(np.argmax(logits))], len(prompt) + i, cache)
        kinds += ["prefill"] + ["decode"] * gen
    trace = Path(m.session.end_profiling())
    m.close()
    events = json.loads(trace.read_text())
    trace.unlink()
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    assert len(runs) == len(kinds), (len(runs), len(kinds))
    skip = 1 + gen  # the warm-up generation
    nodes = sorted((e for e in events if e.get("cat") == "Node"
                    and e["name"].endswith("_kernel_time")), key=lambda e: e["ts"])  # fmt: skip
    per: dict[str, list[Counter[str]]] = defaultdict(list)  # kind -> one Counter a run
    wall: dict[str, list[float]] = defaultdict(list)
    j = 0
    for run, kind in zip(runs[skip:], kinds[skip:], strict=True):
        wall[kind].append(run["dur"])
        ops: Counter[str] = Counter()
        while j < len(nodes) and nodes[j]["ts"] < run["ts"]:
            j += 1
        while j < len(nodes) and nodes[j]["ts"] <= run["ts"] + run["dur"]:
            ops[_op_key(nodes[j])] += nodes[j]["dur"]
            j += 1
        per[kind].append(ops)
    out: dict[str, Any] = {}
    for kind in ("prefill", "decode"):
        # medians over the runs: a neighbour's burst inflates one run, not the report
        ms = {op: statistics.median(r[op] for r in per[kind]) / 1e3
              for op in set().union(*per[kind])}  # fmt: skip
        total = sum(ms.values())
        ranked = sorted(ms.items(), key=lambda kv: -kv[1])
        out[kind] = {
            "run_ms": round(statistics.median(wall[kind]) / 1e3, 2),
            "kernel_ms": round(total, 2),
            "ops": {op: f"{t:.2f} ms, {100 * t / total:.1f}%" for op, t in ranked},
        }
    return out


def _op_key(event: dict[str, Any]) -> str:
    """The op type; MatMulNBits with its place (qkv_proj, lm_head, ...), layers merged."""
    op = str(event["args"]["op_name"])
    if op != "MatMulNBits":
        return op
    parts = re.sub(r"_kernel_time$", "", event["name"]).split("/")
    return f"{op} {parts[-2] if len(parts) > 1 else '?'}"


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
    ap.add_argument(
        "--profile", action="store_true", help="ONNX only: kernel time per op (see above)"
    )
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
    vocab = json.loads((src / "config.json").read_text())["vocab_size"]
    prompt = np.random.default_rng(0).integers(0, vocab - 64, args.prompt).tolist()
    if args.profile:
        prof = profile_onnx(
            onnx_dir, prompt, args.gen, args.threads, args.repeat, work / f"profile-{tag}"
        )
        print(json.dumps({"onnx": str(onnx_dir), "threads": args.threads,
                          "prompt_tokens": args.prompt, **prof}, indent=2))  # fmt: skip
        return
    if not gguf.exists():
        to_gguf(src, gguf, "Q4_0", threads=args.threads)

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
