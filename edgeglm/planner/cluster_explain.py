"""Render a ClusterPlan for people: the split per machine, the network per token, the ceiling.

Presentation only: every number comes from ClusterPlan, as ``--json`` prints it.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from edgeglm.planner.cluster import ClusterPlan, Share
from edgeglm.planner.explain import _gib


def _blocks(layers: range, n_layer_all: int) -> str:
    blocks = [i for i in layers if i < n_layer_all]
    txt = f"{blocks[0]}-{blocks[-1]}" if blocks else "none"
    return txt + (" + output" if n_layer_all in layers else "")


def _tps(x: float | None) -> str:
    return "unknown" if x is None else f"{x:.1f} tok/s"


def _net(plan: ClusterPlan, sh: Share) -> str:
    """A worker's bytes per token, both ways, on its first device's row."""
    first = next(s for s in plan.shares if s.device.host == sh.device.host)
    if not sh.device.remote or first is not sh:
        return ""
    return f"{plan.traffic.by_host.get(sh.device.host, 0) / 1024:.1f} KiB"


def render_cluster(plan: ClusterPlan, model: str) -> RenderableType:
    s = plan.settings
    head = Text()
    head.append(f"{model} ({plan.quant or 'its quant'})", style="bold")
    head.append(f" across {1 + len(plan.workers)} machines, context {s.n_ctx}, KV {s.type_k}")
    t = Table(title="split per machine (llama.cpp's device order: CPU, RPC workers, local GPUs)")
    cols = ("machine", "device", "blocks", "weights", "KV cache", "compute")
    for col in (*cols, "total / usable", "read/token", "network/token"):
        t.add_column(col, justify="left" if col in ("machine", "device", "blocks") else "right")
    machine = {w.endpoint: w.machine for w in plan.workers}
    for sh in plan.shares:
        m = sh.memory
        total = Text(
            f"{_gib(m.total)} / {_gib(sh.device.usable)}", style="" if sh.fits else "bold red"
        )
        host = (
            sh.device.host
            if not sh.device.remote
            else f"{sh.device.host} ({machine[sh.device.host]})"
        )
        t.add_row(
            host,
            sh.device.name,
            _blocks(sh.layers, plan.n_layer_all),
            _gib(m.weights),
            _gib(m.kv_cache),
            _gib(m.compute + m.overhead),
            total,
            _gib(int(sh.active_bytes)),
            _net(plan, sh),
        )
    tr = plan.traffic
    net = Text()
    net.append("network per token: ", style="bold")
    net.append(
        f"{tr.sent / 1024:.1f} KiB sent, {tr.received / 1024:.1f} KiB received, "
        f"{tr.round_trips} round trips = {tr.seconds * 1e3:.2f} ms at the links' rates "
        "(hidden states at each machine boundary, the attention mask and positions each "
        "worker needs, the logits when the output layer is remote)\n"
    )
    mem = plan.memory_seconds()
    net.append("decode ceiling: ", style="bold")
    net.append(
        f"{_tps(plan.decode_ceiling_tps)} (memory "
        + ("unknown" if mem is None else f"{mem * 1e3:.1f} ms")
        + f" + network {tr.seconds * 1e3:.2f} ms per token; the network alone allows "
        f"{_tps(plan.network_ceiling_tps)})"
    )
    parts: list[RenderableType] = [head, t, net]
    if plan.fits:
        spec = plan.launch_spec(None)
        flags = Text("llama.cpp flags: ", style="bold").append(" ".join(spec.llama_cpp_args()))
        parts.append(flags)
    else:
        more = Text(style="bold red")
        if plan.more_machines > 0:
            more.append(
                f"does not fit: needs {plan.more_machines} more machine"
                f"{'s' if plan.more_machines > 1 else ''} like {plan.like} "
                f"({_gib(plan.like_usable)} for layers each)"
            )
        else:
            more.append("does not fit: " + "; ".join(plan.notes))
        parts.append(more)
    return Group(*parts)
