"""Open a model across workers (``--rpc``): pre-flight each worker, place
layers on them, and load in a child process that only the run depends on."""

from __future__ import annotations

from typing import Any

from edgeglm.backends.base import Backend
from edgeglm.errors import BackendError
from edgeglm.planner.launch import LaunchSpec
from edgeglm.rpc.endpoints import WorkerInfo
from edgeglm.rpc.probe import probe
from edgeglm.rpc.split import with_rpc_split

PREFLIGHT_TIMEOUT_S = 10.0
DIAGNOSE_TIMEOUT_S = 5.0


def device_names(workers: list[WorkerInfo]) -> list[list[str]]:
    """Each worker's devices as llama.cpp names them once all are registered:
    RPC0, RPC1, ... counted across the workers in ``--rpc`` order (what
    ``-ot``/``--device`` take, and the order ``tensor_split`` indexes them)."""
    out: list[list[str]] = []
    n = 0
    for w in workers:
        out.append([f"RPC{n + i}" for i in range(len(w.devices))])
        n += len(w.devices)
    return out


def lost_worker(endpoints: tuple[str, ...]) -> BackendError | None:
    """The first worker that no longer answers, as the error to report."""
    for endpoint in endpoints:
        try:
            probe(endpoint, timeout=DIAGNOSE_TIMEOUT_S, measure=False)
        except BackendError as e:
            return BackendError(f"{e}; the run across workers stopped")
    return None


def rpc_spec(spec: LaunchSpec) -> LaunchSpec:
    """``spec`` with its workers checked (bounded) and layers placed on them."""
    workers = [probe(ep, timeout=PREFLIGHT_TIMEOUT_S, measure=False) for ep in spec.rpc]
    return with_rpc_split(spec, workers)


def open_rpc(spec: LaunchSpec, **opts: Any) -> Backend:
    """``spec`` loaded with its workers, as ``LlamaCppModel.from_spec`` takes ``opts``."""
    from edgeglm.backends import child_model

    spec = rpc_spec(spec)
    if child_model.IN_CHILD:
        from edgeglm.backends.llamacpp import LlamaCppModel

        return LlamaCppModel.from_spec(spec, **opts)
    return child_model.ChildModel(spec, diagnose=lambda: lost_worker(spec.rpc), **opts)


def connect(endpoints: tuple[str, ...]) -> list[str]:
    """Register the workers with this process's ggml (after a bounded pre-flight:
    llama.cpp's own connect aborts on a bad worker); their device names."""
    from edgeglm.rpc import engine

    names: list[str] = []
    for endpoint in endpoints:
        probe(endpoint, timeout=PREFLIGHT_TIMEOUT_S, measure=False)
        names += engine.add_server(endpoint)
    return names
