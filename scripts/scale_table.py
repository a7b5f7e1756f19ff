"""The README's "Scale" table: GLM-4.5 and GLM-5 across machines, computed by the planner.

For each model (config.json only: tests/fixtures/configs/) and quant, and for
each node profile (tests/fixtures/hardware/node-*.json, CPU-only machines),
the fewest machines (this one plus ``--rpc`` workers, all alike) whose
split by ``edgeglm.planner.cluster`` fits, and the decode ceiling that split
allows on each link rate: every machine streams its share of the active
weights at its memory bandwidth in turn, plus the network per token (hidden
states, attention masks, logits) at the link rate plus one round trip per
fetch.

    python scripts/scale_table.py            # rewrite the table in README.md
    python scripts/scale_table.py --check    # exit 1 if README.md is stale

tests/scripts/test_scale_table.py checks README.md against this output.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgeglm.hardware import HardwareProfile, load_profile
from edgeglm.planner.cluster import ClusterPlan, Link, cluster_settings, plan_cluster
from edgeglm.planner.cluster import worker_from_profile as worker
from edgeglm.planner.machine import budget
from edgeglm.planner.model import ModelFacts
from edgeglm.planner.sources import open_model
from edgeglm.rpc.endpoints import MAX_SERVERS

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
FIXTURES = REPO / "tests" / "fixtures"
BEGIN, END = "<!-- scale:begin -->", "<!-- scale:end -->"

MODELS = (("GLM-4.5 (355B)", "glm-4.5.json"), ("GLM-5.x (744B)", "glm-5.json"))
QUANTS = ("Q4_K_M", "Q2_K", "IQ1_M")
NODES = ("node-64gb", "node-128gb")
LINKS_GBIT = (1, 10, 25)
RTT_MS = 0.2  # a switched LAN


@dataclass(frozen=True)
class Row:
    model: str
    quant: str
    weights: int
    node: str
    machines: int | None  # None: more than llama.cpp's 16 workers
    ceilings: tuple[float | None, ...]
    network: str  # per token, at the first link rate


def smallest_fit(facts: ModelFacts, hw: HardwareProfile, link: Link) -> ClusterPlan | None:
    """This machine plus the fewest workers like it that fit (llama.cpp takes up to 16)."""
    s = cluster_settings(facts, None)
    for n in range(MAX_SERVERS + 1):
        workers = [worker(f"10.0.0.{i + 2}:50052", hw, link, i) for i in range(n)]
        plan = plan_cluster(facts, budget(hw), workers, s)
        if plan.fits:
            return plan
    return None


def rows() -> list[Row]:
    out = []
    for label, config in MODELS:
        source = open_model(str(FIXTURES / "configs" / config))
        for quant in QUANTS:
            facts = source.facts(quant)
            for node in NODES:
                hw = load_profile(FIXTURES / "hardware" / f"{node}.json")
                plan = smallest_fit(facts, hw, Link.gbit(LINKS_GBIT[0], RTT_MS))
                ceilings: list[float | None] = []
                for gbit in LINKS_GBIT:
                    if plan is None:
                        ceilings.append(None)
                        continue
                    n = len(plan.workers)
                    link = Link.gbit(gbit, RTT_MS)
                    workers = [worker(f"10.0.0.{i + 2}:50052", hw, link, i) for i in range(n)]
                    again = plan_cluster(facts, budget(hw), workers, plan.settings)
                    ceilings.append(again.decode_ceiling_tps)
                machines = None if plan is None else 1 + len(plan.workers)
                net = "–"
                if plan is not None:
                    tr = plan.traffic
                    trips = "round trip" if tr.round_trips == 1 else "round trips"
                    net = f"{tr.total / 1024:.0f} KiB, {tr.round_trips} {trips}"
                out.append(
                    Row(label, quant, facts.resident_bytes, node, machines, tuple(ceilings), net)
                )
    return out


def table() -> str:
    head = (
        "| model | quant | weights | machines | network per token | "
        + " | ".join(f"ceiling at {g} Gbit/s" for g in LINKS_GBIT)
        + " |"
    )
    lines = [head, "|" + "---|" * (5 + len(LINKS_GBIT))]
    for r in rows():
        n = (
            "more than 17"
            if r.machines is None
            else f"{r.machines} × {r.node.split('-')[1].upper()}"
        )
        tps = [("–" if c is None else f"{c:.1f} tok/s") for c in r.ceilings]
        lines.append(
            f"| {r.model} | {r.quant} | {r.weights / 1e9:.0f} GB | {n} | {r.network} | "
            + " | ".join(tps)
            + " |"
        )
    return "\n".join(lines)


def render(readme: str) -> str:
    """``readme`` with the table between the markers replaced."""
    try:
        before, rest = readme.split(BEGIN, 1)
        _, after = rest.split(END, 1)
    except ValueError:
        sys.exit(f"{README}: no {BEGIN} ... {END} markers")
    return f"{before}{BEGIN}\n{table()}\n{END}{after}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if README.md is stale")
    args = ap.parse_args()
    text = README.read_text()
    new = render(text)
    if args.check:
        sys.exit(
            0 if new == text else "README.md's Scale table is stale: run scripts/scale_table.py"
        )
    fd, tmp = tempfile.mkstemp(dir=README.parent, prefix=".README.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(new)
    os.replace(tmp, README)


if __name__ == "__main__":
    main()
