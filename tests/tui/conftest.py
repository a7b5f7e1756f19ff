"""App-test fixtures: user state in a temp dir, the app built by the CLI's factory with fakes."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import HF_FIXTURES
from tui_support.fake_backend import FakeBackend, FakeFactory
from tui_support.fakes import fake_services, write_gguf

from edgeglm.paths import store_dir
from edgeglm.store.layout import Entry, add_checkpoint, find, staging_dir
from edgeglm.store.manifest import Source
from edgeglm.tui.app import EdgeGLMApp, create_app

STORE_MODEL = "test/glm4"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # Textual runs on asyncio; async tests carry pytestmark = anyio


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Conversations, artifacts, exports and the model store go to fresh folders
    per test, and what the app remembers of artifacts in this process starts
    empty too."""
    from edgeglm.tui import artifacts

    d = tmp_path / "cache"
    d.mkdir()
    monkeypatch.setenv("EDGEGLM_CACHE_DIR", str(d))
    monkeypatch.setenv("EDGEGLM_MODELS", str(tmp_path / "store"))
    monkeypatch.setattr(artifacts, "_recent", {})
    monkeypatch.setattr(artifacts, "_memo", None)
    return d


@pytest.fixture
def artifacts(cache: Path) -> list[Path]:
    return [
        write_gguf(cache / "artifacts" / "glm4-tiny" / "Q4_K_M.gguf", "glm4", 15, "glm4-tiny"),
        write_gguf(cache / "artifacts" / "glm4-tiny" / "Q8_0.gguf", "glm4", 7, "glm4-tiny"),
    ]


@pytest.fixture(scope="session")
def glm4_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight GLM-4 fixture as a Q8_0 GGUF (a user's file, outside the
    cache): llama.cpp runs it in milliseconds, and its replies run to max_tokens."""
    from edgeglm.converters.gguf.convert import convert

    out = tmp_path_factory.mktemp("glm4-gguf") / "glm4-tiny-Q8_0.gguf"
    convert(HF_FIXTURES / "glm4", out, "Q8_0")
    return out


STORE_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
)


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store entry made by the store's API: the glm4 fixture checkpoint and its
    Q4_K_M GGUF converted by EdgeGLM into the entry (read-only: tests copy it)."""
    from edgeglm.artifacts import ensure_gguf

    root = tmp_path_factory.mktemp("tui-template-store")
    before = os.environ.get("EDGEGLM_MODELS")
    os.environ["EDGEGLM_MODELS"] = str(root)
    try:
        folder = staging_dir("fixture-") / "glm4"
        folder.mkdir()
        for name in STORE_FILES:
            shutil.copy(HF_FIXTURES / "glm4" / name, folder / name)
        entry = add_checkpoint(STORE_MODEL, folder, Source(repo=STORE_MODEL, revision="0" * 40))
        ensure_gguf(entry.source_dir, "Q4_K_M")
    finally:
        if before is None:
            del os.environ["EDGEGLM_MODELS"]
        else:
            os.environ["EDGEGLM_MODELS"] = before
    return root / "test--glm4"


@pytest.fixture
def entry(cache: Path, template: Path) -> Entry:
    """The template entry, copied into this test's store."""
    shutil.copytree(template, store_dir() / template.name)
    found = find(STORE_MODEL)
    assert found is not None
    return found


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def make_app(backend: FakeBackend) -> Callable[..., EdgeGLMApp]:
    """The app as the CLI builds it, with a fake backend and fake slow services."""

    def make(
        model: str | None = None,
        *,
        factory: FakeFactory | None = None,
        **services: Any,
    ) -> EdgeGLMApp:
        return create_app(
            model,
            factory or FakeFactory(backend),
            services=fake_services(**services),
            cursor_blink=False,
        )

    return make
