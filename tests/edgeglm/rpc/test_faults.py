"""Faults across workers: one clear line naming the worker, exit 6, within
seconds, and the process stays usable; a worker's own bad start is one line."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import edgeglm
from rpc_workers import Worker, free_port

from edgeglm.backends.base import SamplingParams
from edgeglm.errors import BackendError
from edgeglm.runtime import open_backend


def test_worker_killed_mid_generation(moe_gguf: Path, two_workers: tuple[Worker, Worker]) -> None:
    first, second = two_workers
    split = open_backend(str(moe_gguf), n_ctx=256, rpc=(first.endpoint, second.endpoint))
    try:
        prompt = split.tokenize("Hello there")
        gen = split.generate(prompt, SamplingParams(temperature=0.0, max_tokens=200))
        next(gen)  # generating
        second.stop()
        start = time.monotonic()
        with pytest.raises(BackendError, match=f"worker {second.endpoint}: .*stopped"):
            for _ in gen:
                pass
        assert time.monotonic() - start < 60  # seconds in practice; bounded under load
        # the parent is fine; the split model says the same again, without waiting
        with pytest.raises(BackendError, match=f"worker {second.endpoint}"):
            split.tokenize("again")
    finally:
        split.close()
    local = open_backend(str(moe_gguf), n_ctx=256)
    assert local.tokenize("Hello there") == prompt
    local.close()


def test_run_with_a_refused_worker_is_one_line(moe_gguf: Path, tmp_path: Path) -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    r = edgeglm(
        "run", str(moe_gguf), "--raw", "-p", "Hi", "-n", "4", "--rpc", endpoint, cwd=tmp_path
    )
    assert r.returncode == 6
    assert r.stderr.strip().splitlines() == [
        f"error: worker {endpoint}: connection refused (is `edgeglm worker` running there?)"
    ]


def test_run_splits_over_a_worker(
    moe_gguf: Path, start_worker: Callable[[], Worker], tmp_path: Path
) -> None:
    w = start_worker()
    args = ("run", str(moe_gguf), "--raw", "-p", "Hi", "-n", "8", "--temp", "0")
    split = edgeglm(*args, "--rpc", w.endpoint, cwd=tmp_path)
    local = edgeglm(*args, cwd=tmp_path)
    assert split.returncode == 0, split.stderr
    assert split.stdout == local.stdout


def test_doctor_rpc(start_worker: Callable[[], Worker], tmp_path: Path) -> None:
    w = start_worker()
    r = edgeglm("doctor", "--rpc", w.endpoint, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"Worker {w.endpoint}" in r.stdout and "round trip" in r.stdout
    gone = f"127.0.0.1:{free_port()}"
    r = edgeglm("doctor", "--rpc", f"{w.endpoint},{gone}", cwd=tmp_path)
    assert r.returncode == 6
    assert f"worker {gone}: connection refused" in r.stderr


def test_worker_port_in_use(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        r = edgeglm("worker", "--port", str(port), cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: --port {port}: already in use on 127.0.0.1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--host", "0.0.0.0"), "--host 0.0.0.0: not loopback; add --allow-remote"),
        (("--host", "192.0.2.1", "--allow-remote"), "--host 192.0.2.1: not an address"),
        (("--host", "bad.invalid", "--allow-remote"), "--host bad.invalid: not an address"),
        (("--port", "70000"), "--port 70000: expected 0 to 65535"),
    ],
)  # fmt: skip
def test_worker_bad_address(args: tuple[str, ...], message: str, tmp_path: Path) -> None:
    r = edgeglm("worker", *args, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().startswith(f"error: {message}")


def test_remote_worker_warns_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeglm", "worker", "--host", "0.0.0.0", "--allow-remote",
         "--port", str(port), "--no-cache"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(f"edgeglm worker listening on 0.0.0.0:{port}")
        proc.send_signal(2)  # SIGINT, as Ctrl-C
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130  # interrupted, as every command
    assert "Traceback" not in stderr
    assert "NO authentication and NO encryption" in stderr
    assert f"ssh -N -L {port}:127.0.0.1:{port}" in stderr
