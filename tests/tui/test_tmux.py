"""The real app, real model, real terminal: tmux drives `run_app` and reads the screen back.

Uses the bundled demo model when its weights are present, else the tiny GLM-4
test fixture (converted to GGUF on first use, into a temp cache).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import HF_FIXTURES

from edgeglm.models import default_model

pytestmark = pytest.mark.skipif(
    shutil.which("tmux") is None, reason="tmux is not installed (apt-get install -y tmux)"
)


def _model() -> str:
    demo = default_model()
    if (demo / "model.safetensors").is_file():
        return str(demo)
    fixture = HF_FIXTURES / "glm4"
    if not (fixture / "model.safetensors").is_file():
        pytest.skip("neither the demo model's weights nor tests/fixtures/hf/glm4 are present")
    return str(fixture)


class Tmux:
    def __init__(self, socket: str) -> None:
        self.socket = socket

    def __call__(self, *args: str) -> str:
        # -f /dev/null: no user config (window-size, prefix keys) changes what we see
        r = subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            check=True,
        )
        return r.stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "app")

    def wait_for(self, *texts: str, timeout: float) -> str:
        """The screen once any of ``texts`` shows on it."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if any(text in screen for text in texts):
                return screen
            if "Could not load" in screen or "Generation failed" in screen:
                raise AssertionError(f"the app reported an error:\n{screen}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"none of {texts} appeared in {timeout:.0f} s; screen:\n{screen}"
                )
            time.sleep(0.25)


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    # a private server (-L): never touches a tmux the developer has running
    t = Tmux(f"edgeglm-test-{os.getpid()}")
    model = _model()
    code = f"from edgeglm.tui.app import run_app; run_app({model!r})"
    app = shlex.join(
        ["env", f"EDGEGLM_CACHE_DIR={tmp_path / 'cache'}", "TERM=xterm-256color",
         sys.executable, "-c", code]
    )  # fmt: skip
    # The app starts only once the window has its final size: a SIGWINCH that
    # lands while Python is still importing is lost, leaving the app at 80x24.
    gate = shlex.join(["tmux", "-L", t.socket, "wait-for", "sized"])
    t("new-session", "-d", "-s", "app", "-x", "100", "-y", "30", "-c", str(tmp_path),
      f"{gate} && exec {app}")  # fmt: skip
    t("resize-window", "-t", "app", "-x", "100", "-y", "30")
    t("wait-for", "-S", "sized")
    try:
        yield t
    finally:
        subprocess.run(["tmux", "-L", t.socket, "kill-server"], capture_output=True, check=False)


def test_real_app_streams_a_reply_in_a_terminal(tmux: Tmux) -> None:
    tmux.wait_for("ready (llama.cpp", timeout=120)  # first run converts the model to GGUF
    tmux("send-keys", "-t", "app", "-l", "Hello GLM")
    tmux("send-keys", "-t", "app", "Enter")
    screen = tmux.wait_for("tok/s", timeout=60)  # the live stats line while tokens stream
    assert "TTFT" in screen and "ctx " in screen and "/2048" in screen
    assert max(len(line) for line in screen.splitlines()) > 80  # the 100-column terminal
    lines = screen.splitlines()
    assert any("Hello GLM" in line for line in lines)
    user_row = next(i for i, line in enumerate(lines) if "Hello GLM" in line)
    reply = [line for line in lines[user_row + 1 :] if line.strip().startswith("█")]
    assert any(len(line.strip("█ ")) > 0 for line in reply), screen
    # Esc may land before or after the reply finishes, and a finished reply
    # may not have drawn "done" yet when Esc is sent (so Esc finds nothing to
    # stop): either final state on the stats line ("· " marks it) will do.
    tmux("send-keys", "-t", "app", "Escape")
    tmux.wait_for("· done (", "· stopped", timeout=60)
    tmux("send-keys", "-t", "app", "C-q")
