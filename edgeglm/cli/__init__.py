"""The ``edgeglm`` command. Only this package prints and exits: libraries raise
``EdgeGLMError`` subclasses, mapped here to documented exit codes. Data goes
to stdout, progress and diagnostics to stderr. Each command group lives in its
own module and registers itself on ``app``."""

from __future__ import annotations

import importlib
import signal
import sys
from typing import Any, NoReturn

import typer
from rich.console import Console

from edgeglm.errors import EdgeGLMError, ExitCode

app = typer.Typer(
    name="edgeglm",
    help="Convert, plan and run GLM-family models on local hardware.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def _fail(e: EdgeGLMError) -> NoReturn:
    err.print(f"[bold red]error:[/] {e}", highlight=False)
    raise typer.Exit(int(e.exit_code))


def _sigterm_as_interrupt() -> None:
    """SIGTERM unwinds like Ctrl-C, so temp files are removed on the way out."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _register() -> None:
    """Command modules add themselves to ``app`` when imported, in help order."""
    for name in ("convert", "run", "bench", "tui", "demo", "plan"):
        importlib.import_module(f"edgeglm.cli.{name}")


def main() -> None:
    _register()
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(int(ExitCode.INTERRUPTED))
