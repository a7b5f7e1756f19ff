"""The core and converters never import Textual (checked in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys


def test_core_and_converters_do_not_import_textual() -> None:
    code = (
        "import sys, edgeglm.cli, edgeglm.demo, edgeglm.converters.gguf.convert\n"
        "edgeglm.cli._register()\n"
        "from edgeglm.converters.gguf.registry import supported_architectures\n"
        "supported_architectures()\n"
        "print(sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.')))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True
    )
    assert r.stdout.strip() == "[]"


def test_hardware_depends_on_no_planner_bench_or_textual() -> None:
    """The planner, bench and TUI build on edgeglm.hardware, never the reverse."""
    code = (
        "import importlib, pkgutil, sys, edgeglm.hardware as hw\n"
        "for m in pkgutil.iter_modules(hw.__path__):\n"
        "    importlib.import_module(f'edgeglm.hardware.{m.name}')\n"
        "hw.probe(bandwidth=False)\n"
        "bad = ('edgeglm.planner', 'edgeglm.bench', 'edgeglm.tui', 'textual')\n"
        "print(sorted(m for m in sys.modules if any(m == b or m.startswith(b + '.') for b in bad)))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True
    )
    assert r.stdout.strip() == "[]"
