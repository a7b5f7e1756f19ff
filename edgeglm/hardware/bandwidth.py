"""Measured memory bandwidth, cached per machine.

Token generation reads every active weight once per token, so on a CPU the
decode speed ceiling is memory bandwidth / bytes per token. Spec sheets state
a peak few programs reach, so we measure: numpy copies of a 256 MiB buffer
(larger than any CPU cache), split across the cores we may use (numpy drops
the GIL while copying), best of a few runs in about a second. The figure is
bytes read plus bytes written per second, as STREAM's Copy counts them.

The result is cached by CPU model and RAM size under
``$EDGEGLM_CACHE_DIR`` (tests), else ``$XDG_CACHE_HOME/edgeglm``, else
``~/.cache/edgeglm``, so only the first ``doctor`` or ``plan`` pays for it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

import numpy as np

from edgeglm.hardware.cpu import usable_threads
from edgeglm.hardware.profile import CPUInfo, MemoryInfo
from edgeglm.paths import cache_dir

_BUFFER_BYTES = 256 << 20
_BUDGET_S = 1.0
_MAX_RUNS = 8
_CACHE_FILE = "bandwidth.json"


def machine_key(cpu: CPUInfo, memory: MemoryInfo) -> str:
    """Same CPU model and same RAM size: same memory system, near enough to reuse."""
    raw = f"{cpu.model}|{cpu.arch}|{memory.total_bytes}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def memory_bandwidth(cpu: CPUInfo, memory: MemoryInfo) -> tuple[float | None, str | None]:
    """(GB/s, "cached" or "measured"); (None, None) if measuring failed."""
    key = machine_key(cpu, memory)
    cache = _read_cache()
    hit = cache.get(key)
    if isinstance(hit, dict) and isinstance(hit.get("gbps"), (int, float)) and hit["gbps"] > 0:
        return float(hit["gbps"]), "cached"
    gbps = measure_copy_bandwidth()
    if gbps is None:
        return None, None
    cache[key] = {
        "gbps": gbps,
        "cpu": cpu.model,
        "total_bytes": memory.total_bytes,
        "method": f"numpy copy, {_BUFFER_BYTES >> 20} MiB, best of <= {_MAX_RUNS}",
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    _write_cache(cache)
    return gbps, "measured"


def forget(cpu: CPUInfo, memory: MemoryInfo) -> None:
    """Drop this machine's cached figure (it was measured under load, say)."""
    cache = _read_cache()
    if cache.pop(machine_key(cpu, memory), None) is not None:
        _write_cache(cache)


def measure_copy_bandwidth(
    nbytes: int = _BUFFER_BYTES, budget_s: float = _BUDGET_S, threads: int | None = None
) -> float | None:
    n_threads = max(1, min(threads or usable_threads(), 16))
    try:
        src = np.ones(nbytes // 8, dtype=np.float64)  # written once: pages are really mapped
        dst = np.zeros_like(src)
    except MemoryError:
        return None
    bounds = np.linspace(0, src.size, n_threads + 1, dtype=np.int64)
    chunks = [(int(a), int(b)) for a, b in itertools.pairwise(bounds)]

    def copy(span: tuple[int, int]) -> None:
        np.copyto(dst[span[0] : span[1]], src[span[0] : span[1]])

    best = 0.0
    deadline = time.perf_counter() + budget_s
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        for run in range(_MAX_RUNS):
            t0 = time.perf_counter()
            list(pool.map(copy, chunks))
            dt = time.perf_counter() - t0
            if dt > 0:
                best = max(best, 2 * src.nbytes / dt / 1e9)
            if run >= 2 and time.perf_counter() > deadline:
                break
    return round(best, 1) if best > 0 else None


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads((cache_dir() / _CACHE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(data: dict[str, Any]) -> None:
    """Best effort and atomic: a read-only home must not break doctor."""
    d = cache_dir()
    try:
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{_CACHE_FILE}.{os.getpid()}"
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp, d / _CACHE_FILE)
    except OSError:
        pass
