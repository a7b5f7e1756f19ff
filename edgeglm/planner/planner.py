"""The planner: pick backend, artifact, placement, threads, context and cache for one machine.

For every candidate quant (the GGUF's own, or the recipe's / policy ladder's
for a checkpoint) it finds the fastest placement that fits with a usable
context, then picks: the best placement tier first (all-GPU beats experts in
RAM beats partial offload beats CPU), then the best-quality quant whose
decode ceiling is fast enough, else the fastest. Every choice is recorded
with its reason; explain.py renders them, Plan.to_dict() serializes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeglm.errors import UsageError
from edgeglm.hardware import HardwareProfile
from edgeglm.planner import policy
from edgeglm.planner.advice import (
    past_trained_context,
    suggestions_when_nothing_fits,
    warnings_for,
)
from edgeglm.planner.backend import choose_backend, onnx_suggestion
from edgeglm.planner.commands import checkpoint_of, convert_gguf
from edgeglm.planner.machine import Budget, GiB, budget
from edgeglm.planner.memory import CTX_PAD
from edgeglm.planner.model import ModelFacts
from edgeglm.planner.placement import Settings, decode_ceiling
from edgeglm.planner.plan import Candidate, Decision, Plan
from edgeglm.planner.recipes import (
    Recipe,
    RecipeMatchResult,
    Recommendation,
    find_recipe,
    load_recipes,
)
from edgeglm.planner.sources import ModelSource
from edgeglm.planner.strategies import STRATEGY_FUNCS, Placed


@dataclass(frozen=True)
class Evaluated:
    quant: str
    facts: ModelFacts
    placed: Placed | None
    ceiling: float | None
    from_recipe: bool
    kv_reason: str = ""
    ctx_ok: bool = True  # kept at least min(target, GOOD_CTX) tokens of context


def _gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB"


# -- context and KV cache -----------------------------------------------------


def _settings(n_ctx: int, kv: str) -> Settings:
    # Quantized V needs flash attention in llama.cpp; and flash attention is
    # what llama.cpp's default ("auto") picks wherever the backend supports it.
    return Settings(n_ctx=n_ctx, type_k=kv, type_v=kv, flash_attn=True)


def _place(facts: ModelFacts, b: Budget, target: int, lowest: int) -> tuple[Placed, str] | None:
    """Fastest strategy that fits; within it the target context with f16 KV, else
    q8_0 KV, else the longest context >= ``lowest`` that fits."""
    for name in policy.STRATEGIES:
        fn = STRATEGY_FUNCS[name]
        for kv in policy.KV_TYPES:
            placed = fn(facts, _settings(target, kv), b)
            if placed is not None:
                why = "" if kv == "f16" else f"f16 would not fit {target} tokens"
                return placed, why
        if lowest >= target:
            continue
        kv = policy.KV_TYPES[-1]
        if fn(facts, _settings(lowest, kv), b) is None:
            continue
        lo, hi = lowest // CTX_PAD, target // CTX_PAD - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fn(facts, _settings(mid * CTX_PAD, kv), b) is not None:
                lo = mid
            else:
                hi = mid - 1
        placed = fn(facts, _settings(lo * CTX_PAD, kv), b)
        if placed is not None:
            return placed, f"{target} tokens do not fit even with {kv}"
    return None


def _ctx_bounds(facts: ModelFacts, ctx: int | None, rec_ctx: int | None) -> tuple[int, int]:
    """(target, lowest acceptable) context; a requested one is both (padded like
    llama.cpp, never past the trained context: a longer one is refused)."""
    if ctx is not None:
        if 0 < facts.n_ctx_train < ctx:
            raise UsageError(past_trained_context(ctx, facts.n_ctx_train, "--ctx"))
        padded = -(-ctx // CTX_PAD) * CTX_PAD
        if facts.n_ctx_train > 0:
            padded = min(padded, facts.n_ctx_train)
        return padded, padded
    target = min(facts.n_ctx_train, rec_ctx or policy.DEFAULT_MAX_CTX)
    return target, min(target, policy.MIN_CTX)


# -- candidates ------------------------------------------------------------


def _candidates(
    source: ModelSource, quant: str | None, rec: list[str] | None
) -> list[tuple[str, bool]]:
    """(quant, from the recipe?) in preference order."""
    from edgeglm.converters.gguf.quant_types import scheme

    if source.kind == "gguf":
        if quant is not None and scheme(quant).name != source.fixed_quant:
            raise UsageError(
                f"{source.path} is a {source.fixed_quant} GGUF; --quant applies to checkpoints"
            )
        return [(source.fixed_quant or "unknown quant", False)]
    if quant is not None:
        return [(scheme(quant).name, False)]
    out = [(q, True) for q in rec or []]
    out += [(q, False) for q in policy.QUANT_LADDER if q not in (rec or [])]
    return out


def _acceptable(c: Evaluated) -> bool:
    ladder = policy.QUANT_LADDER
    if c.from_recipe or c.quant not in ladder:
        return True
    return ladder.index(c.quant) <= ladder.index(policy.QUALITY_FLOOR)


def _pick(evaluated: list[Evaluated]) -> tuple[Evaluated | None, str]:
    fitting = [c for c in evaluated if c.placed is not None]
    if not fitting:
        return None, ""
    pool = [c for c in fitting if _acceptable(c)] or fitting
    tier = min(_tier(c) for c in pool)
    pool = [c for c in pool if _tier(c) == tier]
    label = policy.STRATEGY_LABELS[policy.STRATEGIES[tier[0]]]
    if tier[1]:
        label += f" (with under {policy.GOOD_CTX} tokens of context)"
    if len(pool) == 1:
        return pool[0], f"the only candidate that runs {label} here"
    speeds = [c.ceiling for c in pool]
    if any(s is None for s in speeds):
        return pool[0], f"the first preferred quant that runs {label} (speed unknown)"
    fast = [c for c in pool if (c.ceiling or 0) >= policy.TARGET_CEILING_TPS]
    if fast:
        return fast[0], (
            f"the highest-quality candidate that runs {label} with a decode ceiling of "
            f"at least {policy.TARGET_CEILING_TPS:g} tok/s"
        )
    best = max(pool, key=lambda c: c.ceiling or 0.0)
    return best, (
        f"no candidate reaches {policy.TARGET_CEILING_TPS:g} tok/s {label}; "
        "this is the fastest of them"
    )


def _tier(c: Evaluated) -> tuple[int, bool]:
    """Placement rank first (lower is faster), then whether the context survived."""
    assert c.placed is not None
    return policy.STRATEGIES.index(c.placed.placement.strategy), not c.ctx_ok


# -- the plan ----------------------------------------------------------------


def make_plan(
    source: ModelSource,
    hw: HardwareProfile,
    *,
    ctx: int | None = None,
    quant: str | None = None,
    recipes: list[Recipe] | None = None,
    hardware_file: Path | None = None,
) -> Plan:
    """Plan ``source`` on ``hw``. ``ctx`` and ``quant`` pin those choices;
    ``recipes`` defaults to the files in recipes/; ``hardware_file``: the
    profile ``hw`` was read from, for the commands the plan suggests."""
    if ctx is not None and ctx < CTX_PAD:
        raise UsageError(f"--ctx {ctx}: llama.cpp needs at least {CTX_PAD} tokens")
    b = budget(hw)
    all_recipes = load_recipes() if recipes is None else recipes
    probe_facts = source.facts(source.fixed_quant)
    match = find_recipe(probe_facts, all_recipes)
    rec = match.recipe.recommendation(b.hardware_class) if match else None
    target, lowest = _ctx_bounds(probe_facts, ctx, rec.ctx if rec else None)
    candidates = _candidates(source, quant, rec.quants if rec else None)
    evaluated = [_evaluate(q, source.facts(q), r, b, target, lowest) for q, r in candidates]
    chosen, why_quant = _pick(evaluated)
    plan = _base_plan(source, hw, b, probe_facts, match, rec, evaluated)
    if chosen is None or chosen.placed is None:
        plan.suggestions, commands = suggestions_when_nothing_fits(
            source, probe_facts, b, hw, evaluated, ctx, all_recipes, hardware_file
        )
        plan.commands += commands
        plan.decisions.append(
            Decision("fit", "does not fit", _no_fit_reason(evaluated, b, target, lowest))
        )
        return plan
    _fill(plan, source, hw, b, chosen, why_quant, ctx, target)
    plan.warnings += warnings_for(plan, source, chosen.facts, match, b, hw)
    if any("edgeglm doctor" in w for w in plan.warnings):  # a GPU note names it
        plan.commands.append("edgeglm doctor")
    if not _acceptable(chosen):
        plan.warnings.append(
            f"{chosen.quant} is below {policy.QUALITY_FLOOR}, the quality floor: it is the best "
            "that fits here, and answers will be noticeably worse; a smaller model at "
            f"{policy.QUALITY_FLOOR} is often the better trade"
        )
    if chosen.ceiling is not None and chosen.ceiling < policy.SLOW_CEILING_TPS:
        plan.warnings.append(
            f"slow: at most {chosen.ceiling:.1f} tok/s (memory bandwidth / bytes per token); "
            "expect less in practice"
        )
    return plan


def _evaluate(
    quant: str, facts: ModelFacts, from_recipe: bool, b: Budget, target: int, lowest: int
) -> Evaluated:
    res = _place(facts, b, target, lowest)
    if res is None:
        return Evaluated(quant, facts, None, None, from_recipe, "", False)
    placed, kv_why = res
    return Evaluated(
        quant=quant,
        facts=facts,
        placed=placed,
        ceiling=decode_ceiling(placed.layout, b),
        from_recipe=from_recipe,
        kv_reason=kv_why,
        ctx_ok=placed.settings.n_ctx >= min(target, policy.GOOD_CTX),
    )


def _base_plan(
    source: ModelSource,
    hw: HardwareProfile,
    b: Budget,
    facts: ModelFacts,
    match: RecipeMatchResult | None,
    rec: Recommendation | None,
    evaluated: list[Evaluated],
) -> Plan:
    from edgeglm.converters.gguf.quant_types import SCHEMES

    model = {
        "name": facts.name,
        "source": source.kind,
        "path": str(source.path),
        "architecture": facts.architecture,
        "hf_architecture": facts.hf_architecture,
        "quant": source.fixed_quant,
        "parameters": facts.parameters,
        "n_layer": facts.n_layer,
        "n_ctx_train": facts.n_ctx_train,
        "n_vocab": facts.n_vocab,
        "moe": facts.is_moe,
        "n_expert": facts.n_expert,
        "n_expert_used": facts.n_expert_used,
        "mla": facts.is_mla,
    }
    hardware = {
        "name": hw.name,
        "source": hw.source,
        "class": b.hardware_class,
        "cpu": hw.cpu.model,
        "threads": b.threads,
        "ram_usable_bytes": b.ram_usable,
        "cpu_bandwidth_gbps": b.cpu_bandwidth_gbps,
        "gpus": [
            {
                "name": g.name,
                "usable_bytes": g.usable_bytes,
                "bandwidth_gbps": g.bandwidth_gbps,
                "unified": g.unified,
            }
            for g in b.gpus
        ],
    }
    recipe = None
    if match is not None:
        r = match.recipe
        recipe = {
            "name": r.name,
            "title": r.title,
            "source_repo": r.source_repo,
            "matched_by": match.how,
            "recommendation": None
            if rec is None
            else {"hardware_class": rec.hardware_class, "quants": rec.quants, "note": rec.note},
            "keep_higher_precision": [
                {"tensors": h.tensors, "type": h.type, "why": h.why}
                for h in r.keep_higher_precision
            ],
            "pitfalls": r.pitfalls,
        }
    candidates = [
        Candidate(
            quant=c.quant,
            weights_bytes=c.facts.resident_bytes,
            strategy=c.placed.placement.strategy if c.placed else None,
            n_ctx=c.placed.settings.n_ctx if c.placed else None,
            decode_ceiling_tps=c.ceiling,
            needs_imatrix=bool(SCHEMES.get(c.quant) and SCHEMES[c.quant].needs_imatrix),
            note="recipe" if c.from_recipe else "",
        )
        for c in evaluated
    ]
    return Plan(
        model=model,
        hardware=hardware,
        fits=False,
        backend="llama.cpp",
        quant=source.fixed_quant,
        convert=source.kind != "gguf",
        placement=None,
        settings=None,
        n_threads=None,
        devices=[],
        decode_ceiling_tps=None,
        candidates=candidates,
        recipe=recipe,
    )


def _no_fit_reason(evaluated: list[Evaluated], b: Budget, target: int, lowest: int) -> str:
    smallest = min(evaluated, key=lambda c: c.facts.resident_bytes)
    have = b.ram_usable + (0 if b.unified else b.vram_usable)
    ctx_txt = f"{lowest} tokens" if lowest == target else f"{lowest}-{target} tokens"
    return (
        f"no candidate fits with {ctx_txt} of context: the smallest, {smallest.quant}, has "
        f"{_gib(smallest.facts.resident_bytes)} of weights alone, and this machine offers "
        f"{_gib(have)} (RAM {_gib(b.ram_usable)}"
        + ("" if b.unified or not b.gpus else f" + VRAM {_gib(b.vram_usable)}")
        + ") after safety margins"
    )


def _fill(
    plan: Plan,
    source: ModelSource,
    hw: HardwareProfile,
    b: Budget,
    chosen: Evaluated,
    why_quant: str,
    ctx: int | None,
    target: int,
) -> None:
    assert chosen.placed is not None
    placed = chosen.placed
    p, s, layout = placed.placement, placed.settings, placed.layout
    facts = chosen.facts
    plan.fits = True
    plan.quant = chosen.quant
    plan.placement, plan.settings = p, s
    plan.devices = layout.devices
    plan.decode_ceiling_tps = chosen.ceiling
    backend, backend_why = choose_backend(source, hw, b)
    plan.backend = backend
    plan.commands += [c for c in [onnx_suggestion(source)] if c and c in backend_why]
    d = plan.decisions
    d.append(Decision("backend", backend, backend_why))
    if source.kind == "gguf":
        d.append(
            Decision(
                "artifact",
                f"{source.path.name} ({chosen.quant})",
                "the GGUF given; its quant is fixed",
            )
        )
    else:
        d.append(Decision("quant", chosen.quant, why_quant + _how_to_make(plan, source)))
    d.append(
        Decision(
            "placement", policy.STRATEGY_LABELS[p.strategy], _placement_reason(facts, placed, b)
        )
    )
    plan.n_threads, threads_why = _threads(p.strategy, b)
    d.append(Decision("threads", str(plan.n_threads or "unknown"), threads_why))
    d.append(Decision("context", str(s.n_ctx), _ctx_reason(facts, s.n_ctx, ctx, target)))
    kv_why = chosen.kv_reason or "llama.cpp's default; fits"
    if s.type_k != "f16":
        kv_why += f"; {s.type_k} halves the cache at a negligible quality cost"
    d.append(Decision("kv_cache", f"K {s.type_k}, V {s.type_v}", kv_why))
    d.append(
        Decision("flash_attention", "on" if s.flash_attn else "off", _fa_reason(p.strategy, s))
    )
    d.append(
        Decision(
            "batch",
            f"n_ubatch {s.n_ubatch}",
            "llama.cpp's default micro-batch; the compute buffer is sized for it",
        )
    )


def _how_to_make(plan: Plan, source: ModelSource) -> str:
    """How the planned quant is made from this source: a command that runs
    (also in plan.commands), or in words where no command can."""
    from edgeglm.converters.gguf.quant_types import SCHEMES

    quant = plan.quant or ""
    folder = checkpoint_of(source)
    if folder is None:
        return (
            f"; make it by converting the checkpoint this config describes (its weights "
            f"are not here) with -q {quant}"
        )
    if quant in SCHEMES and SCHEMES[quant].needs_imatrix:
        return (
            f"; make it by converting {folder} with -q {quant} and --calibrate on a text "
            "of your own (it needs an importance matrix)"
        )
    cmd = convert_gguf(folder, quant)
    plan.commands.append(cmd)
    return f"; make it with: {cmd}"


def _placement_reason(facts: ModelFacts, placed: Placed, b: Budget) -> str:
    p, layout = placed.placement, placed.layout
    if p.strategy == "cpu":
        why = "no usable GPU" if not b.gpus else "not even two blocks fit in VRAM"
        return f"{why}; all {facts.n_layer} blocks run from RAM (-ngl 0)"
    if p.strategy in ("gpu_full", "unified"):
        return (
            f"all {facts.n_layer} blocks and the output layer fit in VRAM (-ngl {p.n_gpu_layers})"
        )
    if p.strategy == "gpu_moe_split":
        n_moe = len(
            [i for i in range(facts.n_layer_dense_lead, facts.n_layer) if facts.blocks.experts[i]]
        )
        on_cpu = len(p.cpu_expert_layers)
        return (
            f"the model does not fit in VRAM whole; attention, shared experts and the output "
            f"layer take {_gib(sum(dv.weights for dv in layout.devices[1:]))} there, and "
            f"{on_cpu} of {n_moe} blocks' routed experts ({_gib(layout.cpu.weights)} with the "
            f"embeddings) stay in RAM, where only {facts.n_expert_used} of {facts.n_expert} "
            "experts are read per token"
        )
    return (
        f"{layout.gpu_layer_count} of {facts.n_layer_all} blocks plus the output layer fit in "
        f"VRAM (-ngl {p.n_gpu_layers}); the rest run on the CPU"
        + ("; MoE blocks on the GPU keep their experts in RAM" if p.cpu_expert_layers else "")
    )


def _threads(strategy: str, b: Budget) -> tuple[int | None, str]:
    """Physical cores, minus those other programs keep busy, capped by policy."""
    if b.threads is None:
        return None, "core count unknown: let llama.cpp choose"
    if strategy in ("gpu_full", "unified"):
        n = min(b.threads, policy.GPU_ONLY_THREADS)
        return n, f"every layer runs on the GPU; {n} threads feed it"
    reasons = [f"{b.threads} physical cores (decode is memory-bound; hyper-threads add nothing)"]
    n = min(b.threads, policy.MAX_THREADS)
    if n < b.threads:
        reasons.append(f"capped at {policy.MAX_THREADS}: more threads contend for bandwidth")
    taken = int(b.busy_cores or 0)  # whole cores kept busy by other programs
    if taken and b.threads - taken < n:
        n = max(1, b.threads - taken)
        reasons.append(
            f"{b.busy_cores:g} cores were busy with other programs at probe time, and a "
            "thread waiting for a busy core stalls all the others"
        )
    return n, "; ".join(reasons)


def _ctx_reason(facts: ModelFacts, n_ctx: int, ctx: int | None, target: int) -> str:
    if ctx is not None:
        return f"requested with --ctx (trained context: {facts.n_ctx_train})"
    if n_ctx < target:
        return f"the most that fits (wanted {target}; trained context {facts.n_ctx_train})"
    if target < facts.n_ctx_train:
        return (
            f"default cap {target} of the trained {facts.n_ctx_train}: each further token costs "
            f"{facts.kv_bytes_per_token(2.0, 2.0) / 1024:.0f} KiB of f16 KV; pass --ctx for more"
        )
    return "the model's trained context, and it fits"


def _fa_reason(strategy: str, s: Settings) -> str:
    if s.type_v != "f16":
        return "required: llama.cpp only supports a quantized V cache with flash attention"
    if strategy != "cpu":
        return "GPU offload: the fused attention kernel is faster and its compute buffer small"
    return (
        "llama.cpp's 'auto' default on CPU too: the compute buffer no longer holds "
        "n_head x n_ctx x n_ubatch attention scores"
    )
