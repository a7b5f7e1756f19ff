"""A crashing engine takes down only its child process: the real ``edgeglm
serve`` keeps answering (/health says why the model is unavailable, requests
get 503), and a stream in flight ends with an error instead of hanging."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import openai
import psutil
import pytest

MODEL = "glm4_moe.gguf"


def engine_child(server_pid: int) -> psutil.Process:
    """The engine's process: the spawned multiprocessing child of the server."""
    found = [
        p for p in psutil.Process(server_pid).children() if "spawn_main" in " ".join(p.cmdline())
    ]
    assert len(found) == 1, [p.cmdline() for p in psutil.Process(server_pid).children()]
    return found[0]


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGKILL])
def test_engine_crash_leaves_the_server_answering(
    kit: Any, serve_gguf: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    args = (str(serve_gguf), "-c", "256", "--restarts", "0")
    with kit.serve_cli(*args, env=dict(os.environ), cwd=tmp_path) as s:
        c = openai.OpenAI(base_url=s.url + "/v1", api_key="none", max_retries=0, timeout=120)
        child = engine_child(s.proc.pid)
        stream = c.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "go"}], max_tokens=200, stream=True
        )
        chunks = iter(stream)
        next(chunks)
        os.kill(child.pid, sig)
        try:  # the stream ends (an error event, or it had finished): it never hangs
            for _ in chunks:
                pass
        except openai.APIError:
            pass
        child.wait(kit.HANG_S)
        deadline = time.monotonic() + kit.HANG_S
        while (health := kit.raw_request(s.url, "GET", "/health")).status == 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert health.status == 503
        assert health.json()["status"] == "unavailable"
        assert f"crashed ({sig.name})" in health.json()["error"]
        with pytest.raises(openai.APIStatusError) as e:
            c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        assert e.value.status_code == 503
        assert e.value.response.headers.get("retry-after") == "1"
        assert [m.id for m in c.models.list().data] == [MODEL]
        assert kit.raw_request(s.url, "GET", "/metrics").status == 200
        assert s.proc.poll() is None  # the server itself is up
    assert s.proc.returncode is not None
    assert "Traceback" not in s.stderr.read_text()


def test_a_crashed_engine_is_restarted(kit: Any, serve_gguf: Path, tmp_path: Path) -> None:
    args = (str(serve_gguf), "-c", "256", "--restarts", "1", "--temp", "0")
    with kit.serve_cli(*args, env=dict(os.environ), cwd=tmp_path) as s:
        c = openai.OpenAI(base_url=s.url + "/v1", api_key="none", max_retries=0, timeout=120)
        ask: dict[str, Any] = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 4,
        }
        before = c.chat.completions.create(**ask).choices[0].message.content

        def crash() -> dict[str, Any]:
            """Kill the engine; /health's body once it has noticed."""
            child = engine_child(s.proc.pid)
            os.kill(child.pid, signal.SIGKILL)
            child.wait(kit.HANG_S)
            deadline = time.monotonic() + kit.HANG_S
            while (health := kit.raw_request(s.url, "GET", "/health")).status == 200:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            body: dict[str, Any] = health.json()
            return body

        def back() -> None:
            deadline = time.monotonic() + kit.HANG_S
            while kit.raw_request(s.url, "GET", "/health").status != 200:
                assert time.monotonic() < deadline
                time.sleep(0.05)

        first = engine_child(s.proc.pid).pid
        assert "crashed (SIGKILL); restarting in 1 s" in crash()["error"]
        back()
        assert engine_child(s.proc.pid).pid != first
        # the same model again: the same greedy reply, and the count starts over
        assert c.chat.completions.create(**ask).choices[0].message.content == before
        assert "restarting in 1 s" in crash()["error"]
        back()
        # a second crash with no request completed in between: left down
        down = crash()["error"]
        assert "crashed (SIGKILL)" in down and "restarting" not in down
        with pytest.raises(openai.APIStatusError) as e:
            c.chat.completions.create(**ask)
        assert e.value.status_code == 503
    assert "Traceback" not in s.stderr.read_text()


def test_load_errors_keep_their_exit_codes(kit: Any, tmp_path: Path) -> None:
    """The model loads in the child, but its refusal is the command's, one line."""
    from helpers import edgeglm

    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("not a model", encoding="utf-8")
    r = edgeglm("serve", str(not_gguf), "--port", "0", cwd=tmp_path)
    assert r.returncode == 4, r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
