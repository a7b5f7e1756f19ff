"""README.md's Scale table is what scripts/scale_table.py computes today (never stale)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "scripts"))
from scale_table import BEGIN, END, README, render, table


def test_readme_scale_table_is_current() -> None:
    text = README.read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert render(text) == text, "README.md is stale: run python scripts/scale_table.py"


def test_table_covers_both_models_quants_and_node_sizes() -> None:
    rows = [ln for ln in table().splitlines()[2:]]
    assert len(rows) == 2 * 3 * 2
    for needle in ("GLM-4.5 (355B)", "GLM-5.x (744B)", "Q4_K_M", "Q2_K", "IQ1_M", "64GB", "128GB"):
        assert any(needle in r for r in rows), needle
