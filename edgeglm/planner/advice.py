"""Warnings on a plan that fits, and what would fit when nothing does.

A plan that says "does not fit" is only useful with the way out: a shorter
context, a smaller quant, more memory, or a smaller model. Each suggestion is
computed (sizes come from the same estimates as the plan), never a stock
phrase.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edgeglm.hardware import HardwareProfile
from edgeglm.planner import policy
from edgeglm.planner.machine import Budget, GiB
from edgeglm.planner.memory import (
    CTX_PAD,
    compute_buffer_bytes,
    kv_cache_bytes,
    runtime_overhead_bytes,
)
from edgeglm.planner.model import ModelFacts
from edgeglm.planner.recipes import ANY_CLASS, Recipe, RecipeMatchResult
from edgeglm.planner.sources import ModelSource

if TYPE_CHECKING:
    from edgeglm.planner.plan import Plan
    from edgeglm.planner.planner import Evaluated


def _gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB"


def minimal_need(facts: ModelFacts, weights: int | None = None) -> int:
    """Bytes to run at llama.cpp's smallest --fit context with a q8_0 cache."""
    ctx = min(policy.MIN_CTX, facts.n_ctx_train)
    return (
        (facts.resident_bytes if weights is None else weights)
        + kv_cache_bytes(facts, ctx, "q8_0", "q8_0")
        + compute_buffer_bytes(facts, ctx, flash_attn=True, resident=True)
        + runtime_overhead_bytes(facts)
    )


def past_trained_context(n_ctx: int, n_ctx_train: int, flag: str = "-c/--ctx-size") -> str:
    """One plain line for a context longer than the model was trained for
    (llama.cpp only logs "possible training context overflow" and goes on);
    ``run``, ``score``, ``chat`` and ``plan`` all refuse it with this line."""
    return (
        f"{flag} {n_ctx} is past the model's trained context of {n_ctx_train} tokens: "
        f"its output degrades beyond that, so EdgeGLM refuses it; use {n_ctx_train} or less"
    )


def _capacity(b: Budget) -> int:
    return b.ram_usable + (0 if b.unified else b.vram_usable)


def suggestions_when_nothing_fits(
    source: ModelSource,
    facts: ModelFacts,
    b: Budget,
    hw: HardwareProfile,
    evaluated: list[Evaluated],
    ctx: int | None,
    recipes: list[Recipe],
    hardware_file: Path | None = None,
) -> tuple[list[str], list[str]]:
    """The suggestions, and the edgeglm commands they print (each one runs)."""
    from edgeglm.planner.commands import plan_again

    out: list[str] = []
    commands: list[str] = []
    have = _capacity(b)
    shortest = min(policy.MIN_CTX, facts.n_ctx_train)
    if ctx is not None and shortest >= CTX_PAD:
        shorter = [c for c in evaluated if minimal_need(c.facts) <= have]
        if shorter:
            flags = ["--ctx", str(shortest), *_quant_flag(source, evaluated)]
            cmd = plan_again(source, hw, hardware_file, *flags)
            commands += [cmd] if cmd else []
            out.append(
                f"a shorter context: {shorter[0].quant} fits with a smaller --ctx "
                f"({cmd or 'try --ctx ' + str(shortest)}, or leave --ctx out to get the most "
                "that fits)"
            )
    if source.kind == "gguf":
        out += _smaller_gguf(source, facts, have, commands)
    elif len(evaluated) == 1:  # --quant chose one; would another fit?
        out += _smaller_quant(source, hw, hardware_file, evaluated[0].quant, have, commands)
    smallest = min(evaluated, key=lambda c: c.facts.resident_bytes)
    need = minimal_need(smallest.facts)
    out.append(
        f"more memory: {smallest.quant} needs about {_gib(need)} at a "
        f"{shortest}-token context; this machine offers {_gib(have)} after margins"
    )
    floor = next((c for c in evaluated if c.quant == policy.QUALITY_FLOOR), None)
    if floor is not None and floor is not smallest:
        out.append(
            f"for {policy.QUALITY_FLOOR} quality it needs about {_gib(minimal_need(floor.facts))}"
            " (for instance a CPU server with that much RAM, or GPUs plus RAM adding up to it)"
        )
    smaller = [
        r.name
        for r in recipes
        if any(x.hardware_class == b.hardware_class for x in r.recommended) and not r.matches(facts)
    ]
    if smaller:
        out.append(
            f"a smaller model: recipes for this machine's class ({b.hardware_class}) cover "
            + ", ".join(smaller)
        )
    return out, commands


def _quant_flag(source: ModelSource, evaluated: list[Evaluated]) -> list[str]:
    """The -q a plan again needs: the one quant asked for a checkpoint."""
    return ["-q", evaluated[0].quant] if source.kind != "gguf" and len(evaluated) == 1 else []


def _smaller_quant(
    source: ModelSource,
    hw: HardwareProfile,
    hardware_file: Path | None,
    asked: str,
    have: int,
    commands: list[str],
) -> list[str]:
    from edgeglm.planner.commands import plan_again

    ladder = policy.QUANT_LADDER
    start = ladder.index(asked) + 1 if asked in ladder else 0
    for q in ladder[start:]:
        if minimal_need(source.facts(q)) <= have:
            cmd = plan_again(source, hw, hardware_file, "-q", q)
            commands += [cmd] if cmd else []
            return [f"a smaller quant: {q} fits ({cmd or 'plan with -q ' + q}, or leave -q out)"]
    return []


def _smaller_gguf(
    source: ModelSource, facts: ModelFacts, have: int, commands: list[str]
) -> list[str]:
    """A GGUF's quant is fixed; estimate other quants of the same model from
    its parameter count and llama.cpp's typical bits per weight."""
    from edgeglm.converters.gguf.quant_types import SCHEMES
    from edgeglm.planner.commands import checkpoint_of, convert_gguf

    for q in policy.QUANT_LADDER:
        bpw = policy.NOMINAL_BPW[q]
        if bpw >= facts.bits_per_weight:
            continue
        weights = int(facts.parameters * bpw / 8)
        if minimal_need(facts, weights) <= have:
            said = (
                f"a smaller quant: a {q} GGUF of this model (about {_gib(weights)} of weights) "
                "would fit"
            )
            folder = checkpoint_of(source)
            if folder is None or SCHEMES[q].needs_imatrix:
                return [f"{said}; convert the original checkpoint with -q {q}"]
            cmd = convert_gguf(folder, q)
            commands.append(cmd)
            return [f"{said}: {cmd}"]
    return []


def warnings_for(
    plan: Plan,
    source: ModelSource,
    facts: ModelFacts,
    match: RecipeMatchResult | None,
    b: Budget,
    hw: HardwareProfile,
) -> list[str]:
    from edgeglm.converters.gguf.quant_types import SCHEMES

    out: list[str] = list(b.gpu_notes)
    if hw.is_simulated:
        out.append(f"simulated machine ({hw.name or hw.source}): figures come from the profile")
    if plan.placement is not None and plan.placement.tensor_overrides():
        out.append(
            "the tensor overrides (-ot) need llama.cpp's own tools (llama-server, llama-cli): "
            "llama-cpp-python 0.3.36 does not pass them through"
        )
    if plan.quant and plan.convert and SCHEMES[plan.quant].needs_imatrix:
        out.append(
            f"{plan.quant} needs an importance matrix: convert with -q {plan.quant} and "
            "--calibrate on a text of your own"
        )
    if plan.decode_ceiling_tps is None:
        out.append("no memory bandwidth figure for a device in use: decode speed not estimated")
    if plan.settings is not None and plan.settings.n_ctx > facts.n_ctx_train:
        out.append(
            f"context {plan.settings.n_ctx} exceeds the trained {facts.n_ctx_train}: "
            "quality degrades past it"
        )
    if match is not None and source.fixed_quant is not None:
        rec = match.recipe.recommendation(b.hardware_class)
        if source.fixed_quant not in rec.quants:
            where = rec.hardware_class if rec.hardware_class != ANY_CLASS else "this machine"
            out.append(
                f"recipe {match.recipe.name} recommends {', '.join(rec.quants)} for {where}; "
                f"this GGUF is {source.fixed_quant}"
            )
    return out
