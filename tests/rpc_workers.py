"""Real ``edgeglm worker`` processes on loopback, for the RPC tests."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from edgeglm.errors import BackendError
from edgeglm.rpc.probe import probe

READY_TIMEOUT_S = 120.0  # a loaded CI machine may take long to import and listen


def free_port() -> int:
    """A port nothing listens on now (the OS picks it; a worker binds it next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Worker:
    def __init__(self, tmp: Path, threads: int = 1) -> None:
        self.port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgeglm", "worker", "--port", str(self.port),
             "--cache", str(tmp / f"cache-{self.port}"), "--threads", str(threads)],
            cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:  # ready once it answers a probe (a bounded poll, not a sleep)
            try:
                probe(self.endpoint, timeout=5, measure=False)
                return
            except BackendError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"worker on {self.endpoint} did not start") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
