"""bench measures with the launch spec, records what ran, and reads the roofline
against the memory each weight was read from. Real llama.cpp and the real CLI;
no GPU needed (the split arithmetic is pure computation on a real GGUF)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import FIXTURES, HF_FIXTURES, edgeglm

from edgeglm.bench.report import BenchReport
from edgeglm.bench.roofline import WeightReads, roofline, weight_reads
from edgeglm.bench.run import BenchRequest, bench_spec, run_bench
from edgeglm.converters.gguf.convert import convert
from edgeglm.errors import ExitCode, UsageError
from edgeglm.gguf_file import read_gguf
from edgeglm.hardware.profile import load_profile
from edgeglm.planner.launch import LaunchSpec
from edgeglm.planner.planner import make_plan
from edgeglm.planner.sources import open_model
from edgeglm.runtime import planned_spec

AIR = FIXTURES / "configs" / "glm-4.5-air.json"
RTX4090 = FIXTURES / "hardware" / "desktop-rtx4090-24gb.json"
# The spec's fields the measurement itself sizes: the context (prompt + decode),
# and the batch sizes llama.cpp caps at that context. The planned thread count
# also follows the other programs' load at probe time, so two probes may differ.
SIZED = ("n_ctx", "n_batch", "n_ubatch", "n_threads")


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory: pytest.TempPathFactory) -> BenchReport:
    """The demo model benchmarked with --device cpu: one repeat, few tokens."""
    request = BenchRequest(
        quants=("Q4_K_M",), repeat=1, prompt_tokens=64, decode_tokens=8, device="cpu"
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGEGLM_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        return run_bench(request)


# -- what ran is what the report says --------------------------------------------


def test_a_cpu_run_records_the_spec_it_ran_with(demo_report: BenchReport) -> None:
    assert demo_report.schema_version == 4 and demo_report.settings["device"] == "cpu"
    assert [r.quant for r in demo_report.rows] == ["F32", "Q4_K_M"]
    for row in demo_report.rows:
        assert row.launch is not None and row.device == "cpu"
        ran = LaunchSpec.from_dict(row.launch)
        assert ran.n_gpu_layers == 0 and not ran.tensor_overrides and not ran.tensor_split
        assert ran.artifact is not None and ran.n_ctx == 64 + 8 + 8
        assert ran.n_threads is not None and ran.n_threads >= 1  # the count that ran
        # the plan's threads, KV types, flash attention: what `edgeglm run` would load
        planned = planned_spec(Path(ran.artifact))
        assert {k: v for k, v in row.launch.items() if k not in SIZED} == {
            k: v for k, v in planned.to_dict().items() if k not in (*SIZED, "schema_version")
        }
        # every weight read from RAM, divided by RAM's bandwidth (or no figure)
        assert row.bytes_per_token_gpu == 0
        assert (
            row.bytes_per_token
            == row.bytes_per_token_cpu
            == weight_reads(Path(ran.artifact), ran).cpu_bytes
        )
        # NVML per process; no NVIDIA GPU here: not measured, and said so
        assert row.vram_bytes is None and row.vram_model_bytes is None
        assert row.vram_planned_bytes == 0 and row.provider is None
        assert row.vram_note == (
            "not measured: no NVIDIA GPU or NVML here; planned: nothing planned on a GPU"
        )
        assert row.roofline_note is not None and row.roofline_note.startswith("cpu")
        if row.bandwidth_cpu_gbps is not None:
            assert row.decode_efficiency == pytest.approx(
                row.bytes_per_token * row.decode_tps.median / (row.bandwidth_cpu_gbps * 1e9)
            )
    # every export carries the spec
    md = demo_report.to_markdown()
    assert "-ngl 0" in md and "report schema 4" in md and "| – (– / 0) |" in md
    assert '"n_gpu_layers": 0' in demo_report.to_csv().replace('""', '"')


def test_auto_runs_the_plan_and_threads_override_it(moe_gguf: Path) -> None:
    from edgeglm.hardware import probe

    here = probe(bandwidth=False)
    assert bench_spec(moe_gguf, "auto", None, here) == planned_spec(moe_gguf, here)
    assert bench_spec(moe_gguf, "auto", 1, here).n_threads == 1
    # on a machine with a GPU the plan offloads; --device cpu keeps everything in RAM
    hw = load_profile(RTX4090)
    gpu_plan = bench_spec(moe_gguf, "auto", None, hw)
    assert gpu_plan.n_gpu_layers > 0
    cpu = bench_spec(moe_gguf, "cpu", None, hw)
    assert cpu.n_gpu_layers == 0 and not cpu.tensor_overrides and not cpu.tensor_split
    assert cpu.with_(n_gpu_layers=gpu_plan.n_gpu_layers) == gpu_plan.with_(tensor_overrides=())
    gpu = bench_spec(moe_gguf, "gpu", None, hw)
    n_block = read_gguf(moe_gguf).get("glm4moe.block_count")
    assert isinstance(n_block, int)
    assert gpu.n_gpu_layers == n_block + 1 and not gpu.tensor_overrides
    assert weight_reads(moe_gguf, gpu).placement == "gpu"


def test_device_gpu_without_gpu_offload_is_one_line_exit_2(
    tmp_path: Path, env: dict[str, str]
) -> None:
    from edgeglm.backends.llamacpp import gpu_count

    if gpu_count():
        pytest.skip("llama.cpp has a GPU device here")
    for args, message in (
        (["--device", "gpu"], "--device gpu: llama.cpp has no GPU device here"),
        (["--device", "tpu"], "--device 'tpu': choose one of auto, cpu, gpu"),
    ):
        r = edgeglm("bench", *args, "--repeat", "1", cwd=tmp_path, env=env)
        assert r.returncode == ExitCode.USAGE, r.stderr
        assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "cache").exists()  # refused before converting anything
    with pytest.raises(UsageError):
        BenchRequest(device="GPU")


# -- the split roofline, from the tensors the spec puts where ------------------------


def _expected(gguf: Path, spec: LaunchSpec) -> tuple[int, int]:
    """llama.cpp's placement, written out again by hand for this fixture: 2
    trunk blocks (0 dense, 1 MoE: 4 experts, 2 used), block 2 the NextN block
    (not loaded), an output.weight of its own (token_embd: one row a token)."""
    g = read_gguf(gguf)
    assert g.get("glm4moe.block_count") == 3 and g.get("glm4moe.nextn_predict_layers") == 1
    cpu = gpu = 0.0
    for t in g.tensors:
        if t.name == "token_embd.weight" or t.name.startswith("blk.2."):
            continue
        n = t.n_bytes * (2 / 4 if "_exps." in t.name else 1)
        first = next((o for o in spec.tensor_overrides if re.search(o.pattern, t.name)), None)
        if first is not None:
            on_gpu = first.device != "CPU"
        elif t.name.startswith("blk."):
            on_gpu = int(t.name.split(".")[1]) >= 3 + 1 - spec.n_gpu_layers
        else:
            on_gpu = spec.n_gpu_layers >= 1
        if on_gpu:
            gpu += n
        else:
            cpu += n
    return int(cpu), int(gpu)


def test_split_roofline_from_the_planned_moe_placement(moe_gguf: Path) -> None:
    hw = load_profile(RTX4090)
    spec = make_plan(open_model(str(AIR)), hw).launch_spec()
    assert spec is not None and spec.tensor_overrides and spec.n_gpu_layers == 48
    reads = weight_reads(moe_gguf, spec)
    # the plan keeps block 1's routed experts in RAM; everything else is offloaded
    exps_1 = sum(
        t.n_bytes for t in read_gguf(moe_gguf).tensors if re.match(r"blk\.1\.ffn_.*_exps\.", t.name)
    )
    assert exps_1 > 0 and reads.cpu_bytes == int(exps_1 * 2 / 4)
    assert (reads.cpu_bytes, reads.gpu_bytes) == _expected(moe_gguf, spec)
    assert reads.placement == "split"
    # every placement reads the same bytes, from different memories
    for ngl in (0, 1, 2, 3, 4):
        for overrides in ((), spec.tensor_overrides):
            s = spec.with_(n_gpu_layers=ngl, tensor_overrides=overrides)
            got = weight_reads(moe_gguf, s)
            assert (got.cpu_bytes, got.gpu_bytes) == _expected(moe_gguf, s)
            assert got.total == reads.total
    assert weight_reads(moe_gguf, spec.with_(n_gpu_layers=0, tensor_overrides=())).gpu_bytes == 0
    # time bound = bytes in RAM / RAM bandwidth + bytes in VRAM / VRAM bandwidth
    cpu_bw = hw.memory.bandwidth_gbps
    gpu_bw = hw.gpus[0].bandwidth_gbps
    assert cpu_bw == 68.0 and gpu_bw == 1008.0
    about = hw.gpus[0].bandwidth_source
    assert about is not None
    roof = roofline(reads, 50.0, cpu_bw * 1e9, gpu_bw * 1e9, about)
    bound = reads.cpu_bytes / 68e9 + reads.gpu_bytes / 1008e9
    assert roof.efficiency == pytest.approx(50.0 * bound)
    assert roof.note.startswith("split:") and "RAM at 68 GB/s" in roof.note
    assert "VRAM at 1008 GB/s (profile (spec sheet))" in roof.note


def test_no_bandwidth_no_figure() -> None:
    split = WeightReads(cpu_bytes=100, gpu_bytes=900)
    none = roofline(split, 10.0, 50e9, None, "the GPU's memory bandwidth is not known")
    assert none.efficiency is None and none.note == (
        "split: the GPU's memory bandwidth is not known"
    )
    cpu_only = roofline(WeightReads(1000, 0), 10.0, None, None, "no GPU")
    assert cpu_only.efficiency is None and cpu_only.note == "cpu: no measured RAM bandwidth"
    gpu_only = roofline(WeightReads(0, 1000), 10.0, None, 1e12, "nvml")  # RAM not needed
    assert gpu_only.efficiency == pytest.approx(10.0 * 1000 / 1e12)


def test_tied_output_reads_token_embd_where_the_output_layer_is(tmp_path: Path) -> None:
    """Without output.weight llama.cpp loads token_embd again as the output
    matrix, on the output layer's device: all of it is read every token."""
    import shutil

    from safetensors.numpy import load_file, save_file

    src = tmp_path / "tied"
    shutil.copytree(HF_FIXTURES / "glm4", src)
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": True}))
    weights = load_file(str(src / "model.safetensors"))
    del weights["lm_head.weight"]
    save_file(weights, str(src / "model.safetensors"))
    gguf = convert(src, tmp_path / "tied.gguf", "Q8_0").output
    sizes = {t.name: int(t.n_bytes) for t in read_gguf(gguf).tensors}
    assert "output.weight" not in sizes
    embd = sizes["token_embd.weight"]
    cpu = weight_reads(gguf, LaunchSpec(n_gpu_layers=0))
    assert cpu.cpu_bytes == sum(sizes.values())  # every weight, token_embd as the output
    out_only = weight_reads(gguf, LaunchSpec(n_gpu_layers=1))  # the output layer offloaded
    assert out_only.gpu_bytes == embd + sizes["output_norm.weight"]
    assert out_only.total == cpu.total


# -- older reports ---------------------------------------------------------------


def test_bench_compare_reads_schema_1_reports(
    demo_report: BenchReport, tmp_path: Path, env: dict[str, str]
) -> None:
    new = tmp_path / "new.json"
    new.write_text(demo_report.to_json())
    old_data = demo_report.to_dict()
    old_data["schema_version"] = 1
    v1_fields = (
        "launch",
        "bytes_per_token_cpu",
        "bytes_per_token_gpu",
        "bandwidth_cpu_gbps",
        "bandwidth_gpu_gbps",
        "roofline_note",
        "provider",
        "vram_model_bytes",
        "vram_planned_bytes",
        "vram_note",
    )
    for row in old_data["rows"]:
        for k in v1_fields:
            del row[k]
    del old_data["settings"]["device"], old_data["settings"]["hardware"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(old_data))
    loaded = BenchReport.load(old)
    assert loaded.schema_version == 1 and all(r.launch is None for r in loaded.rows)
    assert all(r.vram_planned_bytes is None and r.provider is None for r in loaded.rows)
    r = edgeglm("bench", "compare", str(old), str(new), "--json", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["rows"]
    assert [e["artifact"] for e in rows] == [row.label for row in demo_report.rows]
    assert all(e["old"] and e["new"]["device"] == "cpu" for e in rows)
    r = edgeglm("bench", "compare", str(old), str(new), cwd=tmp_path, env=env)
    assert r.returncode == 0 and "demo_model Q4_K_M" in r.stdout, r.stderr
    future = tmp_path / "future.json"
    future.write_text(json.dumps({**old_data, "schema_version": 99}))
    r = edgeglm("bench", "compare", str(future), cwd=tmp_path, env=env)
    assert r.returncode == ExitCode.USAGE and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "report schema 99" in r.stderr and "Traceback" not in r.stderr
