"""Which packages may import which, checked in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys


def _loaded(code: str, packages: tuple[str, ...]) -> list[str]:
    """Modules of ``packages`` that running ``code`` imports."""
    report = (
        f"\nimport sys\nbad = {packages!r}\n"
        "print(sorted(m for m in sys.modules if any(m == b or m.startswith(b + '.') for b in bad)))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code + report], capture_output=True, text=True, cwd="/", check=True
    )
    return list(ast.literal_eval(r.stdout))


def test_core_and_converters_do_not_import_textual() -> None:
    code = (
        "import edgeglm.cli, edgeglm.demo, edgeglm.converters.gguf.convert\n"
        "edgeglm.cli._register()\n"
        "from edgeglm.converters.gguf.registry import supported_architectures\n"
        "supported_architectures()"
    )
    assert _loaded(code, ("textual",)) == []


def test_hardware_depends_on_no_planner_bench_or_textual() -> None:
    """The planner, bench and TUI build on edgeglm.hardware, never the reverse."""
    code = (
        "import importlib, pkgutil, edgeglm.hardware as hw\n"
        "for m in pkgutil.iter_modules(hw.__path__):\n"
        "    importlib.import_module(f'edgeglm.hardware.{m.name}')\n"
        "hw.probe(bandwidth=False)"
    )
    bad = ("edgeglm.planner", "edgeglm.bench", "edgeglm.tui", "textual")
    assert _loaded(code, bad) == []
    assert _loaded("import edgeglm.planner.planner", bad)  # the check can see them
