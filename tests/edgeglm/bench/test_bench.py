"""The benchmark's numbers against direct measurements: honest or not at all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import HF_FIXTURES

from edgeglm.backends.isolated import run_isolated
from edgeglm.bench.compare import compare
from edgeglm.bench.measure import Measurement, measure_llamacpp
from edgeglm.bench.plot import to_svg
from edgeglm.bench.report import BenchReport, BenchRow, Spread, pareto_front
from edgeglm.bench.run import BenchRequest, run_bench
from edgeglm.metrics import log_softmax


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEGLM_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> BenchReport:
    request = BenchRequest(
        models=(str(HF_FIXTURES / "glm4"),),
        quants=("Q8_0", "Q4_K_M"),
        repeat=2,
        prompt_tokens=128,
        decode_tokens=32,
    )
    # module-scoped, so the per-test cache fixture cannot help; restore afterwards
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEGLM_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        return run_bench(request)


def test_report_has_every_figure(report: BenchReport) -> None:
    assert [r.quant for r in report.rows] == ["F32", "Q8_0", "Q4_K_M"]
    ref, q8, q4 = report.rows
    assert ref.reference and ref.kl_mean is None
    for r in (q8, q4):
        assert r.kl_mean is not None and r.kl_p99 is not None and r.top1 is not None
        assert (
            len(r.decode_tps.runs) == 2
            and r.decode_tps.min <= r.decode_tps.median <= r.decode_tps.max
        )
        assert r.peak_rss_bytes > 0 and r.load_s > 0 and r.ttft_s.median > 0
        assert r.vram_bytes in (None, 0)  # measured through NVML; no NVIDIA GPU on this machine
    assert q8.kl_mean is not None and q4.kl_mean is not None
    assert q8.kl_mean < q4.kl_mean  # more bits, closer to the reference
    assert report.fingerprint["llama_cpp_python"] and report.fingerprint["cpu"]
    assert report.schema_version == 4 and report.settings["repeat"] == 2
    assert q8.reference_label == q4.reference_label == ref.label  # one reference, named
    for r in report.rows:
        s = r.decode_tps
        assert s.q1 is not None and s.q3 is not None and s.min <= s.q1 <= s.median <= s.q3
        assert s.iqr == pytest.approx(s.q3 - s.q1)


def test_kl_equals_a_direct_numpy_computation_from_saved_logits(
    report: BenchReport, tmp_path: Path
) -> None:
    """Score both artifacts independently (as `edgeglm score` does, with the
    launch spec bench measured them with) and recompute KL by hand."""
    from edgeglm.artifacts import ensure_gguf
    from edgeglm.backends.llamacpp import LlamaCppModel
    from edgeglm.bench.run import bench_spec

    text = (Path(__file__).parents[3] / "edgeglm" / "bench" / "heldout.txt").read_text()
    logits = {}
    for q in ("F32", "Q4_K_M"):
        ran = next(r.launch for r in report.rows if r.quant == q)
        assert ran is not None
        spec = bench_spec(ensure_gguf(HF_FIXTURES / "glm4", q), "auto", ran["n_threads"])
        m = LlamaCppModel.from_spec(spec.with_(n_ctx=1024 + 8), logits_all=True)
        tokens = m.tokenize(text)[:1024]
        np.savez(tmp_path / f"{q}.npz", logits=m.score(tokens))
        m.close()
        logits[q] = np.load(tmp_path / f"{q}.npz")["logits"].astype(np.float64)
    p, q = logits["F32"], logits["Q4_K_M"]
    p = np.exp(p - p.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    q = np.exp(q - q.max(-1, keepdims=True))
    q /= q.sum(-1, keepdims=True)
    direct = float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=-1)))
    assert report.rows[2].kl_mean == pytest.approx(direct, rel=1e-6)
    assert log_softmax(np.zeros((1, 4)))[0, 0] == pytest.approx(-np.log(4))


def test_measurement_comes_back_typed_from_the_child_process() -> None:
    from edgeglm.artifacts import ensure_gguf

    gguf = str(ensure_gguf(HF_FIXTURES / "glm4", "Q8_0"))
    prompt = list(range(100, 164))
    m = run_isolated(measure_llamacpp, gguf, prompt, prompt[:32], 2, 1, 8)
    assert isinstance(m, Measurement)
    assert len(m.ttft_s) == len(m.prefill_tps) == len(m.decode_tps) == 2  # one per repeat
    assert m.logits.shape[0] == 32 and m.logits.dtype == np.float32
    assert m.peak_rss_bytes > 0 and m.device


def _row(label: str, tps: float, kl: float | None) -> BenchRow:
    s = Spread.of([tps])
    return BenchRow(
        label,
        "m",
        label,
        "llama.cpp",
        "cpu",
        1,
        4.0,
        0.1,
        s,
        s,
        s,
        1,
        kl_mean=kl,
        reference=kl is None,
    )


def test_pareto_front() -> None:
    rows = [_row("ref", 10, None), _row("a", 20, 0.01), _row("b", 15, 0.02), _row("c", 30, 0.1)]
    assert [r.label for r in pareto_front(rows)] == ["ref", "a", "c"]  # b is beaten by a on both


def test_exports_and_compare(report: BenchReport, tmp_path: Path) -> None:
    (tmp_path / "r.json").write_text(report.to_json())
    again = BenchReport.load(tmp_path / "r.json")
    assert again.to_dict() == report.to_dict()
    assert report.to_csv().splitlines()[0].startswith("label,model,quant")
    assert report.to_markdown().count("\n|") >= 4
    svg = to_svg(report)
    assert svg.startswith("<svg") and "glm4 Q4_K_M" in svg
    assert "reference (KL 0)" in svg and "0 (ref)" in svg  # the reference's own band
    result = compare([report, again], ["dev1", "dev2"])
    row = next(e for e in result["rows"] if e["artifact"].endswith("Q4_K_M"))
    assert row["dev2"]["decode_vs_first"] == pytest.approx(1.0)


def test_onnx_runtime_artifacts_are_benchmarked_against_the_same_reference() -> None:
    """Both backends asked: the F32 GGUF is the one reference of every row,
    ONNX included; only ONNX asked: ONNX Runtime's own fp32 export is."""
    both = BenchRequest(
        models=(str(HF_FIXTURES / "glm4"),),
        quants=("Q8_0", "int4"),
        backends=("llama.cpp", "onnx"),
        repeat=1,
        prompt_tokens=64,
        decode_tokens=16,
    )
    rep = run_bench(both)
    ref, q8, onnx = rep.rows
    assert ref.backend == "llama.cpp" and ref.quant == "F32" and ref.reference
    assert [r.reference for r in rep.rows] == [True, False, False]
    assert q8.reference_label == onnx.reference_label == ref.label
    assert onnx.backend == "onnx" and onnx.device == "cpu"
    assert onnx.provider == "CPUExecutionProvider"  # the session's own word (the plan's here)
    assert onnx.kl_mean is not None and onnx.kl_mean > 0 and onnx.decode_tps.median > 0
    assert onnx.bytes_per_token is None  # no roofline figure we could not compute honestly
    assert onnx.bits_per_weight == pytest.approx(5.55, abs=0.01)  # what convert reports
    only_onnx = BenchRequest(
        models=(str(HF_FIXTURES / "glm4"),),
        quants=("int4",),
        backends=("onnx",),
        repeat=1,
        prompt_tokens=64,
        decode_tokens=16,
    )
    ref, int4 = run_bench(only_onnx).rows
    assert (ref.backend, ref.quant, ref.reference) == ("onnx", "fp32", True)
    assert ref.bits_per_weight == pytest.approx(32.0)
    assert int4.reference_label == ref.label
    # the same weights, two exact implementations: the two references agree
    assert int4.kl_mean == pytest.approx(onnx.kl_mean, rel=0.01)


def test_timings_enclose_exactly_the_work_they_report(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the llama.cpp measurement against a clock that advances one tick per
    token llama.cpp evaluates. Every rate then comes out as exactly 1 token per
    tick if, and only if, each timed span holds exactly the tokens it claims:
    the prompt for prefill, ``decode_tokens`` single-token steps for decode,
    nothing from warm-up, loading or scoring. Deterministic, unlike a speed."""
    import time

    import llama_cpp

    from edgeglm.artifacts import ensure_gguf

    gguf = str(ensure_gguf(HF_FIXTURES / "glm4", "Q8_0"))
    ticks = 0
    real_eval = llama_cpp.Llama.eval

    def counting_eval(self: llama_cpp.Llama, tokens: list[int]) -> None:
        nonlocal ticks
        ticks += len(tokens)
        real_eval(self, tokens)

    monkeypatch.setattr(llama_cpp.Llama, "eval", counting_eval)
    monkeypatch.setattr(time, "perf_counter", lambda: float(ticks))
    prompt = list(range(100, 148))
    m = measure_llamacpp(gguf, prompt, prompt[:16], 3, 1, decode_tokens=10)
    assert m.prefill_tps == [1.0, 1.0, 1.0]  # len(prompt) tokens in len(prompt) ticks
    assert m.decode_tps == [1.0, 1.0, 1.0]  # 10 steps, one token each
    assert m.ttft_s == [len(prompt)] * 3  # the first token costs exactly the prompt
    assert m.load_s == 0.0  # loading evaluates nothing
    assert m.logits.shape[0] == 16
