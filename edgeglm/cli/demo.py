"""``edgeglm demo`` and ``edgeglm version``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeglm import __version__
from edgeglm.cli import _fail, app, err, out
from edgeglm.errors import EdgeGLMError


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="Where converted artifacts go.")] = Path("out/demo"),
) -> None:
    """Run the whole pipeline on the bundled demo GLM model."""
    from edgeglm.demo import run_demo

    try:
        run_demo(workdir, out, err)
    except EdgeGLMError as e:
        _fail(e)


@app.command()
def version() -> None:
    """Print the versions of EdgeGLM and its engines."""
    import llama_cpp

    print(f"edgeglm {__version__}\nllama-cpp-python {llama_cpp.__version__}")
