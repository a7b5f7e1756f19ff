"""Every command's --help, as a new user reads it at 80 columns: no ``<bool>``
placeholder after a flag, no description cut mid-sentence, and ``bench
compare --help`` about compare."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from helpers import edgeglm

from edgeglm.cli import _register, app


def _commands() -> dict[str, Any]:
    """Every command as click builds it, ``bench compare`` included."""
    from edgeglm.cli.bench import _compare_app

    _register()
    group: Any = typer.main.get_command(app)
    out = {name: group.commands[name] for name in group.commands}
    out["bench compare"] = typer.main.get_command(_compare_app)
    return out


COMMANDS = sorted(_commands())


@pytest.mark.parametrize("name", ["", *COMMANDS])
def test_help_at_80_columns_has_no_bool_placeholder(
    name: str, tmp_path: Path, env: dict[str, str]
) -> None:
    r = edgeglm(*name.split(), "--help", cwd=tmp_path, env={**env, "COLUMNS": "80"})
    assert r.returncode == 0, r.stderr
    assert "<bool>" not in r.stdout
    assert all(len(line) <= 80 for line in r.stdout.splitlines())


@pytest.mark.parametrize("name", COMMANDS)
def test_descriptions_are_whole_sentences(name: str) -> None:
    """A command's summary is one line (the command list keeps a docstring's
    line breaks), and every description ends a sentence."""
    cmd = _commands()[name]
    summary = (cmd.help or "").split("\n\n")[0].strip()
    assert summary and "\n" not in summary and summary.endswith("."), (name, summary)
    for param in cmd.params:
        text = (getattr(param, "help", None) or "").strip()
        assert text, (name, param.name)  # every option and argument says what it is
        assert text.endswith((".", ".)")), (name, param.name, text)


def test_the_top_level_list_shows_each_summary_on_its_own(
    tmp_path: Path, env: dict[str, str]
) -> None:
    r = edgeglm("--help", cwd=tmp_path, env={**env, "COLUMNS": "80"})
    for line in r.stdout.splitlines():
        # a continuation line never starts with a lower-case word after a full stop was due
        assert not line.rstrip(" │").endswith(","), line
