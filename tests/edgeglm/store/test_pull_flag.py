"""``--pull`` on the commands that take MODEL: a repo id found nowhere on this
machine is fetched from the hub (the real local hub of tests/hub_server.py)
into the store first; without the flag, nothing is asked of the network."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import HF_FIXTURES, edgeglm
from hub_server import HubServer, glm_repo, hub_server

REPO = "zai-org/glm-tiny"


@pytest.fixture
def hub() -> Iterator[HubServer]:
    with hub_server() as server:
        server.add_repo(REPO, glm_repo(HF_FIXTURES / "glm"))
        yield server


def _env(tmp_path: Path, endpoint: str) -> dict[str, str]:
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
    return env


def _in_store(tmp_path: Path) -> bool:
    return (tmp_path / "models" / REPO.replace("/", "--") / "manifest.json").is_file()


def _requests(hub: HubServer) -> int:
    return len(hub.calls())


def test_without_pull_a_missing_repo_is_not_fetched(hub: HubServer, tmp_path: Path) -> None:
    r = edgeglm("run", REPO, "-p", "hi", "-n", "2", cwd=tmp_path, env=_env(tmp_path, hub.url))
    assert r.returncode == 3, r.stderr
    assert "Traceback" not in r.stderr and REPO in r.stderr
    assert _requests(hub) == 0 and not _in_store(tmp_path)


def test_run_pull_fetches_then_runs_and_the_next_run_stays_local(
    hub: HubServer, tmp_path: Path
) -> None:
    env = _env(tmp_path, hub.url)
    r = edgeglm("run", REPO, "--pull", "-q", "Q8_0", "-p", "hi", "-n", "4", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and _in_store(tmp_path)
    assert f"pulled {REPO} into the store" in r.stderr
    asked = _requests(hub)
    r = edgeglm("run", REPO, "--pull", "-q", "Q8_0", "-p", "hi", "-n", "4", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert _requests(hub) == asked  # found in the store: the hub is not asked again
    assert "pulled" not in r.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["plan", REPO, "--pull", "--json"],
        ["run", REPO, "--pull", "--dry-run"],
    ],
)
def test_plan_and_dry_run_pull_too(hub: HubServer, tmp_path: Path, argv: list[str]) -> None:
    r = edgeglm(*argv, cwd=tmp_path, env=_env(tmp_path, hub.url))
    assert r.returncode == 0, r.stderr
    assert _in_store(tmp_path)
    if argv[0] == "plan":
        assert json.loads(r.stdout)["model"]


def test_plan_finds_a_store_name_without_pull(hub: HubServer, tmp_path: Path) -> None:
    env = _env(tmp_path, hub.url)
    assert edgeglm("pull", REPO, "--no-convert", cwd=tmp_path, env=env).returncode == 0
    offline = {**env, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    r = edgeglm("plan", REPO, cwd=tmp_path, env=offline)
    assert r.returncode == 0, r.stderr


def test_pull_offline_says_so_in_one_line(tmp_path: Path) -> None:
    env = {**_env(tmp_path, "http://127.0.0.1:9"), "HF_HUB_OFFLINE": "1"}
    for argv in (["run", REPO, "--pull", "-p", "hi"], ["bench", REPO, "--pull"]):
        r = edgeglm(*argv, cwd=tmp_path, env=env)
        assert r.returncode == 3, r.stderr
        assert "not available offline" in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
