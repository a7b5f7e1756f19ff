"""``edgeglm chat`` and ``edgeglm tui``: the Textual app (imported only when run)."""

from __future__ import annotations

from typing import Annotated

import typer

from edgeglm.cli import _fail, app
from edgeglm.errors import EdgeGLMError

ModelArg = Annotated[
    str | None,
    typer.Argument(help="GGUF file, ONNX folder, HF folder or cached HF repo id (default: demo)."),
]


NoPlanOpt = Annotated[
    bool,
    typer.Option("--no-plan", help="Load models with the backend's defaults, not the plan's."),
]


def _open_app(model: str | None, use_plan: bool) -> None:
    """A model that cannot be found, read or planned is refused here, with its
    exit code, before the full-screen app takes the terminal."""
    from edgeglm.artifacts import resolve, verify_gguf
    from edgeglm.checkpoint.hf import HFCheckpoint
    from edgeglm.converters.consistency import check_checkpoint
    from edgeglm.runtime import planned_spec

    try:
        art = resolve(model)
        if art.kind == "gguf":  # loaded in a child once per content, as run does
            verify_gguf(art.path)
            if use_plan:
                planned_spec(art.path)  # a plan that does not fit: exit 7, as run says
        elif art.kind == "hf":  # headers, shards and config: no tensor is read
            ckpt = HFCheckpoint(art.path)
            try:
                check_checkpoint(ckpt)
            finally:
                ckpt.close()
    except EdgeGLMError as e:
        _fail(e)
    from edgeglm.tui.app import run_app

    run_app(model, use_plan=use_plan)


@app.command()
def chat(model: ModelArg = None, no_plan: NoPlanOpt = False) -> None:
    """Open the terminal app on the chat screen."""
    _open_app(model, not no_plan)


@app.command()
def tui(model: ModelArg = None, no_plan: NoPlanOpt = False) -> None:
    """Open the terminal app (chat, bench, models, hardware and plan)."""
    _open_app(model, not no_plan)
