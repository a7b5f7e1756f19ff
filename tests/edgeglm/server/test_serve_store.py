"""``edgeglm serve`` takes a store name or a repo id like every command that
takes MODEL, and ``--pull`` fetches it first (from the real local hub)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from helpers import HF_FIXTURES
from hub_server import glm_repo, hub_server

REPO = "zai-org/glm-tiny"


def test_serve_pull_then_serve_the_store_model_offline(kit: Any, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "EDGEGLM_MODELS": str(tmp_path / "models"),
        "EDGEGLM_CACHE_DIR": str(tmp_path / "cache"),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "0",
    }
    env.pop("HF_TOKEN", None)
    with hub_server() as hub:
        hub.add_repo(REPO, glm_repo(HF_FIXTURES / "glm"))
        env["HF_ENDPOINT"] = hub.url
        with kit.serve_cli(REPO, "--pull", env=env, cwd=tmp_path) as server:
            reply = kit.raw_request(server.url, "GET", "/v1/models")
            assert reply.status == 200
            assert [m["id"] for m in json.loads(reply.body)["data"]] == [REPO]
    # the hub is gone: the store has it now
    offline = {**env, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    with kit.serve_cli(REPO, env=offline, cwd=tmp_path) as server:
        assert kit.raw_request(server.url, "GET", "/health").status == 200
