"""``edgeglm demo``: every stage, run for real on the bundled demo model.

Each stage prints what it measured; nothing here prints a number it did not measure.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from rich.console import Console

from edgeglm.artifacts import verify_gguf
from edgeglm.backends.base import Completion
from edgeglm.backends.llamacpp import LlamaCppModel
from edgeglm.bench.run import BenchRequest, main_table, run_bench
from edgeglm.converters.gguf.convert import convert
from edgeglm.converters.output import ConvertResult
from edgeglm.generation import from_gguf
from edgeglm.hardware import probe
from edgeglm.hardware.doctor import render_doctor
from edgeglm.models import default_model
from edgeglm.planner.explain import render_plan
from edgeglm.planner.planner import make_plan
from edgeglm.planner.sources import open_model
from edgeglm.runtime import chat

QUANTS = ("F32", "Q8_0", "Q4_K_M")


def run_demo(workdir: Path, out: Console, err: Console) -> None:
    model = default_model()
    workdir.mkdir(parents=True, exist_ok=True)

    out.rule("1. hardware (edgeglm doctor)")
    hw = probe()
    out.print(render_doctor(hw), highlight=False)

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

    out.rule("3. plan (edgeglm plan, for the Q4_K_M artifact on this machine)")
    plan = make_plan(open_model(str(results["Q4_K_M"].output)), hw)
    out.print(render_plan(plan))
    spec = plan.launch_spec()

    out.rule("4. chat (Q4_K_M, llama.cpp, the plan's settings, sampled with seed 0)")
    verify_gguf(results["Q4_K_M"].output)
    if spec is None:
        m = LlamaCppModel(results["Q4_K_M"].output, n_ctx=1024)
    else:
        m = LlamaCppModel.from_spec(spec.with_(n_ctx=1024))
    # The model's own sampling defaults (its generation_config.json, carried
    # into the GGUF), as run and the chat app use them; short replies.
    model_own = from_gguf(results["Q4_K_M"].output)
    sampling = replace(
        model_own, max_tokens=64, sources={**model_own.sources, "max_tokens": "the demo"}
    )
    out.print(f"[dim]sampling: {sampling.describe()}[/]")
    messages: list[dict[str, str]] = []
    for question in (
        "What does the with statement do?",
        "And how do I write my own context manager?",
    ):
        messages.append({"role": "user", "content": question})
        out.print(f"[bold]user:[/] {question}\n[bold]assistant:[/] ", end="")
        params = sampling.params()
        stream = chat(m, messages, params)
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

    out.rule("5. latency against quality (edgeglm bench, llama.cpp, this machine)")
    artifacts = tuple(str(results[q].output) for q in QUANTS)
    report = run_bench(BenchRequest(models=artifacts, repeat=3))
    if not out.is_terminal:
        out.width = max(out.width, 160)  # a report table, not a terminal layout
    out.print(main_table(report))
    out.print(
        "[dim]* Pareto front. Quality: KL divergence of next-token distributions "
        "against F32 on a held-out text.[/]"
    )
