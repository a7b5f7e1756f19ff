"""A store entry built once from a committed fixture checkpoint and a real
converted GGUF, copied into each test's own store."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import HF_FIXTURES

from edgeglm.store.layout import Entry, add_checkpoint, find, staging_dir
from edgeglm.store.manifest import Source

NAME = "test/glm4"
QUANT = "Q4_K_M"
# The files of a model folder (not the test references beside them).
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
)


def use_store(path: Path) -> None:
    os.environ["EDGEGLM_MODELS"] = str(path)


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An entry folder: the glm4 fixture's checkpoint and its Q4_K_M GGUF,
    converted by EdgeGLM into the entry (read-only to tests: copy it)."""
    from edgeglm.artifacts import ensure_gguf

    root = tmp_path_factory.mktemp("template-store")
    before = os.environ.get("EDGEGLM_MODELS")
    use_store(root)
    try:
        folder = staging_dir("fixture-") / "glm4"
        folder.mkdir()
        for name in MODEL_FILES:
            shutil.copy(HF_FIXTURES / "glm4" / name, folder / name)
        entry = add_checkpoint(NAME, folder, _source())
        ensure_gguf(entry.source_dir, QUANT)
    finally:
        if before is None:
            del os.environ["EDGEGLM_MODELS"]
        else:
            os.environ["EDGEGLM_MODELS"] = before
    return root / "test--glm4"


def _source() -> Source:
    return Source(repo=NAME, revision="0" * 40, endpoint=None)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """This test's own (empty) store and cache, for it and the processes it starts."""
    path = tmp_path / "store"
    monkeypatch.setenv("EDGEGLM_MODELS", str(path))
    monkeypatch.setenv("EDGEGLM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "200")
    yield path


@pytest.fixture
def entry(store: Path, template: Path) -> Entry:
    """The template entry, copied into this test's store."""
    store.mkdir(parents=True, exist_ok=True)
    shutil.copytree(template, store / template.name)
    found = find(NAME)
    assert found is not None
    return found
