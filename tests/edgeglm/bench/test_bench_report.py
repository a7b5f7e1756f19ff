"""Report schema 4: quartiles and the noise warning, older reports in ``bench
compare``, bits per weight of ONNX exports, round axis ticks, and the held-out
text the demo model is measured on."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from helpers import HF_FIXTURES, edgeglm

from edgeglm.bench.onnx_weights import onnx_weights
from edgeglm.bench.plot import to_svg
from edgeglm.bench.report import READABLE_SCHEMAS, BenchReport, BenchRow, Spread
from edgeglm.bench.rows import noise_warnings
from edgeglm.bench.ticks import linear_labels, linear_ticks, log_labels, log_ticks


def _row(label: str, decode: list[float], kl: float | None, reference: bool = False) -> BenchRow:
    s = Spread.of(decode)
    return BenchRow(
        label, "m", label, "llama.cpp", "cpu", 1, 4.0, 0.1, s, s, s, 1,
        kl_mean=kl, reference=reference,
    )  # fmt: skip


def test_the_interquartile_range_is_numpys_and_shrugs_off_one_disturbed_run() -> None:
    import numpy as np

    runs = [88.0, 87.1, 86.5, 3.0, 87.9]  # one run while another program had the cores
    s = Spread.of(runs)
    assert s.median == np.median(runs)
    assert (s.q1, s.q3) == tuple(np.percentile(runs, [25, 75]))
    assert s.iqr is not None and s.iqr < 0.02 * s.median and not s.noisy
    assert s.min == 3.0  # still recorded


def test_a_spread_wider_than_a_quarter_of_its_median_is_warned_about() -> None:
    quiet = _row("quiet", [100.0, 101.0, 99.0, 100.5, 100.2], None)
    busy = _row("busy", [87.6, 20.0, 600.0, 90.0, 300.0], None)
    assert noise_warnings(quiet, 5) == []
    warned = noise_warnings(busy, 5)
    assert len(warned) == 2  # decode and prefill (the same spread here)
    assert "busy: decode speed varied widely over 5 runs" in warned[0]
    assert "the median is reported" in warned[0].lower() and "--repeat" in warned[0]


def _as_schema_3(report: dict[str, Any]) -> dict[str, Any]:
    """What EdgeGLM wrote before schema 4: no quartiles, no reference labels, no warnings."""
    old: dict[str, Any] = json.loads(json.dumps(report))
    old["schema_version"] = 3
    del old["warnings"]
    for r in old["rows"]:
        for k in ("ttft_s", "prefill_tps", "decode_tps"):
            del r[k]["q1"], r[k]["q3"]
        del r["reference_label"], r["quality_note"]
    return old


def test_bench_compare_reads_every_schema(tmp_path: Path, env: dict[str, str]) -> None:
    rows = [
        _row("ref", [10.0, 11.0, 12.0], None, reference=True),
        _row("q4", [20.0, 22.0, 21.0, 23.0, 19.0], 0.01),
    ]
    rows[1].reference_label = "ref"
    new = BenchReport({"cpu": "x"}, {"repeat": 5}, rows)
    (tmp_path / "new.json").write_text(new.to_json())
    (tmp_path / "old.json").write_text(json.dumps(_as_schema_3(new.to_dict())))
    assert 3 in READABLE_SCHEMAS and 4 in READABLE_SCHEMAS
    old = BenchReport.load(tmp_path / "old.json")
    assert old.rows[1].decode_tps.iqr == new.rows[1].decode_tps.iqr  # from the runs
    r = edgeglm(
        "bench", "compare", str(tmp_path / "old.json"), str(tmp_path / "new.json"), "--json",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert {d["schema_version"] for d in result["devices"].values()} == {3, 4}
    q4 = next(e for e in result["rows"] if e["artifact"] == "q4")
    assert q4["new"]["decode_vs_first"] == pytest.approx(1.0)
    assert q4["old"]["decode_iqr"] == pytest.approx(2.0)
    table = edgeglm("bench", "compare", str(tmp_path / "old.json"), cwd=tmp_path, env=env)
    assert table.returncode == 0 and "(IQR 2.0)" in table.stdout and "ref" in table.stdout


def test_bench_compare_has_its_own_help(tmp_path: Path, env: dict[str, str]) -> None:
    r = edgeglm("bench", "compare", "--help", cwd=tmp_path, env={**env, "COLUMNS": "80"})
    assert r.returncode == 0
    assert "edgeglm bench compare [OPTIONS] {REPORT}..." in r.stdout
    assert "Compare benchmark reports" in r.stdout and "Measure latency" not in r.stdout
    missing = edgeglm("bench", "compare", cwd=tmp_path, env=env)
    assert missing.returncode == 2 and missing.stderr.startswith("error: ")


@pytest.mark.parametrize("quant", ["fp32", "fp16", "int8", "int4"])
def test_onnx_bits_per_weight_are_the_converters(quant: str, tmp_path: Path) -> None:
    """From the files alone (initializers, scales and zero points; not shape
    constants or rotary tables), the figure the converter computed from the
    checkpoint while writing them."""
    from edgeglm.converters.onnx import convert

    made = convert(HF_FIXTURES / "glm4", tmp_path / quant, quant)
    w = onnx_weights(made.output)
    assert w.parameters == made.parameters
    assert w.bits_per_weight == pytest.approx(made.bits_per_weight, rel=1e-9)


def _evenly_stepped(ticks: list[float]) -> float:
    steps = {round(b - a, 9) for a, b in itertools.pairwise(ticks)}
    assert len(steps) == 1, ticks
    step = steps.pop()
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert round(mantissa, 6) in (1.0, 2.0, 5.0), ticks  # 1, 2 or 5 times a power of ten
    return step


@pytest.mark.parametrize(
    ("lo", "hi"), [(0, 0.7), (0, 3.4), (0, 87.6), (0, 1150), (0.31, 0.42), (0, 0.0123)]
)
def test_linear_ticks_are_round_numbers_at_even_steps(lo: float, hi: float) -> None:
    ticks = linear_ticks(lo, hi)
    step = _evenly_stepped(ticks)
    assert ticks[0] <= lo and ticks[-1] >= hi and 3 <= len(ticks) <= 7
    assert all(abs(t / step - round(t / step)) < 1e-6 for t in ticks)  # multiples of the step
    labels = linear_labels(ticks)
    assert len(set(labels)) == len(labels) and "0.7" not in labels[1:]


@pytest.mark.parametrize(("lo", "hi"), [(1e-5, 0.3), (0.004, 0.4), (0.0046, 0.009)])
def test_log_ticks_are_decades_or_one_two_five(lo: float, hi: float) -> None:
    ticks = log_ticks(lo, hi)
    assert ticks[0] <= lo and ticks[-1] >= hi
    for t in ticks:
        m = t / 10 ** math.floor(math.log10(t) + 1e-9)
        assert round(m, 6) in (1.0, 2.0, 5.0)
    assert len(set(log_labels(ticks))) == len(ticks)


def test_the_svg_axes_carry_round_ticks_and_the_reference_its_own_band() -> None:
    rows = [
        _row("ref", [14.1], None, reference=True),
        _row("q8", [23.9], 0.004),
        _row("q4", [37.3], 0.31),
    ]
    svg = to_svg(BenchReport({}, {}, rows))
    x_labels = re.findall(r'y="\d+" text-anchor="middle">([\d.]+)</text>', svg)
    assert x_labels == ["0", "20", "40", "60", "80"]  # ms/token: 70.9 at most
    assert "0 (ref)" in svg and "reference (KL 0)" in svg
    assert "Pareto front" in svg  # ref, q8, q4 each win on one axis: a front of three


def test_the_demo_model_is_measured_on_its_own_held_out_text() -> None:
    """The bundled demo (and a GGUF converted from it) gets demo_heldout.txt;
    anything else the general text. The demo model's card states what that
    measures, so the two figures can be told apart."""
    from edgeglm.artifacts import resolve
    from edgeglm.bench.texts import DEMO_HELDOUT, HELDOUT, default_text
    from edgeglm.models import default_model

    assert default_text([resolve(None)]) == DEMO_HELDOUT
    assert default_text([resolve(str(HF_FIXTURES / "glm4"))]) == HELDOUT
    assert default_text([resolve(None), resolve(str(HF_FIXTURES / "glm4"))]) == HELDOUT
    card = (default_model() / "README.md").read_text(encoding="utf-8")
    assert "demo_heldout.txt" in card and "heldout.txt" in card


def test_the_demo_cards_bench_figure_is_what_bench_measures(
    tmp_path: Path, env: dict[str, str]
) -> None:
    from edgeglm.models import default_model

    card = (default_model() / "README.md").read_text(encoding="utf-8")
    stated = re.search(
        r"`demo_heldout.txt`, first 1,024 tokens \| F32 GGUF[^|]*\| ([\d.]+) \|", card
    )
    assert stated is not None
    r = edgeglm("bench", "--quants", "F32", "--repeat", "1", "--json", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    (row,) = report["rows"]
    assert Path(report["settings"]["text"]).name == "demo_heldout.txt"
    assert row["ppl"] == pytest.approx(float(stated.group(1)), abs=0.05)  # the card's rounding
