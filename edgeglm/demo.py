"""``edgeglm demo``: every stage that exists, run for real on the demo model.

Each stage prints what it measured. Stages that are not built yet say so;
nothing here prints a number it did not measure.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from edgeglm.backends.base import Completion, SamplingParams
from edgeglm.backends.llamacpp import LlamaCppModel
from edgeglm.converters.gguf.convert import ConvertResult, convert
from edgeglm.hardware import probe
from edgeglm.metrics import kl_divergence
from edgeglm.models import default_model
from edgeglm.runtime import chat, verify_gguf

# Text the demo model never saw in training (written for this check), used
# to compare each quant's next-token distributions with the F32 reference.
HELDOUT = """\
The context manager protocol lets a class decide what happens when a block
of code starts and ends. A file opened in a with statement is closed when the
block finishes, even if an exception was raised inside it. To write your own,
define __enter__ and __exit__, or decorate a generator with
contextlib.contextmanager and yield once.

def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\\n") for line in f]
"""

QUANTS = ("F32", "Q8_0", "Q4_K_M")


def run_demo(workdir: Path, out: Console, err: Console) -> None:
    model = default_model()
    workdir.mkdir(parents=True, exist_ok=True)

    out.rule("1. hardware")
    hw = probe()
    out.print(
        f"CPU  {hw.cpu.model} ({hw.cpu.physical_cores} cores / {hw.cpu.logical_cores} threads, "
        f"{hw.cpu.arch})\nISA  {' '.join(hw.cpu.flags) or 'none detected'}\n"
        f"RAM  {hw.memory.total_bytes / 2**30:.1f} GiB total, "
        f"{hw.memory.available_bytes / 2**30:.1f} GiB available",
        highlight=False,
    )

    out.rule("2. convert (HF safetensors -> GGUF, one pass)")
    results: dict[str, ConvertResult] = {}
    for q in QUANTS:
        r = convert(model, workdir / f"glm-demo-{q}.gguf", q)
        results[q] = r
        out.print(
            f"{q:7s} {r.bytes / 2**20:7.2f} MiB  {r.bits_per_weight:5.2f} bpw  "
            f"{r.seconds:5.2f} s  sha256 {r.sha256[:16]}…",
            highlight=False,
        )

    out.rule("3. plan")
    out.print("[dim]not built yet: the hardware planner lands with the runtime (issue 4)[/]")

    out.rule("4. chat (Q4_K_M, llama.cpp, greedy)")
    verify_gguf(results["Q4_K_M"].output)
    m = LlamaCppModel(results["Q4_K_M"].output, n_ctx=1024)
    messages: list[dict[str, str]] = []
    for question in (
        "What does the with statement do?",
        "And how do I write my own context manager?",
    ):
        messages.append({"role": "user", "content": question})
        out.print(f"[bold]user:[/] {question}\n[bold]assistant:[/] ", end="")
        stream = chat(m, messages, SamplingParams(max_tokens=64))
        parts = []
        while True:
            try:
                piece = next(stream)
            except StopIteration as stop:
                done: Completion = stop.value
                break
            parts.append(piece.text)
            out.print(piece.text, end="", highlight=False, markup=False)
        messages.append({"role": "assistant", "content": "".join(parts)})
        t = done.timings
        out.print(
            f"\n[dim]{t.prompt_tokens} prompt tokens, {t.completion_tokens} generated "
            f"({done.finish_reason}); first token {t.time_to_first_token * 1000:.0f} ms, "
            f"decode {t.decode_tokens_per_second:.0f} tok/s[/]"
        )
    m.close()

    out.rule("5. latency against quality (llama.cpp, this machine)")
    table = Table(
        "quant",
        "MiB",
        "bpw",
        "load s",
        "prefill tok/s",
        "decode tok/s",
        "mean KL vs F32",
        "top-1 agree",
    )
    ref_logits = None
    for q in QUANTS:
        r = results[q]
        t0 = time.perf_counter()
        m = LlamaCppModel(r.output, n_ctx=1024, logits_all=True)
        load_s = time.perf_counter() - t0
        tokens = m.tokenize(HELDOUT)
        t0 = time.perf_counter()
        logits = m.score(tokens)
        prefill = len(tokens) / (time.perf_counter() - t0)
        decode = _decode_speed(m, tokens[:16], 64)
        if ref_logits is None:
            ref_logits = logits
        kl = kl_divergence(ref_logits, logits)
        agree = float((ref_logits.argmax(-1) == logits.argmax(-1)).mean())
        table.add_row(
            q,
            f"{r.bytes / 2**20:.2f}",
            f"{r.bits_per_weight:.2f}",
            f"{load_s:.2f}",
            f"{prefill:.0f}",
            f"{decode:.0f}",
            f"{kl.mean():.5f}",
            f"{agree:.3f}",
        )
        m.close()
    out.print(table)
    out.print(f"[dim]KL over {len(tokens)} held-out tokens; artifacts in {workdir}[/]")


def _decode_speed(m: LlamaCppModel, prompt: list[int], n: int) -> float:
    """Greedy decode n tokens after the prompt; tokens per second of decode only."""
    llm = m.llm
    llm.reset()  # type: ignore[no-untyped-call]
    llm.eval(prompt)
    t0 = time.perf_counter()
    for _ in range(n):
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        llm.eval([tok])
    return n / (time.perf_counter() - t0)
