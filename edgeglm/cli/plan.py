"""``edgeglm doctor`` and ``edgeglm plan``: what this machine is, how a model should run on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from edgeglm.cli import _fail, app, err, out
from edgeglm.cli.hub import PullOpt, pull_if_missing
from edgeglm.errors import EdgeGLMError, HardwareError, UsageError
from edgeglm.hardware import HardwareProfile, load_profile, probe, probe_cpu, probe_memory

HardwareOpt = Annotated[
    Path | None,
    typer.Option(
        "--hardware",
        help="Hardware profile JSON (the shape `edgeglm doctor --json` prints) to plan for "
        "instead of this machine.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


def _machine(hardware: Path | None) -> HardwareProfile:
    return load_profile(hardware) if hardware is not None else probe()


@app.command()
def doctor(
    hardware: HardwareOpt = None,
    as_json: JsonOpt = False,
    remeasure: Annotated[
        bool,
        typer.Option(
            "--remeasure", help="Measure memory bandwidth again instead of using the cache."
        ),
    ] = False,
    rpc: Annotated[
        str | None,
        typer.Option(
            "--rpc",
            help="Show these `edgeglm worker`s instead (HOST:PORT,...): devices, free memory, "
            "measured round trip and bandwidth.",
        ),
    ] = None,
) -> None:
    """Show this machine and what the installed llama.cpp and ONNX Runtime can use.

    The CPU and its instruction sets, RAM and its measured bandwidth, the GPUs,
    and the devices and execution providers that really initialize here."""
    from edgeglm.hardware.doctor import render_doctor

    if rpc is not None:
        _doctor_workers(rpc, as_json)
        return
    try:
        if remeasure and hardware is None:
            from edgeglm.hardware.bandwidth import forget

            forget(probe_cpu(), probe_memory())
        hw = _machine(hardware)
    except EdgeGLMError as e:
        _fail(e)
    if as_json:
        print(json.dumps(hw.to_dict(), indent=2))
    else:
        from edgeglm.hardware.engine import installed_build

        # How `make engine` built the llama.cpp installed here; a profile read
        # from a file describes another machine's, so nothing is said of ours.
        build = None if hw.is_simulated else (installed_build() or {})
        out.print(render_doctor(hw, engine_build=build), highlight=False)


def _doctor_workers(rpc: str, as_json: bool) -> None:
    from edgeglm.hardware.doctor import render_workers, workers_dict
    from edgeglm.rpc.endpoints import parse_endpoints
    from edgeglm.rpc.probe import probe as probe_worker

    try:
        workers = [probe_worker(ep) for ep in parse_endpoints(rpc)]
    except EdgeGLMError as e:
        _fail(e)
    if as_json:
        print(json.dumps(workers_dict(workers), indent=2))
    else:
        out.print(render_workers(workers), highlight=False)


@app.command()
def plan(
    model: Annotated[
        str,
        typer.Argument(
            help="A .gguf file, an ONNX folder, a Hugging Face folder (or cache repo id), "
            "or a config.json."
        ),
    ],
    ctx: Annotated[
        int | None,
        typer.Option(
            "--ctx",
            "-c",
            help="Context length to plan for, up to the trained one (default: what fits).",
        ),
    ] = None,
    quant: Annotated[
        str | None,
        typer.Option("--quant", "-q", help="Plan this quant of a checkpoint instead of choosing."),
    ] = None,
    hardware: HardwareOpt = None,
    as_json: JsonOpt = False,
    pull: PullOpt = False,
    rpc: Annotated[
        str | None,
        typer.Option(
            "--rpc",
            help="Workers (HOST:PORT,...) running `edgeglm worker`: split the layers over "
            "this machine and them, in proportion to free memory. They are probed unless "
            "--rpc-hardware describes them.",
        ),
    ] = None,
    rpc_hardware: Annotated[
        str | None,
        typer.Option(
            "--rpc-hardware",
            help="Hardware profiles of the --rpc workers (PROFILE.json, the shape `edgeglm "
            "doctor --json` prints on that machine): one for all of them, or one each in "
            "--rpc order (comma-separated). Plans on paper: no worker is contacted.",
        ),
    ] = None,
    link_gbit: Annotated[
        float | None,
        typer.Option(
            "--link-gbit",
            help="Network rate to each worker in Gbit/s (default: measured by the probe, "
            "1 with --rpc-hardware).",
        ),
    ] = None,
    rtt_ms: Annotated[
        float | None,
        typer.Option(
            "--rtt-ms",
            help="Round-trip time to each worker in ms (default: measured, 0.3 on paper).",
        ),
    ] = None,
) -> None:
    """Plan how MODEL should run here, with a reason for every choice.

    The backend, quant, GPU layers or expert placement, threads, context, KV
    cache and flash attention, and the memory estimate they add up to.

    With --rpc, the layers are split over this machine and the workers: per
    machine its weights, KV cache and compute buffers, the data sent over the
    network per generated token, and the decode ceiling that memory bandwidth
    and the links allow; a model that does not fit says how many more
    machines it needs."""
    from edgeglm.artifacts import from_store
    from edgeglm.planner.explain import print_plan
    from edgeglm.planner.onnx_plan import is_onnx_folder
    from edgeglm.planner.planner import make_plan
    from edgeglm.planner.sources import open_model

    try:
        pull_if_missing([model], pull)
        stored = None if Path(model).exists() else from_store(model)
    except EdgeGLMError as e:
        _fail(e)
    if stored is not None and stored.kind == "onnx":  # NAME:onnx-int4 in the store
        model = str(stored.path)
    if rpc is not None or rpc_hardware is not None:
        _plan_rpc(model, hardware, ctx, quant, as_json, rpc, rpc_hardware, link_gbit, rtt_ms)
        return
    if is_onnx_folder(Path(model)):
        _plan_onnx(Path(model), hardware, ctx, as_json)
        return
    try:
        source = open_model(model)  # a bad model fails before the machine is probed
        hw = _machine(hardware)
        result = make_plan(source, hw, ctx=ctx, quant=quant, hardware_file=hardware)
    except EdgeGLMError as e:
        _fail(e)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print_plan(result, out)
    if not result.fits:
        err.print("[dim]see 'what would fit' in the plan above[/]", highlight=False)
        machine = hw.name or ("this machine" if not hw.is_simulated else hw.source)
        _fail(HardwareError(f"{result.model['name']} does not fit on {machine}"))


def _plan_rpc(
    model: str,
    hardware: Path | None,
    ctx: int | None,
    quant: str | None,
    as_json: bool,
    rpc: str | None,
    rpc_hardware: str | None,
    link_gbit: float | None,
    rtt_ms: float | None,
) -> None:
    from edgeglm.planner import cluster
    from edgeglm.planner.cluster_explain import render_cluster
    from edgeglm.planner.sources import open_model
    from edgeglm.rpc.endpoints import parse_endpoints

    try:
        if rpc is None:
            raise UsageError("--rpc-hardware describes the --rpc workers: name them with --rpc")
        endpoints = parse_endpoints(rpc)
        for flag, v in (("--link-gbit", link_gbit), ("--rtt-ms", rtt_ms)):
            if v is not None and not v > 0:
                raise UsageError(f"{flag} {v:g}: must be more than 0")
        profiles = [load_profile(Path(p)) for p in (rpc_hardware or "").split(",") if p.strip()]
        link = None
        if link_gbit is not None or rtt_ms is not None:
            link = cluster.Link.gbit(
                link_gbit or cluster.DEFAULT_LINK_GBIT,
                rtt_ms if rtt_ms is not None else cluster.DEFAULT_RTT_MS,
            )
        source = open_model(model)
        hw = _machine(hardware)
        probe = None if profiles else cluster.default_probe()
        workers = cluster.workers_for(endpoints, profiles, link, probe)
        result = cluster.plan_model(source, hw, workers, ctx=ctx, quant=quant)
    except EdgeGLMError as e:
        _fail(e)
    artifact = str(source.path) if source.kind == "gguf" else None
    if as_json:
        spec = result.launch_spec(artifact) if result.fits else None
        doc = {
            "model": source.label,
            "cluster": result.to_dict(),
            "launch": None if spec is None else spec.to_dict(),
            "llama_cpp_args": [] if spec is None else spec.llama_cpp_args(),
        }
        print(json.dumps(doc, indent=2))
    else:
        out.print(render_cluster(result, source.label), highlight=False)
    if not result.fits:
        _fail(HardwareError(f"{source.label} does not fit on these {1 + len(workers)} machines"))


def _plan_onnx(folder: Path, hardware: Path | None, ctx: int | None, as_json: bool) -> None:
    from rich.table import Table

    from edgeglm.planner.onnx_plan import plan_onnx

    try:
        p = plan_onnx(folder, _machine(hardware), ctx)
    except EdgeGLMError as e:
        _fail(e)
    if as_json:
        print(json.dumps(p.to_dict(), indent=2))
    else:
        t = Table(title=f"plan for {folder} (ONNX Runtime)")
        for col in ("decision", "choice", "why"):
            t.add_column(col)
        t.add_row("provider", p.provider, p.reasons["provider"])
        t.add_row("threads", str(p.threads), p.reasons["threads"])
        t.add_row("context", str(p.n_ctx), p.reasons["context"])
        m = p.memory
        t.add_row(
            "memory",
            f"{m.total / 2**20:.0f} MiB of {p.ram_usable / 2**30:.1f} GiB usable",
            f"weights {m.weights / 2**20:.0f} + runtime {m.runtime / 2**20:.0f} + KV "
            f"{m.kv_cache / 2**20:.0f} + logits {m.logits / 2**20:.0f} + "
            f"{m.fixed / 2**20:.0f} MiB; " + p.reasons["memory"],
        )
        out.print(t)
    if not p.fits:
        _fail(
            HardwareError(f"{folder} needs {p.memory.total / 2**30:.1f} GiB; less is usable here")
        )
