"""The ``edgeglm`` command. Only this package prints and exits: libraries raise
``EdgeGLMError`` subclasses, mapped here to documented exit codes. Data goes
to stdout, progress and diagnostics to stderr. Each command group lives in its
own module and registers itself on ``app``."""

from __future__ import annotations

import importlib
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup, TyperOption

from edgeglm.errors import EdgeGLMError, ExitCode

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def _error_line(message: str) -> None:
    # Messages quote paths and model text: "[...]" in them is not markup.
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)


def _untyped_flags(params: list[Any]) -> list[Any]:
    """Typer shows a type after every option, ``<bool>`` for a flag too,
    which reads as if the flag took a value: flags get an empty metavar
    (typer prints the metavar in place of the type)."""
    for p in params:
        if isinstance(p, TyperOption) and p.is_bool_flag and p.metavar is None:
            p.metavar = ""
    return params


class Command(TyperCommand):
    """Every ``edgeglm`` command: its flags shown without a type."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _untyped_flags(super().get_params(ctx))


class _OneLineErrors(TyperGroup):
    """Click's usage errors (a flag that does not parse, an unknown option or
    command) as one ``error:`` line with exit 2, like every other mistake,
    instead of a framed usage box."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        call = (args, prog_name, complete_var, False, windows_expand_args)
        if not standalone_mode:
            return super().main(*call, **extra)
        try:
            rv = super().main(*call, **extra)
        except typer.TyperException as e:  # typer's (vendored) click errors
            if type(e).__name__ == "NoArgsIsHelpError":  # `edgeglm` alone: the help
                sys.exit(int(ExitCode.USAGE))  # typer has printed it already
            ctx = getattr(e, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            _error_line(e.format_message() + hint)
            sys.exit(int(getattr(e, "exit_code", ExitCode.USAGE)))
        except typer.Abort:
            err.print("interrupted")
            sys.exit(int(ExitCode.INTERRUPTED))
        if rv == ExitCode.INTERRUPTED:  # typer turns Ctrl-C into this code
            err.print("interrupted")
        sys.exit(rv if isinstance(rv, int) else 0)

    def get_params(self, ctx: Any) -> list[Any]:
        return _untyped_flags(super().get_params(ctx))


app = typer.Typer(
    name="edgeglm",
    help="Convert, plan and run GLM-family models on local hardware.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_OneLineErrors,
)


def _version(value: bool) -> None:
    if value:
        from edgeglm import __version__

        out.print(f"edgeglm {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _top(
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_version, help="Print the version and exit."
    ),
) -> None:
    """Convert, plan and run GLM-family models on local hardware."""


def _fail(e: EdgeGLMError) -> NoReturn:
    _error_line(str(e))
    raise typer.Exit(int(e.exit_code))


def _sigterm_as_interrupt() -> None:
    """SIGTERM unwinds like Ctrl-C, so temp files are removed on the way out."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():  # only there can it be set
        signal.signal(signal.SIGTERM, handler)


def _register() -> None:
    """Command modules add themselves to ``app`` when imported, in help order."""
    for name in (
        "convert",
        "run",
        "serve",
        "bench",
        "tui",
        "demo",
        "plan",
        "pull",
        "store",
        "worker",
    ):
        importlib.import_module(f"edgeglm.cli.{name}")
    for info in app.registered_commands:  # typer's default class, unless one was chosen
        if info.cls in (None, TyperCommand):
            info.cls = Command


def main() -> None:
    _register()
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(int(ExitCode.INTERRUPTED))
