"""Shared fixtures for planner tests: committed hardware profiles and real GLM configs.

Helpers are handed out as fixtures (callables) because test modules import
in importlib mode, where conftest is not importable by name.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from helpers import FIXTURES

from edgeglm.hardware import HardwareProfile, load_profile
from edgeglm.planner.plan import Plan
from edgeglm.planner.planner import make_plan
from edgeglm.planner.sources import ModelSource, open_model

PROFILES = FIXTURES / "hardware"
CONFIGS = FIXTURES / "configs"


def _profile(name: str) -> HardwareProfile:
    return load_profile(PROFILES / f"{name}.json")


@cache
def _config_source(name: str) -> ModelSource:
    """Config-only models are pure functions of their file: share them across tests."""
    return open_model(str(CONFIGS / f"{name}.json"))


def _plan_for(model: str, machine: str, **kw: Any) -> Plan:
    return make_plan(_config_source(model), _profile(machine), **kw)


@pytest.fixture
def profile() -> Callable[[str], HardwareProfile]:
    return _profile


@pytest.fixture
def config_source() -> Callable[[str], ModelSource]:
    return _config_source


@pytest.fixture
def plan_for() -> Callable[..., Plan]:
    return _plan_for


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Bandwidth measurements go to a per-session cache, never the user's."""
    d = tmp_path_factory.mktemp("edgeglm-cache")
    old = os.environ.get("EDGEGLM_CACHE_DIR")
    os.environ["EDGEGLM_CACHE_DIR"] = str(d)
    yield d
    if old is None:
        os.environ.pop("EDGEGLM_CACHE_DIR", None)
    else:
        os.environ["EDGEGLM_CACHE_DIR"] = old
