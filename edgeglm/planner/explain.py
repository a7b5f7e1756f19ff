"""Render a Plan for people: the decisions with their reasons, then the memory bill.

Only presentation lives here; every number and sentence comes from the Plan,
so the human view and ``--json`` never disagree.
"""

from __future__ import annotations

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from edgeglm.planner.plan import Plan

GiB = 1 << 30


def _gib(n: int | None) -> str:
    if n is None:
        return "unknown"
    return f"{n / GiB:.2f} GiB" if n >= GiB // 2 else f"{n / 2**20:.1f} MiB"


def _header(plan: Plan) -> Text:
    m, h = plan.model, plan.hardware
    n = m["parameters"]
    params = f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"
    moe = f", MoE {m['n_expert_used']}/{m['n_expert']} experts" if m["moe"] else ""
    t = Text()
    t.append(f"{m['name']}", style="bold")
    t.append(
        f"  {m['architecture']}, {params} parameters{moe}, trained context {m['n_ctx_train']}\n"
    )
    machine = h["name"] or "this machine"
    gpus = ", ".join(f"{g['name']} ({_gib(g['usable_bytes'])} usable)" for g in h["gpus"])
    t.append(f"on {machine}", style="bold")
    t.append(
        f"  [{h['class']}] {h['cpu']}, RAM {_gib(h['ram_usable_bytes'])} usable"
        + (f"; {gpus}" if gpus else "; no usable GPU")
    )
    if plan.recipe:
        t.append(f"\nrecipe {plan.recipe['name']}", style="bold")
        t.append(f"  ({plan.recipe['source_repo']}, matched by {plan.recipe['matched_by']})")
    return t


def _decisions(plan: Plan) -> Table:
    t = Table(title="decisions", title_justify="left", show_lines=False, expand=False)
    t.add_column("what", style="bold")
    t.add_column("choice")
    t.add_column("why", overflow="fold")
    for d in plan.decisions:
        t.add_row(d.what.replace("_", " "), d.value, d.reason)
    return t


def _memory(plan: Plan) -> Table:
    t = Table(title="memory estimate (peak, full context)", title_justify="left")
    for col in ("device", "weights", "KV cache", "compute", "runtime", "total", "usable"):
        t.add_column(col, justify="left" if col == "device" else "right")
    usable = [
        plan.hardware["ram_usable_bytes"],
        *(g["usable_bytes"] for g in plan.hardware["gpus"]),
    ]
    names = ["CPU / RAM", *(g["name"] for g in plan.hardware["gpus"])]
    for d, cap, name in zip(plan.devices, usable, names, strict=False):
        t.add_row(
            name,
            _gib(d.weights),
            _gib(d.kv_cache),
            _gib(d.compute),
            _gib(d.overhead),
            _gib(d.total),
            _gib(cap),
        )
    return t


def _candidates(plan: Plan) -> Table:
    t = Table(title="candidates", title_justify="left")
    for col in ("quant", "weights", "best placement", "context", "ceiling tok/s"):
        t.add_column(col)
    for c in sorted(plan.candidates, key=lambda c: -c.weights_bytes):
        mark = "*" if c.quant == plan.quant else ""
        t.add_row(
            f"{c.quant}{mark}" + (" (imatrix)" if c.needs_imatrix else ""),
            _gib(c.weights_bytes),
            c.strategy or "does not fit",
            str(c.n_ctx or "-"),
            "-" if c.decode_ceiling_tps is None else f"{c.decode_ceiling_tps:.1f}",
        )
    return t


def _bullets(title: str, items: list[str], style: str) -> Text:
    t = Text(f"{title}\n", style=f"bold {style}")
    for i in items:
        t.append(f"  - {i}\n")
    return t


def render_plan(plan: Plan) -> RenderableType:
    parts: list[RenderableType] = [_header(plan), Text()]
    if plan.fits:
        verdict = Text("fits", style="bold green")
        if plan.decode_ceiling_tps is not None:
            verdict.append(
                f": decode ceiling {plan.decode_ceiling_tps:.1f} tok/s "
                "(memory bandwidth / bytes per token)",
                style="",
            )
        parts += [verdict, _decisions(plan), _memory(plan)]
    else:
        parts += [Text("does not fit", style="bold red"), _decisions(plan)]
    if len(plan.candidates) > 1:
        parts.append(_candidates(plan))
    if plan.recipe and plan.recipe.get("pitfalls"):
        parts.append(_bullets("recipe notes", plan.recipe["pitfalls"], "cyan"))
    if plan.warnings:
        parts.append(_bullets("warnings", plan.warnings, "yellow"))
    if plan.suggestions:
        parts.append(_bullets("what would fit", plan.suggestions, "magenta"))
    args = plan.llama_cpp_args()
    if args:
        parts.append(Text("llama.cpp flags: ", style="bold").append(" ".join(args), style=""))
    return Group(*parts)


def print_plan(plan: Plan, console: Console) -> None:
    console.print(render_plan(plan), highlight=False)
