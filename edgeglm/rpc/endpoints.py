"""``--rpc HOST:PORT,...``: the workers a command spreads a model over, and what
a probe learns of each (devices, free memory, round trip, bandwidth)."""

from __future__ import annotations

from dataclasses import dataclass

from edgeglm.errors import UsageError

# llama.cpp's rpc-server default port, and its GGML_RPC_MAX_SERVERS
DEFAULT_PORT = 50052
MAX_SERVERS = 16


@dataclass(frozen=True)
class RpcDevice:
    """One device a worker offers (a worker may offer several, e.g. two GPUs)."""

    name: str  # llama.cpp's device name, as -ot / --device take it
    description: str
    free: int  # bytes
    total: int  # bytes


@dataclass(frozen=True)
class WorkerInfo:
    """A worker as a probe saw it; ``rtt_s`` and ``bandwidth`` (bytes/s, client
    to worker) are measured, or None where they were not."""

    endpoint: str  # HOST:PORT
    devices: tuple[RpcDevice, ...]
    rtt_s: float | None = None
    bandwidth: float | None = None

    @property
    def free(self) -> int:
        return sum(d.free for d in self.devices)


def parse_endpoint(value: str, flag: str = "--rpc") -> str:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) checked and returned as given."""
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"{flag} {value!r}: expected HOST:PORT (e.g. 192.168.1.20:{DEFAULT_PORT})")
    return f"{host}:{int(port)}"


def parse_endpoints(value: str, flag: str = "--rpc") -> tuple[str, ...]:
    """A comma-separated ``--rpc`` list, as llama.cpp's ``--rpc`` takes it."""
    items = [v for v in value.split(",") if v.strip()]
    if not items:
        raise UsageError(f"{flag}: name at least one worker as HOST:PORT")
    out = tuple(parse_endpoint(v, flag) for v in items)
    if len(set(out)) != len(out):
        raise UsageError(f"{flag} {value!r}: a worker is named twice")
    if len(out) > MAX_SERVERS:
        raise UsageError(f"{flag}: at most {MAX_SERVERS} workers (llama.cpp's limit)")
    return out
