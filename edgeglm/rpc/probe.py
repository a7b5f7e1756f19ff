"""Ask a worker what it offers, over llama.cpp's own RPC protocol, with every
wait bounded.

llama.cpp's client (``ggml_backend_rpc_add_server``) aborts the whole process
when a worker is unreachable or speaks another protocol version, and its
sockets have no timeouts. So before anything hands an endpoint to llama.cpp,
this pre-flight speaks the few commands it needs (HELLO, DEVICE_COUNT,
GET_DEVICE_MEMORY, and a scratch buffer for the bandwidth) from Python, where
a bad worker is one clear ``BackendError`` naming it.

The wire format is ggml-rpc.cpp's (``RPC_PROTO_MAJOR_VERSION`` 7): a request is
``| cmd u8 | size u64 | payload |``, a reply ``| size u64 | payload |``, all
little-endian and packed. The server serves one client at a time, so a probe
waits (bounded) while another client holds the worker.
"""

from __future__ import annotations

import socket
import struct
import time
from statistics import median

from edgeglm.errors import BackendError
from edgeglm.rpc.endpoints import RpcDevice, WorkerInfo, parse_endpoint

PROTO_MAJOR = 7  # ggml-rpc.h RPC_PROTO_MAJOR_VERSION of the engine we ship
PROTO_MINOR = 0

# enum rpc_cmd in ggml-rpc.cpp (HELLO is pinned at 14 by a static_assert there)
CMD_ALLOC_BUFFER = 0
CMD_BUFFER_GET_BASE = 3
CMD_FREE_BUFFER = 4
CMD_SET_TENSOR = 6
CMD_GET_DEVICE_MEMORY = 11
CMD_HELLO = 14
CMD_DEVICE_COUNT = 15

CONN_CAPS_SIZE = 24  # transport.h RPC_CONN_CAPS_SIZE; zeros: plain TCP, no RDMA upgrade
HELLO_RSP = struct.Struct("<BBBB24x")  # major, minor, patch, padding, conn_caps
# struct rpc_tensor (packed): id, type, buffer, ne[4], nb[4], op, op_params[16],
# flags, src[10], view_src, view_offs, data, name[64], use_count
RPC_TENSOR = struct.Struct("<QIQ4I4II16ii10QQQQ64si")
assert RPC_TENSOR.size == 296  # ggml-rpc.cpp static_asserts a multiple of 8

RTT_ROUNDS = 8
BANDWIDTH_BYTES = 8 << 20  # enough to leave slow start on a LAN, quick on a slow link


class _Conn:
    """One RPC connection; every failure becomes a ``BackendError`` naming the worker."""

    def __init__(self, endpoint: str, timeout: float) -> None:
        self.endpoint = endpoint
        host, _, port = endpoint.rpartition(":")
        host = host.strip("[]")
        try:
            self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        except socket.gaierror as e:
            raise BackendError(f"worker {endpoint}: unknown host ({e.strerror or e})") from e
        except ConnectionRefusedError as e:
            raise BackendError(
                f"worker {endpoint}: connection refused (is `edgeglm worker` running there?)"
            ) from e
        except TimeoutError as e:
            raise BackendError(
                f"worker {endpoint}: unreachable (no answer in {timeout:g} s)"
            ) from e
        except OSError as e:
            raise BackendError(f"worker {endpoint}: unreachable ({e.strerror or e})") from e
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout

    def close(self) -> None:
        self.sock.close()

    def send(self, cmd: int, payload: bytes = b"") -> None:
        try:
            self.sock.sendall(struct.pack("<BQ", cmd, len(payload)))
            self.sock.sendall(payload)
        except TimeoutError as e:
            raise BackendError(f"worker {self.endpoint}: timed out sending") from e
        except OSError as e:
            raise BackendError(
                f"worker {self.endpoint}: connection lost ({e.strerror or e})"
            ) from e

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except TimeoutError as e:
                raise BackendError(
                    f"worker {self.endpoint}: no reply in {self.timeout:g} s "
                    "(busy with another client, or not a llama.cpp RPC worker)"
                ) from e
            except OSError as e:
                raise BackendError(
                    f"worker {self.endpoint}: connection lost ({e.strerror or e})"
                ) from e
            if not chunk:
                raise BackendError(
                    f"worker {self.endpoint}: closed the connection "
                    "(not a llama.cpp RPC worker, or an incompatible engine version)"
                )
            buf += chunk
        return bytes(buf)

    def call(self, cmd: int, payload: bytes, reply_size: int) -> bytes:
        self.send(cmd, payload)
        (size,) = struct.unpack("<Q", self._recv_exact(8))
        if size != reply_size:
            raise BackendError(
                f"worker {self.endpoint}: unexpected reply ({size} bytes, expected {reply_size}); "
                "an incompatible engine version?"
            )
        return self._recv_exact(size)


def _hello(conn: _Conn) -> None:
    reply = conn.call(CMD_HELLO, bytes(CONN_CAPS_SIZE), HELLO_RSP.size)
    major, minor, patch = HELLO_RSP.unpack(reply)[:3]
    # the same test llama.cpp's client makes (negotiate_hello), asked here where it can be reported
    if major != PROTO_MAJOR or minor > PROTO_MINOR:
        raise BackendError(
            f"worker {conn.endpoint}: incompatible engine (RPC protocol {major}.{minor}.{patch}, "
            f"this EdgeGLM speaks {PROTO_MAJOR}.{PROTO_MINOR}.x); "
            "run the same EdgeGLM version on both"
        )


def _device_memory(conn: _Conn, device: int) -> tuple[int, int]:
    free, total = struct.unpack(
        "<QQ", conn.call(CMD_GET_DEVICE_MEMORY, struct.pack("<I", device), 16)
    )
    return free, total


def _bandwidth(conn: _Conn, nbytes: int) -> float | None:
    """Client-to-worker bytes/s: one SET_TENSOR into a scratch buffer, timed up to
    the next reply (the server handles commands in order). None if the worker
    cannot spare the buffer."""
    ptr, _size = struct.unpack(
        "<QQ", conn.call(CMD_ALLOC_BUFFER, struct.pack("<IQ", 0, nbytes), 16)
    )
    if ptr == 0:
        return None
    try:
        (base,) = struct.unpack("<Q", conn.call(CMD_BUFFER_GET_BASE, struct.pack("<Q", ptr), 8))
        n = nbytes // 4
        tensor = RPC_TENSOR.pack(
            1, 0, ptr, n, 1, 1, 1, 4, 4 * n, 4 * n, 4 * n, 0, *([0] * 16), 0, *([0] * 10),
            0, 0, base, b"edgeglm-probe", 0,
        )  # fmt: skip
        header = tensor + struct.pack("<BQ", 0, 0)  # cache_flag 0, offset 0
        payload = header + bytes(4 * n)
        start = time.perf_counter()
        conn.send(CMD_SET_TENSOR, payload)
        _device_memory(conn, 0)  # returns once the tensor has been read
        elapsed = time.perf_counter() - start
    finally:
        conn.send(CMD_FREE_BUFFER, struct.pack("<Q", ptr))
    return 4 * n / elapsed if elapsed > 0 else None


def probe(endpoint: str, *, timeout: float = 5.0, measure: bool = True) -> WorkerInfo:
    """A worker's devices and free/total memory; with ``measure``, the round trip
    (median of a few tiny requests) and client-to-worker bandwidth. Raises
    ``BackendError`` naming the worker if it is unreachable, refuses, times out
    or runs an incompatible engine."""
    endpoint = parse_endpoint(endpoint)
    conn = _Conn(endpoint, timeout)
    try:
        _hello(conn)
        (count,) = struct.unpack("<I", conn.call(CMD_DEVICE_COUNT, b"", 4))
        devices = []
        for i in range(count):
            free, total = _device_memory(conn, i)
            # as llama.cpp's client names them when this worker is the only one;
            # with several, see edgeglm.rpc.client.device_names
            devices.append(RpcDevice(f"RPC{i}", endpoint, free, total))
        rtt = bandwidth = None
        if measure and count:
            times = []
            for _ in range(RTT_ROUNDS):
                start = time.perf_counter()
                _device_memory(conn, 0)
                times.append(time.perf_counter() - start)
            rtt = median(times)
            bandwidth = _bandwidth(conn, BANDWIDTH_BYTES)
        return WorkerInfo(endpoint, tuple(devices), rtt, bandwidth)
    finally:
        conn.close()
