"""Shared fixtures for planner tests: committed hardware profiles and real GLM configs.

Helpers are handed out as fixtures (callables) because test modules import
in importlib mode, where conftest is not importable by name.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
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
