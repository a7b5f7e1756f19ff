"""`edgeglm plan --rpc` in a subprocess: the split per machine, --json, bad values, real workers."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import FIXTURES, edgeglm

from edgeglm.errors import ExitCode

PROFILES = FIXTURES / "hardware"
CONFIGS = FIXTURES / "configs"
NODE64 = str(PROFILES / "node-64gb.json")
NODE128 = str(PROFILES / "node-128gb.json")
GLM45 = str(CONFIGS / "glm-4.5.json")
TWO = "10.0.0.2:50052,10.0.0.3:50052"


def test_plan_rpc_on_paper_human(tmp_path: Path, env: dict[str, str]) -> None:
    r = edgeglm(
        "plan", GLM45, "-q", "Q2_K", "--hardware", NODE64, "--rpc", TWO,
        "--rpc-hardware", f"{NODE128},{NODE64}", "--link-gbit", "10",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    for word in ("split per machine", "10.0.0.2:50052", "node-128gb", "RPC0", "RPC1",
                 "network per token", "round trips", "decode ceiling", "+ output"):  # fmt: skip
        assert word in r.stdout, word
    assert f"--rpc {TWO}" in r.stdout and "-ts " in r.stdout


def test_plan_rpc_json(tmp_path: Path, env: dict[str, str]) -> None:
    r = edgeglm(
        "plan", GLM45, "-q", "Q2_K", "--hardware", NODE64, "--rpc", TWO,
        "--rpc-hardware", NODE64, "--json", cwd=tmp_path, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    c = d["cluster"]
    assert c["fits"] and c["quant"] == "Q2_K"
    assert [x["device"] for x in c["devices"]] == ["CPU", "RPC0", "RPC1"]
    assert [x["host"] for x in c["devices"]] == ["local", "10.0.0.2:50052", "10.0.0.3:50052"]
    for x in c["devices"]:
        assert x["weights_bytes"] > 0 and x["kv_cache_bytes"] > 0 and x["compute_bytes"] > 0
        assert x["total_bytes"] <= x["usable_bytes"]
    net = c["network_per_token"]
    assert net["sent_bytes"] > 0 and net["received_bytes"] > 151552 * 4  # the logits come back
    assert c["decode_tokens_per_second_ceiling"] > 0
    launch = d["launch"]
    assert launch["rpc"] == TWO.split(",")
    layers = [x["blocks"][1] - x["blocks"][0] + 1 + x["output_layer"] for x in c["devices"]]
    assert launch["n_gpu_layers"] == sum(layers[1:])
    assert launch["tensor_split"] == layers[1:]
    assert "--rpc" in d["llama_cpp_args"]


def test_plan_rpc_too_big_says_how_many_more(tmp_path: Path, env: dict[str, str]) -> None:
    r = edgeglm(
        "plan", str(CONFIGS / "glm-5.json"), "-q", "Q4_K_M", "--hardware", NODE64,
        "--rpc", TWO, "--rpc-hardware", NODE64, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert r.returncode == ExitCode.HARDWARE
    assert "does not fit: needs 5 more machines like node-64gb" in r.stdout
    assert r.stderr.count("\n") == 1 and "does not fit on these 3 machines" in r.stderr
    j = edgeglm(
        "plan", str(CONFIGS / "glm-5.json"), "-q", "Q4_K_M", "--hardware", NODE64,
        "--rpc", TWO, "--rpc-hardware", NODE64, "--json", cwd=tmp_path, env=env,
    )  # fmt: skip
    d = json.loads(j.stdout)
    assert d["cluster"]["more_machines_needed"] == 5 and d["launch"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rpc", "nohost"], "--rpc 'nohost': expected HOST:PORT"),
        (["--rpc", "h:99999"], "expected HOST:PORT"),
        (["--rpc", "h:1,h:1"], "a worker is named twice"),
        (["--rpc", ","], "name at least one worker"),
        (
            ["--rpc", TWO, "--rpc-hardware", f"{NODE64},{NODE64},{NODE64}"],
            "3 profiles for 2 workers",
        ),
        (["--rpc-hardware", NODE64], "name them with --rpc"),
        (["--rpc", TWO, "--rpc-hardware", NODE64, "--link-gbit", "0"], "--link-gbit 0: must be"),
        (["--rpc", TWO, "--rpc-hardware", "missing.json"], "missing.json"),
    ],
)
def test_bad_rpc_values_one_line(
    tmp_path: Path, env: dict[str, str], args: list[str], message: str
) -> None:
    r = edgeglm("plan", GLM45, "--hardware", NODE64, *args, cwd=tmp_path, env=env)
    assert r.returncode == ExitCode.USAGE, r.stderr
    assert message in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr


# -- against real workers (needs the runtime's edgeglm.rpc.probe and `edgeglm worker`) --------

# A guard against a hang, not a speed limit.
READY_TIMEOUT = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def workers(tmp_path: Path, env: dict[str, str]) -> Iterator[list[str]]:
    """Two `edgeglm worker` processes on loopback, probed until they answer."""
    from edgeglm.errors import EdgeGLMError
    from edgeglm.rpc.probe import probe  # type: ignore[import-not-found,unused-ignore]

    procs, endpoints = [], []
    try:
        for _ in range(2):
            port = _free_port()
            cmd = [sys.executable, "-m", "edgeglm", "worker", "--port", str(port)]
            procs.append(subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))  # fmt: skip
            endpoints.append(f"127.0.0.1:{port}")
        for ep in endpoints:
            deadline = time.monotonic() + READY_TIMEOUT
            while True:
                try:
                    probe(ep, measure=False)
                    break
                except EdgeGLMError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)  # polling the worker's readiness, not a sync point
        yield endpoints
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=60)


def test_plan_rpc_splits_as_the_workers_memory_says(
    tmp_path: Path, env: dict[str, str], workers: list[str]
) -> None:
    from edgeglm.rpc.probe import probe  # type: ignore[import-not-found,unused-ignore]

    r = edgeglm("plan", GLM45, "-q", "IQ1_M", "--hardware", NODE128, "--rpc", ",".join(workers),
                "--json", cwd=tmp_path, env=env)  # fmt: skip
    assert r.returncode in (0, ExitCode.HARDWARE), r.stderr
    d = json.loads(r.stdout)["cluster"]
    infos = [probe(ep, measure=False) for ep in workers]
    remote = [x for x in d["devices"] if x["host"] != "local"]
    assert [x["host"] for x in remote] == [i.endpoint for i in infos for _ in i.devices]
    for x, dev in zip(remote, [dv for i in infos for dv in i.devices], strict=True):
        # each device's room is what the worker reported free, less the margin
        assert x["usable_bytes"] <= dev.free
        assert x["usable_bytes"] >= dev.free - (2 << 30)


def test_plan_rpc_names_a_worker_that_does_not_answer(tmp_path: Path, env: dict[str, str]) -> None:
    # --rpc alone probes the workers: a loopback port nobody listens on is
    # one line naming it (exit 6), not a plan on made-up numbers
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    r = edgeglm("plan", GLM45, "--hardware", NODE64, "--rpc", closed, cwd=tmp_path, env=env)
    assert r.returncode == ExitCode.BACKEND_FAILED, r.stderr
    assert closed in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0
