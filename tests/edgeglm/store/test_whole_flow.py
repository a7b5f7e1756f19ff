"""The air-gap story end to end, every step the real command: on a connected
machine pull (from the real local hub) and convert, then bundle; carry one
file across; on a "second machine" (a fresh store and cache, HF_HUB_OFFLINE=1,
no hub reachable) import, verify and run, without converting again."""

from __future__ import annotations

import json
import os
from pathlib import Path

from helpers import HF_FIXTURES, edgeglm
from hub_server import glm_repo, hub_server
from malformed.bundles import tree

REPO = "zai-org/glm-tiny"


def _machine(root: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "EDGEGLM_MODELS": str(root / "models"),
        "EDGEGLM_CACHE_DIR": str(root / "cache"),
        "HF_HOME": str(root / "hf"),
        "COLUMNS": "200",
    }
    env.pop("HF_TOKEN", None)
    env.update(extra)
    return env


def test_pull_convert_bundle_import_offline_run(tmp_path: Path) -> None:
    connected, airgapped = tmp_path / "connected", tmp_path / "airgapped"
    bundle = tmp_path / "carry" / "glm-tiny.tar"
    bundle.parent.mkdir()
    with hub_server() as hub:
        sha = hub.add_repo(REPO, glm_repo(HF_FIXTURES / "glm"))
        env = _machine(connected, HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0")
        r = edgeglm("pull", REPO, "--quant", "Q8_0", cwd=tmp_path, env=env)
        assert r.returncode == 0, r.stderr
    r = edgeglm("bundle", REPO, "-o", str(bundle), cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr

    # The hub is gone; the second machine has only the bundle.
    env2 = _machine(airgapped, HF_HUB_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9")
    r = edgeglm("import", str(bundle), cwd=tmp_path, env=env2)
    assert r.returncode == 0, r.stderr
    assert edgeglm("verify", REPO, cwd=tmp_path, env=env2).returncode == 0
    models = json.loads(edgeglm("models", "--json", cwd=tmp_path, env=env2).stdout)
    assert json.dumps(models).count(sha) >= 1  # the source revision crossed with it
    entry = airgapped / "models" / REPO.replace("/", "--")
    before = tree(entry)
    r = edgeglm("run", REPO, "-q", "Q8_0", "-p", "hi", "-n", "4", cwd=tmp_path, env=env2)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    assert tree(entry) == before  # the imported GGUF ran: nothing converted, nothing changed
    assert not (airgapped / "cache" / "artifacts").exists()
