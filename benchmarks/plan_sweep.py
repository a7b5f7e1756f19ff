"""Does the planner pick fast settings? Sweep the knobs it decides, measure, compare.

For one GGUF on this machine: every thread count from 1 to the usable cores,
flash attention on and off, and the KV cache types the plan could choose
(q8_0 only with flash attention: llama.cpp needs it for a quantized V).
Each run loads the model with LlamaCppModel (EdgeGLM's backend, with its
AMX workaround), evaluates a short prompt, then times greedy decoding of
``--tokens`` tokens; a setting's speed is the median of ``--repeats`` runs,
taken in interleaved rounds. The
report ends with the planned setting's speed as a fraction of the best.

    .venv/bin/python benchmarks/plan_sweep.py                 # the demo model
    .venv/bin/python benchmarks/plan_sweep.py model.gguf --tokens 64 --repeats 3

LlamaCppModel has no flash-attention or cache-type arguments yet; the sweep
injects them into the llama_cpp.Llama call it makes (see ``_llama_options``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Setting:
    threads: int
    flash_attn: bool
    kv: str

    def label(self) -> str:
        return f"threads={self.threads} fa={'on' if self.flash_attn else 'off'} kv={self.kv}"


@contextmanager
def _llama_options(**extra: Any) -> Iterator[None]:
    """Add keyword arguments to the llama_cpp.Llama(...) call LlamaCppModel makes."""
    import llama_cpp

    original = llama_cpp.Llama

    def patched(*args: Any, **kwargs: Any) -> Any:
        return original(*args, **{**kwargs, **extra})

    llama_cpp.Llama = patched  # type: ignore[misc,assignment]
    try:
        yield
    finally:
        llama_cpp.Llama = original  # type: ignore[misc]


def decode_speed(gguf: Path, n_ctx: int, s: Setting, tokens: int) -> float:
    """One run: load with setting ``s``, evaluate a prompt, time ``tokens`` greedy steps."""
    from edgeglm.backends.llamacpp import LlamaCppModel
    from edgeglm.planner.policy import GGML_TYPE_IDS

    kv = GGML_TYPE_IDS[s.kv]
    with _llama_options(flash_attn=s.flash_attn, type_k=kv, type_v=kv):
        m = LlamaCppModel(gguf, n_ctx=n_ctx, n_threads=s.threads)
    try:
        m.llm.eval(m.tokenize("def read_lines(path):\n    with open(path) as f:\n"))
        t0 = time.perf_counter()
        for _ in range(tokens):
            m.llm.eval([m.llm.sample(temp=0.0)])
        return tokens / (time.perf_counter() - t0)
    finally:
        m.close()


def sweep(
    gguf: Path, n_ctx: int, grid: list[Setting], tokens: int, repeats: int
) -> dict[Setting, float]:
    """Median speed per setting. Rounds interleave the settings, so load from other
    programs drifting over the sweep hits them all alike instead of whichever ran last."""
    runs: dict[Setting, list[float]] = {s: [] for s in grid}
    for _ in range(repeats):
        for s in grid:
            runs[s].append(decode_speed(gguf, n_ctx, s, tokens))
    return {s: statistics.median(v) for s, v in runs.items()}


def settings(max_threads: int) -> list[Setting]:
    out = []
    for threads, fa, kv in itertools.product(range(1, max_threads + 1), (False, True), KV_TYPES):
        if kv != "f16" and not fa:
            continue  # llama.cpp refuses a quantized V cache without flash attention
        out.append(Setting(threads, fa, kv))
    return out


KV_TYPES = ("f16", "q8_0")


def _gguf(model: str, workdir: Path) -> Path:
    path = Path(model)
    if path.suffix == ".gguf":
        return path
    from edgeglm.converters.gguf.convert import convert

    out = workdir / "model-Q4_K_M.gguf"
    convert(path, out, "Q4_K_M")
    return out


def main() -> int:
    from edgeglm.hardware import probe, usable_threads
    from edgeglm.models import DEMO_MODEL
    from edgeglm.planner.planner import make_plan
    from edgeglm.planner.sources import open_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model", nargs="?", default=str(DEMO_MODEL), help="GGUF, or HF folder")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print results as JSON")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        gguf = _gguf(args.model, Path(tmp))
        plan = make_plan(open_model(str(gguf)), probe())
        assert plan.settings is not None
        n_ctx = plan.settings.n_ctx
        planned = Setting(
            plan.n_threads or usable_threads(), plan.settings.flash_attn, plan.settings.type_k
        )
        results = sweep(gguf, n_ctx, settings(usable_threads()), args.tokens, args.repeats)
        for s, v in results.items():
            print(f"{s.label():32s} {v:8.1f} tok/s", file=sys.stderr)
    best = max(results, key=lambda s: results[s])
    ratio = results.get(planned, 0.0) / results[best]
    report = {
        "model": str(args.model),
        "n_ctx": n_ctx,
        "tokens": args.tokens,
        "repeats": args.repeats,
        "results": [
            {"setting": s.label(), "tokens_per_second": round(v, 1)} for s, v in results.items()
        ],
        "planned": planned.label(),
        "planned_tokens_per_second": round(results.get(planned, 0.0), 1),
        "best": best.label(),
        "best_tokens_per_second": round(results[best], 1),
        "planned_vs_best": round(ratio, 3),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"planned {planned.label()}: {report['planned_tokens_per_second']} tok/s; "
            f"best {best.label()}: {report['best_tokens_per_second']} tok/s; "
            f"planned/best = {ratio:.1%} (goal: >= 95%)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
