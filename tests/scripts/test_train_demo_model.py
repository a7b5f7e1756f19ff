"""scripts/train_demo_model.py's model card, without retraining: rendered
from what a training run leaves (eval.json, config.json, the samples) and the
figures bench measures, it is the shipped card, bench section included."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "scripts"))
from train_demo_model import BenchFigures, measure_bench, render_card

from edgeglm.models import default_model

BENCH_HEADING = "### Perplexity in `edgeglm bench`"


def shipped_card() -> str:
    return (default_model() / "README.md").read_text(encoding="utf-8")


def stated_figures(card: str) -> BenchFigures:
    """The two bench figures the card states."""
    demo = re.search(r"`demo_heldout.txt`, first 1,024 tokens \| F32 GGUF[^|]*\| ([\d.]+) \|", card)
    general = re.search(r"`heldout.txt`, English prose[^|]*\| F32 GGUF[^|]*\| ([\d,]+) \|", card)
    assert demo is not None and general is not None
    return BenchFigures(float(demo.group(1)), float(general.group(1).replace(",", "")))


def test_the_script_writes_the_shipped_card_with_its_bench_section() -> None:
    card = shipped_card()
    model = default_model()
    results = json.loads((model / "eval.json").read_text(encoding="utf-8"))
    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    # the samples are generated with transformers after training: taken from the card here
    samples = re.findall(
        r"\*\*User:\*\* (.*?)\n\n\*\*Assistant:\*\*\n\n```text\n(.*?)\n```", card, re.S
    )
    python = re.search(r"\(Python (\S+), parsed", card)
    assert len(samples) == 3 and python is not None
    rendered = render_card(
        results, config, samples, results["command"], stated_figures(card), python.group(1)
    )
    assert BENCH_HEADING in rendered
    assert "| `demo_heldout.txt`, first 1,024 tokens | F32 GGUF, llama.cpp" in rendered
    assert rendered == card


def test_the_cards_bench_figures_are_measured_by_bench(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the script measures after training, measured on the shipped model:
    the card's figures, to its rounding; the user's cache is left alone.

    llama.cpp's F32 sums run in a different order on other CPUs (AVX2, AVX-512, AMX
    kernels): the general-text perplexity, in the thousands, moves by ~1e-4 of itself
    between machines (3531.0 on the Xeon that wrote the card, 3531.5 on an EPYC)."""
    monkeypatch.delenv("EDGEGLM_CACHE_DIR", raising=False)
    measured = measure_bench(default_model())
    stated = stated_figures(shipped_card())
    assert measured.demo_text == pytest.approx(stated.demo_text, abs=0.05)
    assert measured.general_text == pytest.approx(stated.general_text, abs=0.5, rel=1e-3)
    assert "EDGEGLM_CACHE_DIR" not in os.environ
