"""The split over this machine and llama.cpp RPC workers: shares, shortfall, network, launch spec.

Workers are described by committed hardware profiles (a plan on paper) or by
WorkerInfo values as a probe returns them; a run against real ``edgeglm
worker`` processes is in tests/edgeglm/test_cli_plan_rpc.py.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import replace
from functools import cache

import pytest
from helpers import FIXTURES

from edgeglm.errors import UsageError
from edgeglm.hardware import HardwareProfile, load_profile
from edgeglm.planner.cluster import (
    ClusterPlan,
    Link,
    Worker,
    cluster_settings,
    plan_cluster,
    split_layers,
    worker_from_probe,
    worker_from_profile,
    workers_for,
)
from edgeglm.planner.machine import budget
from edgeglm.planner.model import ModelFacts
from edgeglm.planner.placement import Settings
from edgeglm.planner.sources import open_model
from edgeglm.rpc.endpoints import RpcDevice, WorkerInfo

PROFILES = FIXTURES / "hardware"
CONFIGS = FIXTURES / "configs"
GiB = 1 << 30
LAN = Link.gbit(10, 0.2)


def _hw(name: str) -> HardwareProfile:
    return load_profile(PROFILES / f"{name}.json")


@cache
def _facts(model: str, quant: str) -> ModelFacts:
    return open_model(str(CONFIGS / f"{model}.json")).facts(quant)


def _workers(*names: str, link: Link = LAN) -> list[Worker]:
    out: list[Worker] = []
    for i, name in enumerate(names):
        out.append(worker_from_profile(f"10.0.0.{i + 2}:50052", _hw(name), link, len(out)))
    return out


def _plan(model: str, quant: str, local: str, *workers: str) -> ClusterPlan:
    facts = _facts(model, quant)
    return plan_cluster(
        facts, budget(_hw(local)), _workers(*workers), cluster_settings(facts, None)
    )


def _llama_cpp_devices(plan: ClusterPlan) -> list[list[int]]:
    """Which layers llama.cpp gives each offload device for the plan's
    n_gpu_layers and tensor_split (src/llama-model.cpp: cumulative split
    fractions, layer il to the first device whose fraction exceeds
    (il - i_gpu_start) / n_gpu_layers); index 0: the CPU's layers."""
    n_items = plan.n_layer_all + 1
    ngl = plan.n_gpu_layers
    start = max(n_items - ngl, 0)
    ts = list(plan.tensor_split)
    total = sum(ts)
    cum, acc = [], 0.0
    for x in ts:
        acc += x
        cum.append(acc / total)
    out: list[list[int]] = [[] for _ in range(len(ts) + 1)]
    for il in range(n_items):
        if il < start:
            out[0].append(il)
        else:
            out[1 + bisect.bisect_right(cum, (il - start) / ngl)].append(il)
    return out


def test_split_follows_free_memory() -> None:
    # this 64 GB node, then a 128 GB and a 64 GB worker: the 128 GB one gets about twice the layers
    plan = _plan("glm-4.5", "Q2_K", "node-64gb", "node-128gb", "node-64gb")
    assert plan.fits
    _, big, small = plan.shares
    assert big.device.name == "RPC0" and small.device.name == "RPC1"
    for sh in plan.shares:  # each holds about its share of the free memory
        share = sh.memory.total / sum(s.memory.total for s in plan.shares)
        room = sh.device.usable / sum(s.device.usable for s in plan.shares)
        assert share == pytest.approx(room, abs=0.03)
    assert len(big.layers) > 1.8 * len(small.layers)
    # contiguous, in order, every layer once; the output layer on the last worker
    assert [i for sh in plan.shares for i in sh.layers] == list(range(plan.n_layer_all + 1))
    assert plan.n_layer_all in small.layers
    assert all(sh.fits for sh in plan.shares)


def test_split_layers_rounds_to_whole_layers() -> None:
    assert split_layers([10] * 10, [50, 50]) == [5, 5]
    assert split_layers([10] * 9, [60, 30]) == [6, 3]
    assert split_layers([10] * 6, [40, 25, 25]) == [3, 1, 2]  # midpoints of 60 over 90
    # shares of 60 bytes over rooms 40:39 are 30.4 and 29.6: three layers each
    assert split_layers([10, 10, 10, 10, 10, 10], [40, 39]) == [3, 3]
    assert split_layers([2, 2, 2, 30], [10, 40]) == [3, 1]


def test_launch_spec_gives_llama_cpp_the_same_split() -> None:
    plan = _plan("glm-4.5", "Q2_K", "desktop-rtx4090-24gb", "node-64gb", "node-128gb")
    spec = plan.launch_spec("/models/glm-4.5-Q2_K.gguf")
    assert spec.rpc == ("10.0.0.2:50052", "10.0.0.3:50052")
    assert (
        spec.n_gpu_layers == plan.n_gpu_layers == plan.n_layer_all + 1 - len(plan.shares[0].layers)
    )
    # llama.cpp's order: RPC0, RPC1, then the local GPU; the output layer on the local GPU
    assert [s.device.name for s in plan.shares] == ["CPU", "RPC0", "RPC1", "GPU0"]
    assert spec.tensor_split == tuple(float(len(s.layers)) for s in plan.shares[1:])
    assert _llama_cpp_devices(plan) == [list(s.layers) for s in plan.shares]
    args = spec.llama_cpp_args()
    assert args[args.index("--rpc") + 1] == "10.0.0.2:50052,10.0.0.3:50052"
    assert spec.n_ctx == plan.settings.n_ctx and spec.flash_attn
    again = type(spec).from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec


def test_a_model_too_big_says_how_many_more_machines() -> None:
    plan = _plan("glm-5", "Q4_K_M", "node-64gb", "node-64gb")
    assert not plan.fits
    assert plan.like == "node-64gb" and plan.more_machines >= 1
    n = plan.more_machines
    more = _plan("glm-5", "Q4_K_M", "node-64gb", *["node-64gb"] * (1 + n))
    assert more.fits
    fewer = _plan("glm-5", "Q4_K_M", "node-64gb", *["node-64gb"] * n)
    assert not fewer.fits  # the count is the fewest that fit


def _expected_traffic(cfg: dict[str, int], n_ctx: int, remote_chain: int, logits: bool) -> int:
    """Bytes per token from config.json and ggml-rpc's message layout alone: a
    chain local -> w1 -> ... -> wN (-> local when the output layer is here)."""
    set_msg, get_msg = 1 + 8 + 296 + 8, 1 + 8 + 296 + 8 + 8 + 8  # + data; get: + the reply's size
    hidden = cfg["hidden_size"] * 4  # f32 hidden state
    mask = n_ctx * 2 + (n_ctx * 4 if cfg.get("index_n_heads") else 0)  # f16 mask, DSA's f32 one
    inputs = mask + 4 + 8 + 8 + 4 * set_msg + 13  # + positions, K/V row indices; recompute
    total = remote_chain * inputs + set_msg + hidden  # local -> w1
    total += (remote_chain - 1) * (get_msg + set_msg + 2 * hidden)  # w -> client -> next w
    if logits:
        total += set_msg + 4 + get_msg + cfg["vocab_size"] * 4  # out_ids, then the logits
    else:
        total += get_msg + hidden  # the last hidden state back to this machine's GPU
    return total


@pytest.mark.parametrize("model", ["glm-4.5", "glm-5"])
def test_network_bytes_per_token_from_the_model_shape(model: str) -> None:
    cfg = json.loads((CONFIGS / f"{model}.json").read_text())
    # CPU-only client: the output layer sits on the last worker, the logits come back
    plan = _plan(model, "IQ1_M", "node-64gb", "node-64gb", "node-128gb")
    assert plan.fits
    n_ctx = plan.settings.n_ctx
    assert plan.traffic.total == _expected_traffic(cfg, n_ctx, 2, logits=True)
    assert plan.traffic.round_trips == 2  # fetch from worker 1, the logits from worker 2
    # a GPU here takes the output layer: the last hidden state comes back instead
    gpu = _plan(model, "IQ1_M", "desktop-rtx4090-24gb", "node-128gb", "node-128gb")
    assert gpu.fits and gpu.shares[-1].device.name == "GPU0" and gpu.shares[-1].layers
    assert gpu.traffic.total == _expected_traffic(cfg, n_ctx, 2, logits=False)
    # time = bytes / link rate + round trips x RTT
    want = plan.traffic.total / LAN.bandwidth + plan.traffic.round_trips * LAN.rtt_s
    assert plan.traffic.seconds == pytest.approx(want)


def test_decode_ceiling_is_memory_plus_network() -> None:
    plan = _plan("glm-4.5", "Q2_K", "node-64gb", "node-64gb", "node-64gb")
    mem = sum(s.active_bytes / (s.device.bandwidth_gbps or 1) / 1e9 for s in plan.shares)
    assert plan.decode_ceiling_tps == pytest.approx(1 / (mem + plan.traffic.seconds))
    # all of it: the weights read per token are the model's active bytes
    facts = _facts("glm-4.5", "Q2_K")
    read = sum(s.active_bytes for s in plan.shares)
    assert read == pytest.approx(facts.active_bytes_per_token, rel=0.01)
    slow = plan_cluster(
        facts,
        budget(_hw("node-64gb")),
        _workers("node-64gb", "node-64gb", link=Link.gbit(1, 0.2)),
        plan.settings,
    )
    assert slow.traffic.total == plan.traffic.total
    assert slow.decode_ceiling_tps is not None and plan.decode_ceiling_tps is not None
    assert slow.decode_ceiling_tps < plan.decode_ceiling_tps


def test_probed_workers_split_by_their_free_memory() -> None:
    facts = _facts("glm-4.5", "IQ1_M")
    infos = [
        WorkerInfo("127.0.0.1:50052", (RpcDevice("CPU", "cpu", 40 * GiB, 64 * GiB),), 1e-4, 1e9),
        WorkerInfo("127.0.0.1:50053", (RpcDevice("CPU", "cpu", 20 * GiB, 64 * GiB),), 1e-4, 1e9),
    ]
    workers = workers_for(
        tuple(i.endpoint for i in infos), [], None, {i.endpoint: i for i in infos}.__getitem__
    )
    assert [w.devices[0].name for w in workers] == ["RPC0", "RPC1"]
    assert workers[0].link == Link(1e9, 1e-4)  # what the probe measured
    plan = plan_cluster(facts, budget(_hw("node-64gb")), workers, Settings(n_ctx=4096))
    _, a, b = plan.shares
    assert len(a.layers) > 1.5 * len(b.layers)
    assert plan.decode_ceiling_tps is None  # a probe knows no memory bandwidth ...
    assert plan.network_ceiling_tps is not None  # ... the network part is still known
    two = worker_from_probe(
        WorkerInfo(
            "h:1",
            (RpcDevice("CUDA0", "a", GiB * 8, GiB * 8), RpcDevice("CUDA1", "b", GiB * 8, GiB * 8)),
        ),
        LAN,
        5,
    )
    assert [d.name for d in two.devices] == ["RPC5", "RPC6"]


def test_profiles_must_match_the_workers() -> None:
    with pytest.raises(UsageError, match="2 profiles for 3 workers"):
        workers_for(("a:1", "b:1", "c:1"), [_hw("node-64gb")] * 2, None)
    ws = workers_for(("a:1", "b:1"), [_hw("node-64gb")], None)
    assert [w.machine for w in ws] == ["node-64gb", "node-64gb"]


def test_a_gpu_worker_offers_its_gpus() -> None:
    w = worker_from_profile("g:1", _hw("dual-rtx3090-48gb"), LAN, 0)
    assert [d.name for d in w.devices] == ["RPC0", "RPC1"]
    cpu_only = replace(_hw("node-64gb"))
    assert len(worker_from_profile("c:1", cpu_only, LAN, 0).devices) == 1
