"""``edgeglm doctor`` and ``edgeglm plan``: what this machine is, and how a model should run on it.

``register(app)`` adds both commands to the main Typer app (edgeglm/cli.py
calls it). The console helpers come from edgeglm.cli, imported inside the
commands because edgeglm.cli imports this module. As everywhere in the CLI:
stdout carries the data (tables or ``--json``), stderr the diagnostics, and
errors exit with their ``ExitCode``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from edgeglm.errors import EdgeGLMError, HardwareError
from edgeglm.hardware import HardwareProfile, load_profile, probe

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


def doctor(
    hardware: HardwareOpt = None,
    as_json: JsonOpt = False,
    remeasure: Annotated[
        bool,
        typer.Option(
            "--remeasure", help="Measure memory bandwidth again instead of using the cache."
        ),
    ] = False,
) -> None:
    """Show this machine: CPU and instruction sets, RAM and its bandwidth, GPUs,
    and what the installed llama.cpp and ONNX Runtime can really use."""
    from edgeglm.cli import _fail, out
    from edgeglm.planner.doctor_view import render_doctor

    try:
        if remeasure and hardware is None:
            from edgeglm.hardware import probe_cpu, probe_memory
            from edgeglm.planner.bandwidth import forget

            forget(probe_cpu(), probe_memory())
        hw = _machine(hardware)
    except EdgeGLMError as e:
        _fail(e)
    if as_json:
        print(json.dumps(hw.to_dict(), indent=2))
    else:
        out.print(render_doctor(hw), highlight=False)


def plan(
    model: Annotated[
        str,
        typer.Argument(
            help="A .gguf file, a Hugging Face folder (or cache repo id), or a config.json."
        ),
    ],
    ctx: Annotated[
        int | None,
        typer.Option("--ctx", "-c", help="Context length to plan for (default: what fits)."),
    ] = None,
    quant: Annotated[
        str | None,
        typer.Option("--quant", "-q", help="Plan this quant of a checkpoint instead of choosing."),
    ] = None,
    hardware: HardwareOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Plan how MODEL should run here: backend, quant, GPU layers or expert
    placement, threads, context, KV cache and flash attention, with the memory
    estimate and a reason for every choice."""
    from edgeglm.cli import _fail, err, out
    from edgeglm.planner.explain import print_plan
    from edgeglm.planner.planner import make_plan
    from edgeglm.planner.sources import open_model

    try:
        hw = _machine(hardware)
        result = make_plan(open_model(model), hw, ctx=ctx, quant=quant)
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


def register(app: typer.Typer) -> None:
    app.command()(doctor)
    app.command()(plan)
