"""Several machines through llama.cpp's RPC backend: which layers go where, and what it costs.

The split follows llama.cpp's own rules (src/llama.cpp, src/llama-model.cpp):

- devices are ordered RPC first (in ``--rpc`` order, each worker's devices
  in its order, named ``RPC0``, ``RPC1``, ... by one counter across workers:
  ggml-rpc.cpp), then the local GPUs; the CPU is not in that list;
- ``n_gpu_layers = k`` puts the last k "layers" (blocks, then the output
  layer as one more) on those devices, the first blocks and the token
  embeddings stay on the local CPU;
- ``tensor_split`` gives each device a contiguous run of those k layers in
  device order: we pass the layer counts themselves, so the run each device
  gets is exactly the one planned.

So a hidden state walks local CPU -> RPC0 -> RPC1 -> ... -> local GPUs, and
the output layer sits on the last device that has layers. We give each
device layers in proportion to the memory it has free after its fixed costs
(compute buffer; the CPU also keeps the token table and the runtime).

Network per generated token, from how ggml's scheduler moves tensors
(ggml-backend.cpp: each split's inputs that live on another backend are
copied in; ggml-rpc.cpp: a copy to a worker is SET_TENSOR, from a worker
GET_TENSOR, and two workers never talk to each other: ``cpy_tensor`` only
works within one server, so ``ggml_backend_tensor_copy`` fetches to the
client and sends on):

- the hidden state (n_embd f32) at every boundary between machines, twice
  between two workers (down to the client, up to the next);
- the graph inputs every worker that runs attention needs: the KQ mask
  (n_kv cells, f16 with flash attention, f32 without; DSA models also the
  indexer's f32 mask), positions and the KV-cache row indices;
- the logits (n_vocab f32) when the output layer is on a worker;
- each message's framing (a serialized rpc_tensor per set or get).

A repeated decode graph is not sent again (RPC_CMD_GRAPH_RECOMPUTE, 13
bytes). Each fetch from a worker waits for its reply: one round trip per
fetch (sends are asynchronous). Checked on loopback against llama-server
with two RPC servers behind a byte-counting proxy: within 6 bytes per token
per worker (the fixture glm4 model, 64 tokens).
"""

from __future__ import annotations

import importlib
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edgeglm.errors import UsageError
from edgeglm.hardware import HardwareProfile
from edgeglm.planner import policy
from edgeglm.planner.launch import LaunchSpec
from edgeglm.planner.machine import Budget, budget
from edgeglm.planner.memory import (
    DeviceMemory,
    compute_buffer_bytes,
    host_buffer_bytes,
    kv_cache_bytes,
    padded_ctx,
    runtime_overhead_bytes,
)
from edgeglm.planner.model import ModelFacts
from edgeglm.planner.placement import Settings, gpu_label
from edgeglm.rpc.endpoints import WorkerInfo

if TYPE_CHECKING:
    from edgeglm.planner.sources import ModelSource

LOCAL = "local"
F32 = 4
# The graph inputs each worker's split needs besides the mask, per token:
# inp_pos (i32) and the K and V cache row indices (i64 each,
# llama-kv-cache.cpp); the output layer's device also gets inp_out_ids (i32).
SMALL_INPUTS = (4, 8, 8)
OUT_IDS_BYTES = 4
# ggml-rpc.cpp's messages: a command byte and a u64 size before each request,
# a u64 size before each reply; a tensor travels as a packed rpc_tensor.
RPC_TENSOR_BYTES = 296
SET_TENSOR_OVERHEAD = 1 + 8 + RPC_TENSOR_BYTES + 8  # + offset; then the data
GET_TENSOR_REQUEST = 1 + 8 + RPC_TENSOR_BYTES + 8 + 8  # offset, size
REPLY_OVERHEAD = 8
GRAPH_RECOMPUTE = 1 + 8 + 4  # a repeated decode graph: its device id only
COPY_TENSOR_REQUEST = 1 + 8 + 2 * RPC_TENSOR_BYTES
COPY_TENSOR_REPLY = 8 + 1


@dataclass(frozen=True)
class Link:
    """The client's link to one worker: bytes/s each way, and the round-trip time."""

    bandwidth: float
    rtt_s: float

    @classmethod
    def gbit(cls, gbit_s: float, rtt_ms: float) -> Link:
        return cls(gbit_s * 1e9 / 8, rtt_ms / 1e3)


@dataclass(frozen=True)
class Device:
    """One device that can hold layers, on this machine (host "local") or a worker."""

    name: str  # llama.cpp's: CPU, RPC0, ...; local GPUs as the planner labels them
    host: str  # "local" or the worker's HOST:PORT
    usable: int  # bytes a plan may use
    bandwidth_gbps: float | None  # memory bandwidth, for the decode ceiling

    @property
    def remote(self) -> bool:
        return self.host != LOCAL


@dataclass(frozen=True)
class Worker:
    endpoint: str
    devices: tuple[Device, ...]
    link: Link
    machine: str  # the profile's name, or "probed"


def worker_from_profile(endpoint: str, hw: HardwareProfile, link: Link, first_id: int) -> Worker:
    """A machine that is not here, described by a hardware profile: its
    rpc-server offers its GPUs, or its CPU (RAM) when it has none."""
    b = budget(hw)
    if b.gpus and not b.unified:
        parts = [(g.usable_bytes, g.bandwidth_gbps) for g in b.gpus]
    elif b.unified:
        parts = [(b.gpus[0].usable_bytes, b.gpus[0].bandwidth_gbps)]
    else:
        parts = [(b.ram_usable, b.cpu_bandwidth_gbps)]
    devices = tuple(
        Device(f"RPC{first_id + i}", endpoint, usable, bw) for i, (usable, bw) in enumerate(parts)
    )
    return Worker(endpoint, devices, link, hw.name or hw.source)


def worker_from_probe(info: WorkerInfo, link: Link, first_id: int) -> Worker:
    """A worker as ``edgeglm.rpc.probe`` saw it. A probe has no memory
    bandwidth: the ceiling then counts the network alone."""
    devices = tuple(
        Device(f"RPC{first_id + i}", info.endpoint, max(0, d.free - policy.GPU_MARGIN_BYTES), None)
        for i, d in enumerate(info.devices)
    )
    return Worker(info.endpoint, devices, link, "probed")


def local_devices(b: Budget) -> tuple[Device, list[Device]]:
    cpu = Device("CPU", LOCAL, b.ram_usable, b.cpu_bandwidth_gbps)
    gpus = [
        Device(gpu_label(i), LOCAL, g.usable_bytes, g.bandwidth_gbps) for i, g in enumerate(b.gpus)
    ]
    if b.unified:  # Apple: the GPU works in the same RAM; the CPU keeps what the GPU may not
        rest = max(b.ram_usable - b.vram_usable, 0)
        return Device("CPU", LOCAL, rest, b.cpu_bandwidth_gbps), gpus
    return cpu, gpus


# -- per-token network traffic ----------------------------------------------------


@dataclass(frozen=True)
class Traffic:
    """What one generated token moves over the network."""

    sent: int  # client -> workers, bytes
    received: int  # workers -> client, bytes
    round_trips: int
    seconds: float  # at the links' rates, round trips included
    by_host: dict[str, int] = field(default_factory=dict)  # worker -> bytes both ways

    @property
    def total(self) -> int:
        return self.sent + self.received


def mask_bytes(facts: ModelFacts, s: Settings) -> int:
    """The KQ mask one split needs per decoded token, at a full cache."""
    n_kv = padded_ctx(s.n_ctx)
    mask = n_kv * (2 if s.flash_attn else F32)
    if facts.indexer_heads:  # GLM-5 DSA: the indexer's own f32 mask
        mask += n_kv * F32
    return mask


def token_traffic(
    facts: ModelFacts, s: Settings, chain: list[Device], links: dict[str, Link]
) -> Traffic:
    """``chain``: the devices that run layers, in the order the hidden state
    visits them (the local CPU first: the token embeddings are read there).
    Every worker device is its own backend to the scheduler: each gets its
    own copy of the graph inputs."""
    hidden = facts.n_embd * F32
    sent = received = trips = 0
    secs = 0.0
    by_host: dict[str, int] = {}

    def move(host: str, up: int, down: int, wait: bool) -> None:
        nonlocal sent, received, secs, trips
        sent += up
        received += down
        by_host[host] = by_host.get(host, 0) + up + down
        secs += (up + down) / links[host].bandwidth
        if wait:
            trips += 1
            secs += links[host].rtt_s

    def set_tensor(host: str, n: int) -> None:
        move(host, SET_TENSOR_OVERHEAD + n, 0, wait=False)

    def get_tensor(host: str, n: int) -> None:
        move(host, GET_TENSOR_REQUEST, REPLY_OVERHEAD + n, wait=True)

    for d in chain:
        if d.remote:
            for n in (mask_bytes(facts, s), *SMALL_INPUTS):
                set_tensor(d.host, n)
            move(d.host, GRAPH_RECOMPUTE, 0, wait=False)
    for a, b in itertools.pairwise(chain):
        if a.host == b.host:
            if a.remote:  # COPY_TENSOR on the worker: no data, one reply
                move(a.host, COPY_TENSOR_REQUEST, COPY_TENSOR_REPLY, wait=True)
            continue
        if a.remote:
            get_tensor(a.host, hidden)
        if b.remote:
            set_tensor(b.host, hidden)
    if chain[-1].remote:  # the output layer is there: the logits come back
        set_tensor(chain[-1].host, OUT_IDS_BYTES)
        get_tensor(chain[-1].host, facts.n_vocab * F32)
    return Traffic(sent, received, trips, secs, by_host)


# -- the split ---------------------------------------------------------------------


@dataclass
class Share:
    """What one device holds under a cluster plan."""

    device: Device
    memory: DeviceMemory
    layers: range  # llama.cpp layer indices; n_layer_all is the output layer
    active_bytes: float  # weight bytes read per generated token

    @property
    def fits(self) -> bool:
        return self.memory.total <= self.device.usable

    def to_dict(self, n_layer_all: int) -> dict[str, Any]:
        blocks = [i for i in self.layers if i < n_layer_all]
        return {
            "device": self.device.name,
            "host": self.device.host,
            "usable_bytes": self.device.usable,
            "blocks": [blocks[0], blocks[-1]] if blocks else None,
            "output_layer": n_layer_all in self.layers,
            **self.memory.to_dict(),
            "active_bytes_per_token": int(self.active_bytes),
            "fits": self.fits,
        }


@dataclass
class ClusterPlan:
    quant: str | None
    settings: Settings
    shares: list[Share]
    workers: list[Worker]
    traffic: Traffic
    n_layer_all: int
    n_gpu_layers: int
    tensor_split: tuple[float, ...]
    more_machines: int = 0  # needed on top of these, each like ``like``
    like: str = ""
    like_usable: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return all(s.fits for s in self.shares)

    @property
    def rpc(self) -> tuple[str, ...]:
        return tuple(w.endpoint for w in self.workers)

    def memory_seconds(self) -> float | None:
        """Per token: each device streams its active weights at full bandwidth, in turn."""
        secs = 0.0
        for s in self.shares:
            if s.active_bytes <= 0:
                continue
            if not s.device.bandwidth_gbps:
                return None
            secs += s.active_bytes / (s.device.bandwidth_gbps * 1e9)
        return secs

    @property
    def decode_ceiling_tps(self) -> float | None:
        mem = self.memory_seconds()
        if mem is None:
            return None
        total = mem + self.traffic.seconds
        return 1.0 / total if total > 0 else None

    @property
    def network_ceiling_tps(self) -> float | None:
        return 1.0 / self.traffic.seconds if self.traffic.seconds > 0 else None

    def launch_spec(self, artifact: str | None) -> LaunchSpec:
        """What ``run --rpc`` loads: the workers, the offloaded layer count and
        the per-device layer counts, in llama.cpp's device order."""
        s = self.settings
        return LaunchSpec(
            artifact=artifact,
            quant=self.quant,
            n_gpu_layers=self.n_gpu_layers,
            tensor_split=self.tensor_split,
            rpc=self.rpc,
        ).with_settings(s)

    def machines(self) -> dict[str, list[Share]]:
        out: dict[str, list[Share]] = {}
        for s in self.shares:
            out.setdefault(s.device.host, []).append(s)
        return out

    def to_dict(self) -> dict[str, Any]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 2)

        mem = self.memory_seconds()
        return {
            "fits": self.fits,
            "quant": self.quant,
            "n_ctx": self.settings.n_ctx,
            "workers": [
                {
                    "endpoint": w.endpoint,
                    "machine": w.machine,
                    "devices": [d.name for d in w.devices],
                    "link_bytes_per_second": w.link.bandwidth,
                    "rtt_seconds": w.link.rtt_s,
                }
                for w in self.workers
            ],
            "devices": [s.to_dict(self.n_layer_all) for s in self.shares],
            "network_per_token": {
                "sent_bytes": self.traffic.sent,
                "received_bytes": self.traffic.received,
                "round_trips": self.traffic.round_trips,
                "seconds": self.traffic.seconds,
                "bytes_by_worker": self.traffic.by_host,
            },
            "memory_seconds_per_token": mem,
            "decode_tokens_per_second_ceiling": r(self.decode_ceiling_tps),
            "network_tokens_per_second_ceiling": r(self.network_ceiling_tps),
            "more_machines_needed": self.more_machines,
            "more_machines_like": self.like or None,
            "notes": self.notes,
        }


def _layer_bytes(facts: ModelFacts, s: Settings) -> tuple[list[int], list[float]]:
    """Memory and active bytes per llama.cpp layer (blocks, then the output layer)."""
    b, cats = facts.blocks, facts.bytes_by_category
    kv = _kv_per_layer(facts, s)
    use = facts.n_expert_used / facts.n_expert if facts.is_moe else 1.0
    mem = [b.total[i] + (kv if i < facts.n_layer else 0) for i in range(facts.n_layer_all)]
    active = [b.total[i] - b.experts[i] * (1 - use) for i in range(facts.n_layer_all)]
    # Tied embeddings: the output device loads its own copy of the token table.
    head = cats["output"] + (cats["token_embd"] if facts.tied_embeddings else 0)
    return [*mem, head], [*active, float(head)]


def _kv_per_layer(facts: ModelFacts, s: Settings) -> int:
    return kv_cache_bytes(facts, s.n_ctx, s.type_k, s.type_v) // max(facts.n_layer, 1)


def _fixed(facts: ModelFacts, s: Settings, d: Device, cpu_runs_layers: bool) -> int:
    """What a device costs before any layer: the compute graph (a worker's
    buffers are reserved at full size), and on the CPU the token table and runtime."""
    fa, ub = s.flash_attn, s.n_ubatch
    if d.name != "CPU":
        return compute_buffer_bytes(facts, s.n_ctx, flash_attn=fa, n_ubatch=ub)
    graph = (
        compute_buffer_bytes(facts, s.n_ctx, flash_attn=fa, n_ubatch=ub, resident=True)
        if cpu_runs_layers
        else host_buffer_bytes(facts, s.n_ctx, flash_attn=fa, n_ubatch=ub)
    )
    return facts.bytes_by_category["token_embd"] + runtime_overhead_bytes(facts) + graph


def split_layers(sizes: list[int], room: list[int]) -> list[int]:
    """Contiguous runs of layers, one per device in order, in proportion to
    each device's ``room``: a layer goes to the device whose share of the
    total holds the layer's midpoint. Where rounding to whole layers
    overfills a device, its edge layer moves to a neighbour with room
    (never the last layer onto the first device: the output layer is offloaded)."""
    room = [max(r, 0) for r in room]
    need = sum(sizes)
    total_room = sum(room) or 1
    bounds, acc = [], 0.0
    for r in room:
        acc += r * need / total_room
        bounds.append(acc)
    counts = [0] * len(room)
    at, dev = 0.0, 0
    for size in sizes:
        mid = at + size / 2
        while dev < len(room) - 1 and mid >= bounds[dev]:
            dev += 1
        counts[dev] += 1
        at += size
    _repair(sizes, room, counts)
    return counts


def _repair(sizes: list[int], room: list[int], counts: list[int]) -> None:
    def load(i: int) -> int:
        start = sum(counts[:i])
        return sum(sizes[start : start + counts[i]])

    def edge(i: int, last: bool) -> int:
        start = sum(counts[:i])
        return sizes[start + counts[i] - 1] if last else sizes[start]

    last = len(counts) - 1
    for i in range(last):  # forward: overflow spills to the next device
        while counts[i] and load(i) > room[i] and load(i + 1) + edge(i, True) <= room[i + 1]:
            counts[i] -= 1
            counts[i + 1] += 1
    for i in range(last, 0, -1):  # backward: ... or to the one before
        keep = int(i == 1 and not sum(counts[2:]))  # the output layer stays offloaded
        while (
            counts[i] > keep and load(i) > room[i] and load(i - 1) + edge(i, False) <= room[i - 1]
        ):
            counts[i] -= 1
            counts[i - 1] += 1


def plan_cluster(
    facts: ModelFacts,
    local: Budget,
    workers: list[Worker],
    s: Settings,
    *,
    like: Worker | None = None,
) -> ClusterPlan:
    """Split ``facts`` over this machine and ``workers``; ``like``: the machine
    a shortfall is counted in (default: the last worker)."""
    cpu, local_gpus = local_devices(local)
    offload = [d for w in workers for d in w.devices] + local_gpus  # llama.cpp's order
    order = [cpu, *offload]
    sizes, active = _layer_bytes(facts, s)
    room = [d.usable - _fixed(facts, s, d, True) for d in order]
    if not offload:
        room = [1]  # llama.cpp: no device, every layer on the CPU
    counts = split_layers(sizes, room) if offload else [len(sizes)]
    # the output layer is the last of the offloaded ones (llama.cpp), never the CPU's alone
    if offload and counts[0] == len(sizes):
        counts[0] -= 1
        counts[-1] += 1
    kv = _kv_per_layer(facts, s)
    shares, start = [], 0
    for d, n in zip(order, counts, strict=True):
        layers = range(start, start + n)
        start += n
        kv_bytes = sum(kv for i in layers if i < facts.n_layer)
        mem = DeviceMemory(
            d.name, weights=sum(sizes[i] for i in layers) - kv_bytes, kv_cache=kv_bytes
        )
        if d.name == "CPU":
            mem.weights += facts.bytes_by_category["token_embd"]
            mem.overhead = runtime_overhead_bytes(facts)
            mem.compute = (
                _fixed(facts, s, d, bool(n)) - facts.bytes_by_category["token_embd"] - mem.overhead
            )
        elif n:
            mem.compute = _fixed(facts, s, d, True)
        shares.append(Share(d, mem, layers, sum(active[i] for i in layers)))
    chain = [shares[0].device] + [sh.device for sh in shares[1:] if len(sh.layers)]
    links = {w.endpoint: w.link for w in workers}
    n_gpu_layers = len(sizes) - counts[0]
    split = tuple(float(c) for c in counts[1:]) if n_gpu_layers else ()
    plan = ClusterPlan(
        quant=facts.quant,
        settings=s,
        shares=shares,
        workers=workers,
        traffic=token_traffic(facts, s, chain, links),
        n_layer_all=facts.n_layer_all,
        n_gpu_layers=n_gpu_layers,
        tensor_split=split,
    )
    if not plan.fits:
        _shortfall(plan, facts, s, sizes, room, like or (workers[-1] if workers else None), local)
    return plan


def _shortfall(
    plan: ClusterPlan,
    facts: ModelFacts,
    s: Settings,
    sizes: list[int],
    room: list[int],
    like: Worker | None,
    local: Budget,
) -> None:
    """How many more machines like ``like`` the layers that do not fit need."""
    if like is not None:
        each = sum(d.usable - _fixed(facts, s, d, True) for d in like.devices)
        plan.like = like.machine
    else:
        each = local.ram_usable - compute_buffer_bytes(
            facts, s.n_ctx, flash_attn=s.flash_attn, n_ubatch=s.n_ubatch
        )
        plan.like = "this machine"
    plan.like_usable = max(each, 0)
    missing = sum(sizes) - sum(max(r, 0) for r in room)
    if each <= 0:
        plan.notes.append(f"a machine like {plan.like} has no room left after its compute buffer")
        plan.more_machines = -1
        return
    # A fresh worker never gets a layer smaller than a block: round up per machine.
    plan.more_machines = max(1, math.ceil(missing / each))


# -- from the command line -------------------------------------------------------

# Links of a plan on paper (no worker to measure): common gigabit Ethernet
# and a LAN round trip; --link-gbit / --rtt-ms change them.
DEFAULT_LINK_GBIT = 1.0
DEFAULT_RTT_MS = 0.3


def workers_for(
    endpoints: tuple[str, ...],
    profiles: list[HardwareProfile],
    link: Link | None,
    probe: Callable[[str], WorkerInfo] | None = None,
) -> list[Worker]:
    """Workers from profiles (one for all, or one each), else probed
    (``probe``: ``edgeglm.rpc.probe.probe``); ``link`` overrides what a probe measured."""
    if profiles and len(profiles) not in (1, len(endpoints)):
        raise UsageError(
            f"--rpc-hardware: {len(profiles)} profiles for {len(endpoints)} workers; "
            "give one for all of them or one each, in --rpc order"
        )
    out: list[Worker] = []
    next_id = 0
    for i, ep in enumerate(endpoints):
        if profiles:
            hw = profiles[i if len(profiles) > 1 else 0]
            w = worker_from_profile(
                ep, hw, link or Link.gbit(DEFAULT_LINK_GBIT, DEFAULT_RTT_MS), next_id
            )
        else:
            if probe is None:
                raise UsageError(
                    "--rpc without --rpc-hardware needs the workers probed, and no probe was given"
                )
            info = probe(ep)
            measured = Link(
                info.bandwidth or Link.gbit(DEFAULT_LINK_GBIT, 0).bandwidth,
                info.rtt_s if info.rtt_s is not None else DEFAULT_RTT_MS / 1e3,
            )
            w = worker_from_probe(info, link or measured, next_id)
        next_id += len(w.devices)
        out.append(w)
    return out


def default_probe() -> Callable[[str], WorkerInfo]:
    """The runtime's worker probe (edgeglm.rpc.probe), imported only when a plan needs it."""
    try:
        probe_mod = importlib.import_module("edgeglm.rpc.probe")
    except ModuleNotFoundError as e:
        if e.name != "edgeglm.rpc.probe":
            raise  # the probe is there but broken: not the user's mistake
        raise UsageError(
            "--rpc: this EdgeGLM cannot probe workers (no edgeglm.rpc.probe); "
            "plan on paper with --rpc-hardware PROFILE.json"
        ) from e
    fn: Callable[[str], WorkerInfo] = probe_mod.probe
    return fn


def cluster_settings(facts: ModelFacts, ctx: int | None) -> Settings:
    """llama.cpp's defaults (f16 KV, flash attention) at --ctx, else policy.MIN_CTX."""
    n_ctx = padded_ctx(ctx) if ctx is not None else policy.MIN_CTX
    if facts.n_ctx_train > 0:
        n_ctx = min(n_ctx, facts.n_ctx_train)
    return Settings(n_ctx=n_ctx, flash_attn=True)


def plan_model(
    source: ModelSource,
    hw: HardwareProfile,
    workers: list[Worker],
    *,
    ctx: int | None = None,
    quant: str | None = None,
) -> ClusterPlan:
    """The preferred quant (the recipe's, then the ladder's) that fits across
    the machines; when none does, the smallest, with how many more machines it needs."""
    from edgeglm.planner.planner import _candidates
    from edgeglm.planner.recipes import find_recipe, load_recipes

    b = budget(hw)
    probe_facts = source.facts(source.fixed_quant)
    match = find_recipe(probe_facts, load_recipes())
    rec = match.recipe.recommendation(b.hardware_class) if match else None
    if ctx is not None and 0 < probe_facts.n_ctx_train < ctx:
        raise UsageError(f"--ctx {ctx}: past the trained context of {probe_facts.n_ctx_train}")
    s = cluster_settings(probe_facts, ctx)
    plans = []
    for q, _ in _candidates(source, quant, rec.quants if rec else None):
        p = plan_cluster(source.facts(q), b, workers, s)
        if p.fits:
            return p
        plans.append(p)
    return min(plans, key=lambda p: sum(sh.memory.total for sh in p.shares))
