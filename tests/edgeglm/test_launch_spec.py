"""The launch spec: what the plan prints is what loads, and every field reaches llama.cpp.

Real llama.cpp and the real CLI (in a subprocess); no GPU needed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import FIXTURES, HF_FIXTURES, edgeglm

from edgeglm.backends.llamacpp import LlamaCppModel, gpu_count, read_overrides
from edgeglm.errors import ExitCode, UsageError
from edgeglm.gguf_file import read_gguf
from edgeglm.planner.launch import (
    FFN_EXPS_REGEX,
    LaunchControls,
    LaunchSpec,
    TensorOverride,
    parse_overrides,
)

AIR = FIXTURES / "configs" / "glm-4.5-air.json"
RTX4090 = FIXTURES / "hardware" / "desktop-rtx4090-24gb.json"
OVERRIDDEN = re.compile(r"tensor (\S+) \(.*\) buffer type overridden to (\S+)")


def _expert_tensors(gguf: Path) -> set[str]:
    """Routed-expert weights llama.cpp loads (the MTP/NextN block after the last
    layer is skipped at load, so nothing of it is placed)."""
    n_layer = json.loads((HF_FIXTURES / "glm4_moe" / "config.json").read_text())[
        "num_hidden_layers"
    ]
    names = {t.name for t in read_gguf(gguf).tensors if "_exps." in t.name}
    return {n for n in names if int(n.split(".")[1]) < n_layer}


# -- the spec itself -----------------------------------------------------------


def test_spec_round_trips_and_flags_parse_as_llama_cpp_does() -> None:
    spec = LaunchSpec(
        artifact="m.gguf",
        quant="Q4_K_M",
        n_gpu_layers=48,
        tensor_split=(1.0, 3.0),
        tensor_overrides=(TensorOverride(r"blk\.\d+\.ffn_(up|down|gate)_exps", "CPU"),),
        n_threads=8,
        n_ctx=4096,
        type_k="q8_0",
        type_v="q8_0",
    )
    assert LaunchSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    args = spec.llama_cpp_args()
    assert args[:4] == ["-c", "4096", "-ngl", "48"]
    assert spec.on_gpu() and "--no-op-offload" not in args
    cpu_only = spec.with_(n_gpu_layers=0)
    assert not cpu_only.on_gpu() and "--no-op-offload" in cpu_only.llama_cpp_args()
    assert cpu_only.with_(tensor_overrides=(TensorOverride("exps", "CUDA0"),)).on_gpu()
    assert args[4:6] == ["-ot", r"blk\.\d+\.ffn_(up|down|gate)_exps=CPU"]
    # comma-separated and repeated, as common/arg.cpp splits them
    assert parse_overrides(["a=CPU,b=CUDA0", "c=CPU"]) == [
        TensorOverride("a", "CPU"),
        TensorOverride("b", "CUDA0"),
        TensorOverride("c", "CPU"),
    ]
    ctl = LaunchControls(override_tensor=("x=CPU",), cpu_moe=True, n_cpu_moe=2, n_gpu_layers=3)
    got = ctl.apply(spec)
    assert got.n_gpu_layers == 3
    assert [o.flag() for o in got.tensor_overrides] == [  # the plan's overrides are replaced
        "x=CPU",
        f"{FFN_EXPS_REGEX}=CPU",
        rf"blk\.0{FFN_EXPS_REGEX}=CPU",
        rf"blk\.1{FFN_EXPS_REGEX}=CPU",
    ]
    assert LaunchControls().apply(spec) is spec


def test_the_plans_settings_map_to_the_spec_and_back() -> None:
    """LaunchSpec.settings / with_settings: the one mapping between the planner's
    Settings and the spec's fields of the same names (plan.py and bench's VRAM
    estimate both use it)."""
    from edgeglm.planner.placement import Settings

    planned = Settings(8192, "q8_0", "q4_0", flash_attn=True, n_batch=1024, n_ubatch=256)
    spec = LaunchSpec(artifact="m.gguf", n_gpu_layers=10).with_settings(planned)
    assert (spec.n_ctx, spec.type_k, spec.n_batch) == (8192, "q8_0", 1024)
    assert spec.settings() == planned and spec.n_gpu_layers == 10


@pytest.mark.parametrize(
    "bad",
    [
        lambda: parse_overrides(["exps"]),
        lambda: parse_overrides(["exps="]),
        lambda: parse_overrides(["(=CPU"]),
        lambda: LaunchControls(n_cpu_moe=-1).check(),
        lambda: LaunchControls(n_gpu_layers=-2).check(),
        lambda: LaunchSpec(type_k="q5_9"),
        lambda: LaunchSpec(type_v="q8_0", flash_attn=False),
        lambda: LaunchSpec(n_batch=256, n_ubatch=512),
        lambda: LaunchSpec(n_threads=0),
    ],
)
def test_bad_values_are_refused(bad: object) -> None:
    with pytest.raises(UsageError):
        bad()  # type: ignore[operator]


# -- every field reaches llama.cpp ------------------------------------------------


def test_overrides_reach_llama_model_params(moe_gguf: Path) -> None:
    spec = LaunchSpec(
        artifact=str(moe_gguf),
        n_ctx=256,
        n_threads=2,
        n_batch=128,
        n_ubatch=64,
        type_k="q8_0",
        type_v="q8_0",
        tensor_overrides=(TensorOverride("exps", "CPU"), TensorOverride(r"blk\.0\.", "CPU")),
    )
    m = LlamaCppModel.from_spec(spec)
    try:
        assert m.tensor_overrides() == [("exps", "CPU"), (r"blk\.0\.", "CPU")]
        assert read_overrides(m.llm.model_params) == m.tensor_overrides()
        cp = m.llm.context_params
        assert (cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_threads) == (256, 128, 64, 2)
        assert (cp.type_k, cp.type_v) == (8, 8)  # GGML_TYPE_Q8_0
        assert m.llm.model_params.n_gpu_layers == 0
        assert not spec.on_gpu() and cp.op_offload is False  # the CPU alone, batches too
        assert m.settings["tensor_overrides"] == [
            {"pattern": "exps", "device": "CPU"},
            {"pattern": r"blk\.0\.", "device": "CPU"},
        ]
    finally:
        m.close()


def test_what_cannot_be_applied_is_refused(moe_gguf: Path) -> None:
    base = LaunchSpec(artifact=str(moe_gguf), n_ctx=256)
    with pytest.raises(UsageError, match=r"no device 'NOPE0' \(available: .*CPU"):
        LlamaCppModel.from_spec(base.with_(tensor_overrides=(TensorOverride("exps", "NOPE0"),)))
    if gpu_count() == 0:
        with pytest.raises(UsageError, match="no GPU device here"):
            LlamaCppModel.from_spec(base.with_(n_gpu_layers=4))
        with pytest.raises(UsageError, match="tensor_split"):
            LlamaCppModel.from_spec(base.with_(tensor_split=(1.0, 1.0)))
    with pytest.raises(UsageError, match="convert"):
        LlamaCppModel.from_spec(base.with_(artifact=None, quant="Q4_K_M"))


# -- the real CLI ---------------------------------------------------------------


def test_run_ot_exps_cpu_shows_in_llama_cpp_load_log(
    moe_gguf: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    r = edgeglm(
        "run", str(moe_gguf), "-p", "hi", "-n", "2", "-ot", "exps=CPU", "--verbose", "--json",
        cwd=tmp_path,
        env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    overridden = dict(OVERRIDDEN.findall(r.stderr))
    assert set(overridden) == _expert_tensors(moe_gguf) and overridden
    assert set(overridden.values()) == {"CPU"}
    settings = json.loads(r.stdout)["settings"]
    assert settings["tensor_overrides"] == [{"pattern": "exps", "device": "CPU"}]
    # --n-cpu-moe 2: only blocks 0 and 1 (llama.cpp's own pattern)
    r = edgeglm(
        "run", str(moe_gguf), "-p", "hi", "-n", "1", "--n-cpu-moe", "2", "--verbose",
        cwd=tmp_path,
        env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    names = set(dict(OVERRIDDEN.findall(r.stderr)))
    assert names and {n.split(".")[1] for n in names} <= {"0", "1"}
    assert names == {n for n in _expert_tensors(moe_gguf) if n.split(".")[1] in ("0", "1")}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["-ot", "exps=NOPE0"], "no device 'NOPE0'"),
        (["-ot", "exps"], "expected PATTERN=DEVICE"),
        (["--n-cpu-moe", "-1"], "--n-cpu-moe -1"),
    ],
)
def test_run_and_score_refuse_what_they_cannot_apply(
    moe_gguf: Path, tmp_path: Path, env: dict[str, str], flags: list[str], message: str
) -> None:
    text = tmp_path / "t.txt"
    text.write_text("hello there", encoding="utf-8")
    for cmd in (
        ["run", str(moe_gguf), "-p", "hi", "-n", "1"],
        ["score", str(moe_gguf), "--text", str(text), "-o", str(tmp_path / "o.npz")],
    ):
        r = edgeglm(*cmd, *flags, cwd=tmp_path, env=env)
        assert r.returncode == ExitCode.USAGE, r.stderr
        assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "o.npz").exists()


def test_dry_run_prints_exactly_the_plans_launch_spec(tmp_path: Path, env: dict[str, str]) -> None:
    hw = ["--hardware", str(RTX4090)]
    plan = edgeglm("plan", str(AIR), *hw, "--json", cwd=tmp_path, env=env)
    assert plan.returncode == 0, plan.stderr
    planned = json.loads(plan.stdout)
    launch = planned["launch"]
    assert planned["placement"]["strategy"] == "gpu_moe_split"
    # the MoE expert placement is in the spec, as (pattern, device) pairs
    assert launch["n_gpu_layers"] == planned["placement"]["n_gpu_layers"] > 0
    assert [f"{o['pattern']}={o['device']}" for o in launch["tensor_overrides"]] == planned[
        "placement"
    ]["tensor_overrides"]
    assert launch["tensor_overrides"] and launch["artifact"] is None
    assert LaunchSpec.from_dict(launch).llama_cpp_args() == planned["llama_cpp_args"]
    dry = edgeglm("run", str(AIR), *hw, "--dry-run", "--json", cwd=tmp_path, env=env)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout) == launch
    # llama.cpp's own flags override the plan's fields
    dry = edgeglm(
        "run", str(AIR), *hw, "--dry-run", "--json", "--cpu-moe", "-ngl", "7",
        cwd=tmp_path,
        env=env,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    got = json.loads(dry.stdout)
    assert got["n_gpu_layers"] == 7
    assert got["tensor_overrides"] == [{"pattern": FFN_EXPS_REGEX, "device": "CPU"}]
    assert {k: v for k, v in got.items() if k not in ("n_gpu_layers", "tensor_overrides")} == {
        k: v for k, v in launch.items() if k not in ("n_gpu_layers", "tensor_overrides")
    }
    # --hardware plans another machine: only for a dry run
    r = edgeglm("run", str(AIR), *hw, "-p", "hi", cwd=tmp_path, env=env)
    assert r.returncode == ExitCode.USAGE and "--dry-run" in r.stderr


def test_dry_run_of_a_gguf_is_what_run_loads(
    moe_gguf: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    dry = edgeglm(
        "run", str(moe_gguf), "--dry-run", "--json", "--ctx", "512", "-t", "1",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    spec = json.loads(dry.stdout)
    assert spec["artifact"] == str(moe_gguf) and spec["n_ctx"] == 512
    r = edgeglm(
        "run", str(moe_gguf), "-p", "hi", "-n", "1", "--ctx", "512", "-t", "1", "--json",
        cwd=tmp_path,
        env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    ran = json.loads(r.stdout)["settings"]
    # -t pins the one field the planner derives from the momentary load (the
    # cores other programs keep busy): everything else is planned alike.
    assert spec["n_threads"] == 1
    assert {k: ran[k] for k in spec if k != "schema_version"} == {
        k: v for k, v in spec.items() if k != "schema_version"
    }
