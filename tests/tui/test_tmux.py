"""The real app, real model, real terminal: tmux drives `run_app` and reads the screen back.

Uses the bundled demo model when its weights are present, else the tiny GLM-4
test fixture (converted to GGUF on first use, into a temp cache). One test
streams a reply; the other pastes a multi-line message, switches models
through the picker and fills a small context until the oldest turns are
left out.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
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

    def wait_until(self, ok: Callable[[str], object], timeout: float) -> bool:
        """Whether the screen satisfies ``ok`` within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not ok(self.screen()):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def replace_field(self, text: str) -> bool:
        """Type ``text`` over the focused input's contents; whether it shows whole.
        An input selects its text when focused, one redraw later: keys typed
        before that are replaced by the ones after, so the text is typed again."""
        for _ in range(3):
            self("send-keys", "-t", "app", "End", "C-u")
            self("send-keys", "-t", "app", "-l", text)
            if self.wait_until(lambda screen: text in screen, timeout=5):
                return True
        return False

    def in_picker(self, fill: Callable[[], bool]) -> None:
        """Open the model picker (Ctrl+T) and ``fill`` it. Keys that land before the
        picker has focused its list (a redraw after it shows) go astray: then
        ``fill`` finds its field not filled, and the picker is closed and opened again."""
        for _ in range(5):
            self("send-keys", "-t", "app", "C-t")
            self.wait_for("Choose a model", timeout=30)
            if fill():
                return
            self("send-keys", "-t", "app", "Escape")
            assert self.wait_until(lambda screen: "Choose a model" not in screen, timeout=10)
        raise AssertionError(f"could not fill the model picker:\n{self.screen()}")

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


def _chats(cache: Path) -> set[Path]:
    return set((cache / "conversations").glob("*.json"))


def _turns(cache: Path, old: frozenset[Path] = frozenset()) -> list[dict[str, object]]:
    """The turns of the conversation saved last (the app saves after each reply),
    leaving out the conversations in ``old`` (those from before Ctrl+N)."""
    saved = sorted(_chats(cache) - old, key=lambda p: p.stat().st_mtime)
    if not saved:
        return []
    turns: list[dict[str, object]] = json.loads(saved[-1].read_text(encoding="utf-8"))["turns"]
    return turns


def _wait_turns(
    tmux: Tmux, cache: Path, n: int, timeout: float, old: frozenset[Path] = frozenset()
) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while len(turns := _turns(cache, old)) < n:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{len(turns)} turns saved, not {n}, in {timeout:.0f} s; screen:\n{tmux.screen()}"
            )
        time.sleep(0.25)
    return turns


def test_real_app_paste_model_switch_and_context_shift(
    tmux: Tmux, tmp_path: Path, glm4_gguf: Path
) -> None:
    cache = tmp_path / "cache"
    tmux.wait_for("ready (llama.cpp", timeout=120)
    # 1. a multi-line paste (bracketed, as terminals paste) stays one message
    tmux("set-buffer", "-b", "clip", "--", "line one\nline two\nline three")
    tmux("paste-buffer", "-p", "-d", "-b", "clip", "-t", "app")
    screen = tmux.wait_for("line three", timeout=30)
    assert "line one" in screen and "line two" in screen  # in the editor, not sent yet
    assert _turns(cache) == []
    tmux("send-keys", "-t", "app", "Enter")
    turns = _wait_turns(tmux, cache, 2, timeout=60)
    assert turns[0]["content"] == "line one\nline two\nline three"
    lines = tmux.screen().splitlines()
    row = next(i for i, line in enumerate(lines) if "line one" in line)
    assert "line two" in lines[row + 1] and "line three" in lines[row + 2]

    # 2. another model, typed as a path in the picker (Ctrl+T, Tab to the path field)
    def path_field() -> bool:
        tmux("send-keys", "-t", "app", "Tab")  # from the list to the path
        return tmux.replace_field(str(glm4_gguf))

    tmux.in_picker(path_field)
    tmux("send-keys", "-t", "app", "Enter")
    tmux.wait_for(f"{glm4_gguf.name} · ready (llama.cpp", timeout=120)
    tmux("send-keys", "-t", "app", "-l", "Hi")
    tmux("send-keys", "-t", "app", "Enter")
    _wait_turns(tmux, cache, 4, timeout=60)  # it answers (with random words: random weights)

    # 3. back to the demo model with a 256-token context, in a new chat; messages
    # until the oldest no longer fit: the app says so and goes on
    def context_field() -> bool:
        tmux("send-keys", "-t", "app", "Tab", "Tab", "Tab")  # list, path, backend: context
        tmux("send-keys", "-t", "app", "-l", "256")
        return tmux.wait_until(lambda screen: re.search(r"Context\s+256", screen), timeout=5)

    tmux.in_picker(context_field)
    tmux("send-keys", "-t", "app", "BTab", "BTab", "BTab", "Enter")  # the demo model
    tmux.wait_for("demo model · ready (llama.cpp", timeout=120)
    old = frozenset(_chats(cache))
    tmux("send-keys", "-t", "app", "C-n")
    message = "The lighthouse keeper watched the winter sea from the tower. " * 4
    for n in range(1, 7):
        tmux("send-keys", "-t", "app", "-l", message)
        tmux("send-keys", "-t", "app", "Enter")
        _wait_turns(tmux, cache, 2 * n, timeout=60, old=old)
        if "Context full" in tmux.screen():
            break
    screen = tmux.wait_for("Context full", timeout=10)
    assert "/256" in screen and "Generation failed" not in screen
    tmux("send-keys", "-t", "app", "C-q")
