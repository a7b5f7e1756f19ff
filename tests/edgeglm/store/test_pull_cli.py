"""``edgeglm pull`` end to end: the real command in a subprocess, against a real
HTTP hub on 127.0.0.1 through ``HF_ENDPOINT`` (tests/hub_server.py), into a
store of the test's own; then the model runs offline.

The suite runs with ``HF_HUB_OFFLINE=1``; each pull here is started with
``HF_HUB_OFFLINE=0`` in its own environment only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import HF_FIXTURES, edgeglm
from hub_server import (
    NOT_FETCHED,
    Fault,
    HubServer,
    folder_files,
    glm_repo,
    hub_server,
    padded_repo,
    unused_url,
)

REPO = "zai-org/glm-tiny"
GLM = HF_FIXTURES / "glm"
CHECKPOINT = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
}


@pytest.fixture
def hub() -> Iterator[HubServer]:
    with hub_server() as server:
        yield server


def pull_env(tmp_path: Path, endpoint: str, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "EDGEGLM_MODELS": str(tmp_path / "models"),
        "EDGEGLM_CACHE_DIR": str(tmp_path / "cache"),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_ENDPOINT": endpoint,
        "HF_HUB_OFFLINE": "0",
        "COLUMNS": "200",
    }
    env.pop("HF_TOKEN", None)
    env.update(extra)
    return env


def entry_dir(tmp_path: Path) -> Path:
    return tmp_path / "models" / REPO.replace("/", "--")


def manifest(tmp_path: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((entry_dir(tmp_path) / "manifest.json").read_text())
    return data


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_pull_converts_and_the_model_runs_offline(hub: HubServer, tmp_path: Path) -> None:
    sha = hub.add_repo(REPO, glm_repo(GLM))
    env = pull_env(tmp_path, hub.url)
    r = edgeglm("pull", REPO, "--quant", "Q8_0", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert f"pulled {REPO} at {sha[:12]}" in r.stdout and "every file verified" in r.stdout
    assert r.stderr == ""  # on a pipe: no bars, and huggingface_hub's log kept quiet
    source = entry_dir(tmp_path) / "source"
    assert {p.name for p in source.iterdir()} == CHECKPOINT  # no pickle, code or extras
    for name in CHECKPOINT:
        assert (source / name).read_bytes() == (GLM / name).read_bytes()
    m = manifest(tmp_path)
    assert m["source"] == {"repo": REPO, "revision": sha, "endpoint": hub.url}
    gguf = entry_dir(tmp_path) / "artifacts" / "Q8_0.gguf"
    assert gguf.is_file()
    files = m["files"]
    assert isinstance(files, list)
    assert "artifacts/Q8_0.gguf" in {f["path"] for f in files}
    for name in NOT_FETCHED:
        assert not hub.got("GET", f"/{name}")
    assert not list((tmp_path / "models" / ".staging").iterdir())  # nothing left behind

    offline = {**env, "HF_HUB_OFFLINE": "1"}
    run = edgeglm("run", REPO, "-q", "Q8_0", "-p", "hi", "-n", "4", cwd=tmp_path, env=offline)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip()
    assert not list((tmp_path / "cache").glob("artifacts/*/*.gguf"))  # the pulled one ran
    assert [p.name for p in gguf.parent.iterdir()] == ["Q8_0.gguf"]

    # Again: a no-op that says so, online (the branch still names that commit) and offline.
    before = len(hub.calls())
    for again_env in (env, offline):
        again = edgeglm("pull", REPO, "--quant", "Q8_0", cwd=tmp_path, env=again_env)
        assert again.returncode == 0, again.stderr
        assert f"{REPO}: already in the store at {sha[:12]}; nothing to fetch" in again.stdout
    assert [r.path for r in hub.calls()[before:]] == [f"/api/models/{REPO}/revision/main"]


def test_pull_a_revision(hub: HubServer, tmp_path: Path) -> None:
    old = hub.add_repo(REPO, folder_files(GLM), refs=("main", "v1"))
    changed = folder_files(GLM)
    changed["generation_config.json"] = b'{"max_new_tokens": 3}\n'
    new = hub.add_repo(REPO, changed, refs=("main",))
    env = pull_env(tmp_path, hub.url)
    r = edgeglm("pull", REPO, "--revision", "v1", "--no-convert", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert manifest(tmp_path)["source"] == {"repo": REPO, "revision": old, "endpoint": hub.url}
    generation = entry_dir(tmp_path) / "source" / "generation_config.json"
    assert generation.read_bytes() == (GLM / "generation_config.json").read_bytes()
    assert not (entry_dir(tmp_path) / "artifacts").exists()  # --no-convert

    # main has moved on: pulling it replaces the entry; the unchanged weights
    # are linked from the old entry (and verified), not fetched again
    r = edgeglm("pull", REPO, "--no-convert", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert manifest(tmp_path)["source"] == {"repo": REPO, "revision": new, "endpoint": hub.url}
    assert generation.read_bytes() == changed["generation_config.json"]
    assert len(hub.got("GET", "/model.safetensors")) == 1
    weights = entry_dir(tmp_path) / "source" / "model.safetensors"
    assert weights.read_bytes() == (GLM / "model.safetensors").read_bytes()

    # a commit that changes nothing EdgeGLM fetches: the entry stays, at the new commit
    newer = hub.add_repo(REPO, {**changed, "README.md": b"# new card\n"}, refs=("main",))
    for _ in range(2):
        r = edgeglm("pull", REPO, "--no-convert", cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stderr
        assert manifest(tmp_path)["source"] == {
            "repo": REPO,
            "revision": newer,
            "endpoint": hub.url,
        }
    assert "already in the store" in r.stdout  # the second time
    assert len(hub.got("GET", "/model.safetensors")) == 1

    # a commit the store has: nothing is asked of the hub
    before = len(hub.calls())
    r = edgeglm("pull", REPO, "--revision", newer[:10], "--no-convert", cwd=tmp_path, env=env)
    assert r.returncode == 0 and "already in the store" in r.stdout, r.stderr
    assert hub.calls()[before:] == []


def test_pull_without_quant_converts_to_the_plan_quant(hub: HubServer, tmp_path: Path) -> None:
    from edgeglm.store.pull import planned_quant

    hub.add_repo(REPO, folder_files(GLM))
    r = edgeglm("pull", REPO, cwd=tmp_path, env=pull_env(tmp_path, hub.url))
    assert r.returncode == 0, r.stderr
    artifacts = entry_dir(tmp_path) / "artifacts"
    assert [p.name for p in artifacts.iterdir()] == [f"{planned_quant(GLM)}.gguf"]


def test_an_interrupted_pull_resumes(hub: HubServer, tmp_path: Path) -> None:
    files = padded_repo(GLM, 24 << 20)
    hub.add_repo(REPO, files)
    hub.fault(REPO, "padding.safetensors", Fault("stall", after=15 << 20))
    env = pull_env(tmp_path, hub.url)
    staging = tmp_path / "models" / ".staging"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeglm", "pull", REPO, "--no-convert"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120  # only guards against a hang
        while not any(p.stat().st_size >= 10 << 20 for p in staging.glob("*/.partial/*")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)  # Ctrl-C in the middle of the file
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    assert not entry_dir(tmp_path).exists()
    hub.clear_faults()
    hub.release.set()

    r = edgeglm("pull", REPO, "--no-convert", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    ranges = [q.headers.get("range") for q in hub.got("GET", "/padding.safetensors")]
    assert ranges == [None, f"bytes={10 << 20}-"]
    got = (entry_dir(tmp_path) / "source" / "padding.safetensors").read_bytes()
    assert got == files["padding.safetensors"]
    # the files finished before the interruption were not fetched again
    assert len(hub.got("GET", "/model.safetensors")) == 1


def test_a_file_that_stays_corrupt_fails_naming_it(hub: HubServer, tmp_path: Path) -> None:
    hub.add_repo(REPO, folder_files(GLM))
    hub.fault(REPO, "model.safetensors", Fault("corrupt", always=True))
    r = edgeglm("pull", REPO, cwd=tmp_path, env=pull_env(tmp_path, hub.url))
    assert r.returncode == 4
    line = one_line_error(r)
    assert "model.safetensors" in line and "Nothing was added to the store" in line
    assert len(hub.got("GET", "/model.safetensors")) == 2
    assert not entry_dir(tmp_path).exists()


def test_a_pickle_only_repo_is_refused(hub: HubServer, tmp_path: Path) -> None:
    hub.add_repo(
        REPO, {"config.json": (GLM / "config.json").read_bytes(), "pytorch_model.bin": b"\x80"}
    )
    r = edgeglm("pull", REPO, cwd=tmp_path, env=pull_env(tmp_path, hub.url))
    assert r.returncode == 4
    assert "only pickle weights found (pytorch_model.bin)" in one_line_error(r)
    assert not hub.got("GET", "/resolve/")
    assert not entry_dir(tmp_path).exists()


def test_offline_and_not_in_the_store(tmp_path: Path) -> None:
    env = pull_env(tmp_path, unused_url(), HF_HUB_OFFLINE="1")
    r = edgeglm("pull", REPO, cwd=tmp_path, env=env)
    assert r.returncode == 3
    assert one_line_error(r) == f"error: {REPO}: not available offline (HF_HUB_OFFLINE=1)"
    staging = tmp_path / "models" / ".staging"
    assert not staging.exists() or list(staging.iterdir()) == []  # no lock, no folder left


def test_a_hub_that_is_down_is_one_line(tmp_path: Path) -> None:
    url = unused_url()
    r = edgeglm("pull", REPO, cwd=tmp_path, env=pull_env(tmp_path, url))
    assert r.returncode == 3
    assert f"{REPO}: cannot reach {url}" in one_line_error(r)


def test_hf_token_is_sent(tmp_path: Path) -> None:
    with hub_server(token="hf_test_secret") as hub:
        hub.add_repo(REPO, folder_files(GLM))
        r = edgeglm("pull", REPO, "--no-convert", cwd=tmp_path, env=pull_env(tmp_path, hub.url))
        assert r.returncode == 3
        assert "set HF_TOKEN" in one_line_error(r)

        before = len(hub.calls())
        env = pull_env(tmp_path, hub.url, HF_TOKEN="hf_test_secret")
        r = edgeglm("pull", REPO, "--no-convert", cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stderr
        calls = hub.calls()[before:]
        assert len([q for q in calls if "/resolve/" in q.path]) == 2 * len(CHECKPOINT)  # HEAD, GET
        assert {q.headers.get("authorization") for q in calls} == {"Bearer hf_test_secret"}


@pytest.mark.parametrize(
    "args",
    [
        ["--quant", "Q9_Z"],
        ["--quant", "Q8_0", "--no-convert"],
        ["--revision", "main", "../outside"],
    ],
)
def test_bad_arguments_are_refused_before_fetching(
    hub: HubServer, tmp_path: Path, args: list[str]
) -> None:
    hub.add_repo(REPO, folder_files(GLM))
    if not args[-1].startswith("../"):
        args = [REPO, *args]
    r = edgeglm("pull", *args, cwd=tmp_path, env=pull_env(tmp_path, hub.url))
    assert r.returncode == 2
    one_line_error(r)
    assert hub.calls() == []


def test_progress_on_a_terminal(hub: HubServer, tmp_path: Path) -> None:
    from terminal import Terminal

    hub.add_repo(REPO, folder_files(GLM))
    env = pull_env(tmp_path, hub.url, TERM="xterm")
    env.pop("NO_COLOR", None)
    t = Terminal(
        [sys.executable, "-m", "edgeglm", "pull", REPO, "-q", "Q8_0"], cwd=tmp_path, env=env
    )
    try:
        t.expect(r"model\.safetensors .*MB")  # a file's bar, in bytes
        t.expect(rf"converting {REPO} to Q8_0")  # then the conversion's
        t.expect(rf"pulled {REPO} at")
        assert t.wait() == 0
    finally:
        t.close()
