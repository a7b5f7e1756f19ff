"""``edgeglm chat`` and ``edgeglm tui``: the Textual app (imported only when run)."""

from __future__ import annotations

from typing import Annotated

import typer

from edgeglm.cli import app

ModelArg = Annotated[
    str | None,
    typer.Argument(help="GGUF file, ONNX folder, HF folder or cached HF repo id (default: demo)."),
]


@app.command()
def chat(model: ModelArg = None) -> None:
    """Open the terminal app on the chat screen."""
    from edgeglm.tui.app import run_app

    run_app(model)


@app.command()
def tui(model: ModelArg = None) -> None:
    """Open the terminal app (chat, bench, models, hardware and plan)."""
    from edgeglm.tui.app import run_app

    run_app(model)
