"""Where layers go when ``--rpc`` names workers and nothing else placed them.

The planner decides (``edgeglm/planner/cluster.py``, as ``edgeglm plan
--rpc`` shows it): layers over this machine and the workers' devices in
proportion to the memory each has free, in llama.cpp's device order (RPC
first, in ``--rpc`` order, then local GPUs); ``n_gpu_layers`` counts the
output layer and the last blocks, ``tensor_split`` holds each device's layer
count. An ``-ngl`` or tensor split the user gave is kept as it is.
"""

from __future__ import annotations

from pathlib import Path

from edgeglm.errors import HardwareError
from edgeglm.planner.launch import LaunchSpec
from edgeglm.rpc.endpoints import WorkerInfo


def with_rpc_split(spec: LaunchSpec, workers: list[WorkerInfo]) -> LaunchSpec:
    """``spec`` with layers placed on the workers as the planner splits them
    (HardwareError when the model does not fit even across them)."""
    if not spec.rpc or spec.n_gpu_layers or spec.tensor_split or spec.artifact is None:
        return spec
    from edgeglm.hardware import probe as probe_hardware
    from edgeglm.planner.cluster import plan_cluster, workers_for
    from edgeglm.planner.machine import budget
    from edgeglm.planner.sources import open_model

    source = open_model(spec.artifact)
    seen = {w.endpoint: w for w in workers}  # already probed: not asked again
    machines = workers_for(spec.rpc, [], None, probe=seen.__getitem__)
    local = budget(probe_hardware(bandwidth=False))
    plan = plan_cluster(source.facts(source.fixed_quant), local, machines, spec.settings())
    if not plan.fits:
        more = (
            f": it needs {plan.more_machines} more machine(s) like {plan.like}"
            if plan.more_machines
            else ""
        )
        raise HardwareError(
            f"{Path(spec.artifact).name} does not fit on this machine and "
            f"{len(workers)} worker(s){more} (edgeglm plan --rpc shows the split)"
        )
    return spec.with_(n_gpu_layers=plan.n_gpu_layers, tensor_split=plan.tensor_split)
