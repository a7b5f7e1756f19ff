"""Fixtures for the RPC tests: real workers on loopback, the demo model as a GGUF."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rpc_workers import Worker

from edgeglm.converters.gguf.convert import convert

DEMO = Path(__file__).parents[3] / "edgeglm" / "demo_model"


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[[], Worker]]:
    workers: list[Worker] = []

    def start() -> Worker:
        workers.append(Worker(tmp_path))
        return workers[-1]

    yield start
    for w in workers:
        w.stop()


@pytest.fixture
def two_workers(start_worker: Callable[[], Worker]) -> tuple[Worker, Worker]:
    return start_worker(), start_worker()


@pytest.fixture(scope="session")
def demo_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo.gguf"
    return convert(DEMO, out, "Q8_0").output
