"""Plans for real GLM shapes on the committed machine profiles must be sensible."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from helpers import FIXTURES, HF_FIXTURES

from edgeglm.errors import UsageError
from edgeglm.hardware import HardwareProfile
from edgeglm.planner import policy
from edgeglm.planner.placement import Placement
from edgeglm.planner.plan import PLAN_SCHEMA_VERSION, Plan
from edgeglm.planner.planner import make_plan
from edgeglm.planner.sources import open_model

PlanFor = Callable[..., Plan]
GiB = 1 << 30


def _ladder_rank(q: str) -> int:
    return policy.QUANT_LADDER.index(q)


def test_edge_1_5b_q4_fits_whole_on_the_8gb_laptop_gpu(plan_for: PlanFor) -> None:
    p = plan_for("glm-edge-1.5b-chat", "laptop-rtx4060-8gb", quant="Q4_K_M")
    assert p.fits and p.quant == "Q4_K_M"
    assert p.placement is not None and p.placement.strategy == "gpu_full"
    assert p.placement.n_gpu_layers == p.model["n_layer"] + 1  # every block and the output
    assert p.settings is not None and p.settings.n_ctx == 8192  # the trained context
    assert p.settings.flash_attn
    cpu, gpu = p.devices
    assert gpu.weights > 0.8 * GiB and cpu.weights < 0.2 * GiB  # only token embeddings stay
    assert gpu.weights > cpu.weights * 5
    # unconstrained, the planner spends the spare VRAM on quality
    assert plan_for("glm-edge-1.5b-chat", "laptop-rtx4060-8gb").quant == "Q8_0"


def test_air_on_24gb_gpu_keeps_attention_on_gpu_and_experts_in_ram(plan_for: PlanFor) -> None:
    p = plan_for("glm-4.5-air", "desktop-rtx4090-24gb")
    assert p.fits
    assert p.placement is not None and p.placement.strategy == "gpu_moe_split"
    assert p.placement.n_gpu_layers == 48  # 46 blocks + MTP block + output: all on the GPU
    n_moe = 45
    on_cpu = p.placement.cpu_expert_layers
    assert len(on_cpu) > n_moe // 2  # most routed experts live in RAM ...
    assert on_cpu == tuple(range(1, 1 + len(on_cpu)))  # ... the first blocks', like --n-cpu-moe
    (override,) = p.placement.tensor_overrides()
    assert override.endswith(r"\.ffn_(up|down|gate)_exps\.weight=CPU")
    cpu, gpu = p.devices
    assert cpu.weights > 2 * gpu.weights  # experts dominate RAM
    assert gpu.kv_cache > 0 and cpu.kv_cache == 0  # attention (and its cache) on the GPU
    assert p.quant == "Q4_K_M"  # the recipe's first choice for gpu-24gb
    assert p.recipe is not None and p.recipe["name"] == "glm-4.5-air"
    assert any("-ot" in w for w in p.warnings)  # llama-cpp-python cannot apply overrides


def test_experts_leave_the_gpu_before_attention_does(plan_for: PlanFor) -> None:
    """On an 8 GB card GLM-4.7-Flash keeps every block's attention on the GPU."""
    p = plan_for("glm-4.7-flash", "laptop-rtx4060-8gb")
    assert p.fits and p.placement is not None
    assert p.placement.strategy == "gpu_moe_split"
    assert p.placement.n_gpu_layers == p.model["n_layer"] + 2  # +MTP block +output
    assert p.model["mla"]


def test_glm45_on_the_pi_does_not_fit_and_says_what_would(plan_for: PlanFor) -> None:
    p = plan_for("glm-4.5", "raspberry-pi5-8gb")
    assert not p.fits
    assert p.placement is None and p.devices == []
    assert all(c.strategy is None for c in p.candidates)
    reason = p.reason("fit")
    assert reason is not None and "IQ1_M" in reason and "6.3 GiB" in reason
    text = " ".join(p.suggestions)
    assert "more memory" in text and "GiB" in text
    assert "glm-edge-1.5b" in text  # a model this class of machine can run
    assert p.to_dict()["fits"] is False


def test_cpu_server_runs_glm45_in_ram_at_4_bits_or_less(plan_for: PlanFor) -> None:
    p = plan_for("glm-4.5", "cpu-server-2x-epyc-256gb")
    assert p.fits and p.placement is not None
    assert p.placement.strategy == "cpu" and p.placement.n_gpu_layers == 0
    assert p.quant is not None and _ladder_rank(p.quant) >= _ladder_rank("Q4_K_M")
    assert p.n_threads == policy.MAX_THREADS  # 64 cores, capped
    assert p.devices[0].total < 240 * GiB
    assert p.decode_ceiling_tps is not None and p.decode_ceiling_tps > 10


def test_pi_runs_edge_models_with_a_fast_4bit_layout(plan_for: PlanFor) -> None:
    p = plan_for("glm-edge-1.5b-chat", "raspberry-pi5-8gb")
    assert p.fits and p.placement is not None and p.placement.strategy == "cpu"
    assert p.quant in ("Q4_0", "Q4_K_M")
    assert p.n_threads == 4


def test_dense_9b_on_8gb_gpu_stays_whole_by_shrinking_the_cache(plan_for: PlanFor) -> None:
    p = plan_for("glm-4-9b-0414", "laptop-rtx4060-8gb")
    assert p.fits and p.placement is not None
    assert p.placement.strategy == "gpu_full"
    assert p.settings is not None and p.settings.n_ctx >= policy.GOOD_CTX


def test_tight_memory_switches_the_kv_cache_to_q8_0(plan_for: PlanFor) -> None:
    roomy = plan_for("glm-4-9b-0414", "desktop-rtx4090-24gb", quant="Q4_K_M", ctx=32768)
    tight = plan_for("glm-4-9b-0414", "laptop-rtx4060-8gb", quant="Q4_K_M", ctx=32768)
    assert roomy.settings is not None and roomy.settings.type_k == "f16"
    assert tight.settings is not None and tight.settings.type_k == "q8_0"
    assert tight.settings.flash_attn  # quantized V needs it
    assert "f16 would not fit" in (tight.reason("kv_cache") or "")


def test_partial_offload_when_a_dense_model_overflows_vram(plan_for: PlanFor) -> None:
    p = plan_for("glm-4-9b-0414", "laptop-rtx4060-8gb", quant="Q8_0", ctx=8192)
    assert p.fits and p.placement is not None
    assert p.placement.strategy == "gpu_partial"
    assert 2 <= p.placement.n_gpu_layers <= p.model["n_layer"]
    assert p.devices[1].total <= p.hardware["gpus"][0]["usable_bytes"]


def test_two_gpus_split_layers_by_their_memory(plan_for: PlanFor) -> None:
    p = plan_for("glm-4.7-flash", "dual-rtx3090-48gb")
    assert p.fits and p.placement is not None
    assert p.placement.strategy == "gpu_full"
    assert p.placement.tensor_split == (22.6, 22.6)
    _, g0, g1 = p.devices
    assert g0.weights > 0 and g1.weights > 0
    assert "-ts" in p.llama_cpp_args()


def test_apple_unified_memory_runs_on_metal_within_its_working_set(plan_for: PlanFor) -> None:
    p = plan_for("glm-4-9b-0414", "apple-m2-16gb")
    assert p.fits and p.placement is not None and p.placement.strategy == "unified"
    assert p.total_bytes <= 16 * GiB * 2 / 3


def test_requested_context_is_kept_or_refused(plan_for: PlanFor) -> None:
    p = plan_for("glm-edge-1.5b-chat", "raspberry-pi5-8gb", ctx=2048)
    assert p.settings is not None and p.settings.n_ctx == 2048
    assert "requested" in (p.reason("context") or "")
    too_long = plan_for("glm-4-9b-0414", "raspberry-pi5-8gb", ctx=32768, quant="Q4_K_M")
    assert not too_long.fits
    assert any("shorter context" in s for s in too_long.suggestions)
    too_big = plan_for("glm-4-9b-0414", "raspberry-pi5-8gb", quant="Q5_K_M")
    assert not too_big.fits
    assert any("smaller quant: Q4_K_M" in s for s in too_big.suggestions)


def test_every_decision_has_a_reason_and_json_is_stable(plan_for: PlanFor) -> None:
    p = plan_for("glm-4.5-air", "dual-rtx3090-48gb")
    d = p.to_dict()
    assert d["schema_version"] == PLAN_SCHEMA_VERSION
    assert set(d) >= {
        "fits",
        "model",
        "hardware",
        "recipe",
        "backend",
        "artifact",
        "placement",
        "settings",
        "memory",
        "decisions",
        "candidates",
        "llama_cpp_args",
        "warnings",
        "suggestions",
    }
    whats = [x["what"] for x in d["decisions"]]
    assert whats == [
        "backend",
        "quant",
        "placement",
        "threads",
        "context",
        "kv_cache",
        "flash_attention",
        "batch",
    ]
    assert all(x["reason"] for x in d["decisions"])
    mem = d["memory"]
    assert mem["total_bytes"] == sum(dev["total_bytes"] for dev in mem["devices"])
    assert {"weights_bytes", "kv_cache_bytes", "compute_bytes"} <= set(mem["devices"][0])


def test_quant_option_is_for_checkpoints_only(plan_for: PlanFor) -> None:
    with pytest.raises(UsageError, match="unknown quant"):
        plan_for("glm-edge-1.5b-chat", "raspberry-pi5-8gb", quant="Q9_K")
    with pytest.raises(UsageError, match="256"):
        plan_for("glm-edge-1.5b-chat", "raspberry-pi5-8gb", ctx=16)


def test_plan_settings_translate_to_llama_cpp(plan_for: PlanFor) -> None:
    p = plan_for("glm-4-9b-0414", "laptop-rtx4060-8gb", quant="Q4_K_M", ctx=32768)
    spec = p.launch_spec()
    assert spec is not None
    assert spec.n_gpu_layers == 41 and spec.n_ctx == 32768 and spec.flash_attn is True
    assert spec.type_k == spec.type_v == "q8_0" and spec.type_k in policy.GGML_TYPE_IDS
    assert spec.artifact is None and spec.quant == "Q4_K_M"  # a config: still to convert
    args = p.llama_cpp_args()
    assert args == spec.llama_cpp_args()
    assert args[:4] == ["-c", "32768", "-ngl", "41"] and "-ctk" in args
    every = Placement("gpu_moe_split", 48, cpu_expert_layers=(1, 2, 3), all_experts_on_cpu=True)
    assert every.tensor_overrides() == [r"blk\.\d+\.ffn_(up|down|gate)_exps\.weight=CPU"]
    some = Placement("gpu_moe_split", 48, cpu_expert_layers=(1, 2))
    assert some.tensor_overrides() == [r"blk\.(1|2)\.ffn_(up|down|gate)_exps\.weight=CPU"]


def test_threads_leave_busy_cores_alone(
    profile: Callable[[str], HardwareProfile],
) -> None:
    busy = profile("cpu-server-2x-epyc-256gb")
    busy.cpu.busy_cores = 40.0
    p = make_plan(open_model(str(FIXTURES / "configs" / "glm-4.5.json")), busy)
    assert p.n_threads == 24 and "busy with other programs" in (p.reason("threads") or "")
    pi = make_plan(open_model(str(HF_FIXTURES / "glm4")), profile("raspberry-pi5-8gb"))
    assert pi.n_threads == 4 and "busy" not in (pi.reason("threads") or "")
