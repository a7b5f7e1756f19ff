"""Bundle on one machine, import on another (a fresh store, offline), run:
the imported GGUF is found, never made again."""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

from helpers import edgeglm
from malformed.bundles import tree

from edgeglm.store.layout import Entry

NAME = "test/glm4"


def _second_machine(tmp_path: Path, name: str) -> dict[str, str]:
    """The environment of another machine: its own store and cache, offline."""
    return {
        **os.environ,
        "EDGEGLM_MODELS": str(tmp_path / name / "store"),
        "EDGEGLM_CACHE_DIR": str(tmp_path / name / "cache"),
        "HF_HUB_OFFLINE": "1",
    }


def test_bundle_import_run_offline_without_converting_again(entry: Entry, tmp_path: Path) -> None:
    bundle = tmp_path / "glm4.tar"
    r = edgeglm("bundle", NAME, "-o", str(bundle), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
    assert names[0] == "manifest.json"
    assert "artifacts/Q4_K_M.gguf" in names and "source/model.safetensors" in names

    env = _second_machine(tmp_path, "b")
    r = edgeglm("import", str(bundle), cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert "imported test/glm4" in r.stdout
    root = Path(env["EDGEGLM_MODELS"]) / "test--glm4"
    before = tree(root)
    assert "artifacts/Q4_K_M.gguf" in before
    r = edgeglm("verify", NAME, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stdout + r.stderr

    r = edgeglm("run", NAME, "-p", "Hello", "-n", "8", "--no-plan", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert "artifacts/Q4_K_M.gguf" in r.stderr  # the launch line names what it loaded
    assert tree(root) == before  # same files, inodes and mtimes: nothing converted
    cache = Path(env["EDGEGLM_CACHE_DIR"]) / "artifacts"
    assert not cache.exists() or not any(cache.rglob("*.gguf"))

    # The same bundle again: verified, and the store is left as it was.
    r = edgeglm("import", str(bundle), cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert "already in the store" in r.stdout
    assert tree(root) == before


def test_a_gguf_only_bundle_runs_by_name(entry: Entry, tmp_path: Path) -> None:
    bundle = tmp_path / "q4.tar"
    r = edgeglm("bundle", NAME, "q4_k_m", "-o", str(bundle), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    with tarfile.open(bundle) as tar:
        assert tar.getnames() == ["manifest.json", "artifacts/Q4_K_M.gguf"]
    env = _second_machine(tmp_path, "c")
    assert edgeglm("import", str(bundle), cwd=tmp_path, env=env).returncode == 0
    r = edgeglm("run", NAME, "-p", "Hello", "-n", "8", "--no-plan", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    r = edgeglm("models", "--json", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    import json

    (model,) = [m for m in json.loads(r.stdout)["models"] if m["where"] == "store"]
    assert model["checkpoint"] is None
    assert [(a["name"], a["quant"], a["architecture"]) for a in model["artifacts"]] == [
        ("Q4_K_M.gguf", "Q4_K_M", "glm4")
    ]


def test_an_unpacked_bundle_imports(entry: Entry, tmp_path: Path) -> None:
    bundle = tmp_path / "glm4.tar"
    assert edgeglm("bundle", NAME, "source", "-o", str(bundle), cwd=tmp_path).returncode == 0
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    with tarfile.open(bundle) as tar:
        tar.extractall(unpacked, filter="data")
    env = _second_machine(tmp_path, "d")
    r = edgeglm("import", str(unpacked), cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert edgeglm("verify", NAME, cwd=tmp_path, env=env).returncode == 0
    assert (unpacked / "manifest.json").is_file()  # the input is left as it was


def _other_config(root: Path) -> None:
    """Give the entry at ``root`` another config.json, recorded as such."""
    import hashlib
    import json

    (root / "source" / "config.json").write_text("{}")
    doc = json.loads((root / "manifest.json").read_text())
    rec = next(f for f in doc["files"] if f["path"] == "source/config.json")
    rec.update(size=2, sha256=hashlib.sha256(b"{}").hexdigest())
    (root / "manifest.json").write_text(json.dumps(doc))


def test_import_over_a_different_entry_needs_force(entry: Entry, tmp_path: Path) -> None:
    source = tmp_path / "source.tar"
    assert edgeglm("bundle", NAME, "source", "-o", str(source), cwd=tmp_path).returncode == 0
    env = _second_machine(tmp_path, "e")
    store = Path(env["EDGEGLM_MODELS"])
    store.mkdir(parents=True)
    root = store / entry.root.name
    shutil.copytree(entry.root, root)
    _other_config(root)
    assert edgeglm("verify", NAME, cwd=tmp_path, env=env).returncode == 0
    r = edgeglm("import", str(source), cwd=tmp_path, env=env)
    assert r.returncode == 2 and "--force" in r.stderr, r.stderr
    assert (root / "source" / "config.json").read_text() == "{}"
    r = edgeglm("import", str(source), "--force", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert edgeglm("verify", NAME, cwd=tmp_path, env=env).returncode == 0
    assert not (root / "artifacts").exists()  # replaced as a whole
    assert [p.name for p in store.iterdir() if not p.name.startswith(".")] == [root.name]
    assert not any((store / ".staging").iterdir())


def test_importing_again_puts_back_a_damaged_file(entry: Entry, tmp_path: Path) -> None:
    source = tmp_path / "source.tar"
    assert edgeglm("bundle", NAME, "source", "-o", str(source), cwd=tmp_path).returncode == 0
    env = _second_machine(tmp_path, "f")
    assert edgeglm("import", str(source), cwd=tmp_path, env=env).returncode == 0
    weights = Path(env["EDGEGLM_MODELS"]) / entry.root.name / "source" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert edgeglm("verify", NAME, cwd=tmp_path, env=env).returncode == 4
    r = edgeglm("import", str(source), cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert "source/model.safetensors" in r.stdout
    assert edgeglm("verify", NAME, cwd=tmp_path, env=env).returncode == 0
