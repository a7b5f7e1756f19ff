"""Wait for a condition in a Pilot test instead of sleeping a fixed time.

A fixed ``pilot.pause(0.2)`` assumes the app gets there in 0.2 s, which a
loaded machine does not promise; polling waits as long as it takes (up to a
generous limit that only a real hang reaches).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from textual.pilot import Pilot

R = TypeVar("R")


async def until(pilot: Pilot[R], condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.01)
