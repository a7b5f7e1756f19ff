"""The pre-flight probe against a real worker and against peers that are not one."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from rpc_workers import Worker, free_port

from edgeglm.errors import BackendError, ExitCode
from edgeglm.rpc.probe import PROTO_MAJOR, probe


def test_probe_reports_devices_memory_and_link(start_worker: Callable[[], Worker]) -> None:
    w = start_worker()
    info = probe(w.endpoint)
    assert info.endpoint == w.endpoint
    assert [d.name for d in info.devices] == ["RPC0"]
    assert all(0 < d.free <= d.total for d in info.devices)
    assert info.rtt_s is not None and info.rtt_s > 0
    assert info.bandwidth is not None and info.bandwidth > 0
    # the worker is free again for the next client
    assert probe(w.endpoint, measure=False).rtt_s is None


def test_refused_names_the_worker() -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    with pytest.raises(BackendError, match=f"worker {endpoint}: connection refused") as e:
        probe(endpoint)
    assert e.value.exit_code == ExitCode.BACKEND_FAILED


def test_unknown_host_names_the_worker() -> None:
    with pytest.raises(BackendError, match=r"worker nosuch\.invalid:50052: unknown host"):
        probe("nosuch.invalid:50052")


HELLO_SIZE = 1 + 8 + 24  # cmd, payload size, conn_caps


def _until_closed(conn: socket.socket) -> None:
    while conn.recv(4096):
        pass


def _peer(answer: Callable[[socket.socket], None]) -> Iterator[str]:
    """A scripted TCP peer on loopback: accepts one client and runs ``answer``."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            answer(conn)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield f"127.0.0.1:{port}"
    server.close()
    t.join(10)


def _hello_with(major: int) -> Callable[[socket.socket], None]:
    def answer(conn: socket.socket) -> None:
        conn.recv(HELLO_SIZE, socket.MSG_WAITALL)
        conn.sendall(struct.pack("<QBBBB24x", 28, major, 0, 0, 0))
        _until_closed(conn)

    return answer


@pytest.fixture
def old_engine() -> Iterator[str]:
    yield from _peer(_hello_with(PROTO_MAJOR - 1))


@pytest.fixture
def silent_peer() -> Iterator[str]:
    def answer(conn: socket.socket) -> None:
        conn.recv(HELLO_SIZE, socket.MSG_WAITALL)  # the HELLO, never answered
        _until_closed(conn)

    yield from _peer(answer)


def test_incompatible_version_names_the_worker(old_engine: str) -> None:
    with pytest.raises(BackendError, match=f"worker {old_engine}: incompatible engine") as e:
        probe(old_engine)
    assert f"protocol {PROTO_MAJOR - 1}.0.0" in str(e.value)


def test_a_peer_that_never_answers_times_out(silent_peer: str) -> None:
    start = time.monotonic()
    with pytest.raises(BackendError, match=f"worker {silent_peer}: no reply in 1 s"):
        probe(silent_peer, timeout=1)
    assert time.monotonic() - start < 60  # bounded, not a hang (generous under load)
