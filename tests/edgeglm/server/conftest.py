"""Servers for the serve tests, always shut down: a real uvicorn on 127.0.0.1
with an ephemeral port, in a thread (over a scripted backend) or as the real
``edgeglm serve`` command in a subprocess (over llama.cpp and a fixture GGUF).

The scripted backend implements the Backend protocol and emits predetermined
GLM-format text piece by piece, split wherever a test chooses (mid-tag,
mid-name); it records every prompt it was given and the thread of every call.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import uvicorn

from edgeglm.backends.base import Capabilities, Chunk, Completion, SamplingParams, Timings
from edgeglm.server.app import ServerConfig, build_app

# Guards against a hang only; nothing here measures time.
HANG_S = 120.0

# A GLM-4.5-style template, written for these tests: tools in a system block,
# calls as <tool_call> with <arg_key>/<arg_value> (arguments iterated with
# .items(), as GLM-4.5's own template does), tool results as observations,
# reasoning kept only after the last user turn, enable_thinking honoured.
GLM45_TEMPLATE = """[gMASK]<sop>
{%- if tools -%}<|system|>
# Tools
{% for tool in tools %}{{ tool | tojson }}
{% endfor %}Call as <tool_call>name<arg_key>k</arg_key><arg_value>v</arg_value></tool_call>
{%- endif -%}
{%- set ns = namespace(last_user=-1) -%}
{%- for m in messages %}{% if m.role == 'user' %}{% set ns.last_user = loop.index0 %}
{%- endif %}{% endfor -%}
{%- for m in messages -%}
{%- if m.role == 'system' -%}<|system|>
{{ m.content }}
{%- elif m.role == 'user' -%}<|user|>
{{ m.content }}{{ '/nothink' if enable_thinking is defined and not enable_thinking else '' }}
{%- elif m.role == 'assistant' -%}<|assistant|>
{%- if loop.index0 > ns.last_user and m.reasoning_content -%}
<think>{{ m.reasoning_content }}</think>
{%- else %}
<think></think>
{%- endif %}
{{ m.content }}
{%- for tc in m.tool_calls or [] %}
<tool_call>{{ tc.function.name }}
{% for k, v in tc.function.arguments.items() %}<arg_key>{{ k }}</arg_key>
<arg_value>{{ v if v is string else v | tojson }}</arg_value>
{% endfor %}</tool_call>
{%- endfor %}
{%- elif m.role == 'tool' -%}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}<|observation|>{% endif %}
<tool_response>
{{ m.content }}
</tool_response>
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}<|assistant|>
{{- '\\n<think></think>' if enable_thinking is defined and not enable_thinking else '' -}}
{%- endif -%}"""

# GLM-4's format (glm-4-9b-chat): tools on a system message, a call rendered as
# <|assistant|>{name}\n{json}, results as <|observation|>.
GLM4_TEMPLATE = """[gMASK]<sop>
{%- for m in messages -%}
{%- if m.tools is defined -%}<|system|>
{% for t in m.tools %}## {{ t.function.name }}
{{ t.function | tojson }}
{% endfor %}{{ m.content }}
{%- elif m.role == 'assistant' and m.metadata -%}<|assistant|>{{ m.metadata }}
{{ m.content }}
{%- else -%}<|{{ m.role }}|>
{{ m.content }}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt %}<|assistant|>{% endif -%}"""

# A template whose generation prompt opens the reasoning itself (thinking forced on).
FORCED_THINK_TEMPLATE = (
    "[gMASK]<sop>{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n<think>{% endif %}"
)

BROKEN_TEMPLATE = "{{ raise_exception('this template refuses every conversation') }}"


Script = list[str]


@dataclass
class ScriptedBackend:
    """The Backend protocol over scripted replies: one byte, one token."""

    replies: list[Script] = field(default_factory=list)  # used in turn, the last repeated
    template: str | None = GLM45_TEMPLATE
    n_ctx: int = 4096
    delay: float = 0.0  # seconds between pieces
    gate: threading.Event | None = None  # generation waits here before its first piece
    name: str = "scripted"
    capabilities: Capabilities = field(default_factory=lambda: Capabilities(logits=False))
    prompts: list[str] = field(default_factory=list)
    threads: set[str] = field(default_factory=set)
    emitted: list[int] = field(default_factory=list)  # pieces emitted, per generation
    closed: bool = False

    def _touch(self) -> None:
        self.threads.add(threading.current_thread().name)

    def tokenize(self, text: str, *, special: bool = False) -> list[int]:
        self._touch()
        return list(text.encode("utf-8"))

    def detokenize(self, tokens: list[int]) -> str:
        return bytes(tokens).decode("utf-8", errors="replace")

    def chat_template(self) -> str | None:
        return self.template

    def generate(
        self, prompt: list[int], params: SamplingParams
    ) -> Generator[Chunk, None, Completion]:
        self._touch()
        self.prompts.append(bytes(prompt).decode("utf-8"))
        script = self.replies[min(len(self.prompts) - 1, len(self.replies) - 1)]
        index = len(self.emitted)
        self.emitted.append(0)
        if self.gate is not None:
            self.gate.wait(HANG_S)
        finish = "stop"
        out: list[str] = []
        for piece in script:
            if len(out) >= params.max_tokens:
                finish = "length"
                break
            if self.delay:
                time.sleep(self.delay)
            out.append(piece)
            self.emitted[index] += 1
            yield Chunk(piece, [len(out)])
        timings = Timings(prompt_tokens=len(prompt), completion_tokens=len(out))
        return Completion("".join(out), list(range(len(out))), finish, timings)

    def score(self, tokens: list[int]) -> npt.NDArray[np.float32]:
        raise NotImplementedError

    def close(self) -> None:
        self._touch()
        self.closed = True


def pieces(text: str, sizes: tuple[int, ...] = (1, 3, 2, 5)) -> Script:
    """``text`` cut into pieces of cycling sizes: tags split at awkward places."""
    out, i, k = [], 0, 0
    while i < len(text):
        n = sizes[k % len(sizes)]
        out.append(text[i : i + n])
        i, k = i + n, k + 1
    return out


@contextmanager
def serve_thread(model: Any, config: ServerConfig) -> Iterator[str]:
    """``build_app(model, config)`` under a real uvicorn in a thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(build_app(model, config), log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + HANG_S
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(HANG_S)
        sock.close()
        assert not thread.is_alive(), "server did not stop"


def serve_scripted(backend: ScriptedBackend, **config: Any) -> Any:
    """A context manager: ``backend`` served in a thread (model id "glm-test"); yields the URL."""
    config.setdefault("model_id", "glm-test")
    return serve_thread(backend, ServerConfig(**config))


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def raw_request(
    url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    chunked: bool = False,
) -> Reply:
    """One HTTP request with exactly these bytes (no client-side checks)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=HANG_S)
    try:
        if chunked and body is not None:
            conn.putrequest(method, path)
            for k, v in (headers or {}).items():
                conn.putheader(k, v)
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            step = 1 << 16
            try:
                for i in range(0, len(body), step):
                    part = body[i : i + step]
                    conn.send(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                conn.send(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered early and closed: read its answer
        else:
            conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


@dataclass
class CliServer:
    url: str
    proc: subprocess.Popen[str]
    stderr: Path


@contextmanager
def serve_cli(*args: str, env: dict[str, str], cwd: Path) -> Iterator[CliServer]:
    """The real ``edgeglm serve ... --port 0`` in a subprocess; stopped with SIGINT."""
    log = cwd / f"serve-{os.getpid()}-{time.monotonic_ns()}.log"
    with open(log, "w", encoding="utf-8") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgeglm", "serve", *args, "--port", "0"],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
        )
    try:
        deadline = time.monotonic() + HANG_S
        url = None
        while url is None:
            text = log.read_text(encoding="utf-8", errors="replace")
            m = re.search(r"on http://[^:]+:(\d+)/v1", text)
            if m:
                url = f"http://127.0.0.1:{m.group(1)}"
                break
            assert proc.poll() is None, f"edgeglm serve exited {proc.returncode}: {text}"
            assert time.monotonic() < deadline, f"edgeglm serve did not start: {text}"
            time.sleep(0.1)
        # "serving ..." is printed just before uvicorn starts: wait for /health
        while True:
            try:
                if raw_request(url, "GET", "/health").status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "edgeglm serve never answered /health"
            time.sleep(0.1)
        yield CliServer(url, proc, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(HANG_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Kit:
    """What the test modules share (conftest.py is not importable in importlib mode)."""

    ScriptedBackend = ScriptedBackend
    pieces = staticmethod(pieces)
    serve_scripted = staticmethod(serve_scripted)
    serve_cli = staticmethod(serve_cli)
    raw_request = staticmethod(raw_request)
    GLM45_TEMPLATE = GLM45_TEMPLATE
    GLM4_TEMPLATE = GLM4_TEMPLATE
    FORCED_THINK_TEMPLATE = FORCED_THINK_TEMPLATE
    BROKEN_TEMPLATE = BROKEN_TEMPLATE
    HANG_S = HANG_S


@pytest.fixture(scope="session")
def kit() -> type[Kit]:
    return Kit


@pytest.fixture(scope="session")
def serve_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The glm4_moe fixture as Q8_0 (a real GGUF with a GLM chat template)."""
    from helpers import HF_FIXTURES

    from edgeglm.converters.gguf.convert import convert

    out = tmp_path_factory.mktemp("serve") / "glm4_moe.gguf"
    return convert(HF_FIXTURES / "glm4_moe", out, "Q8_0").output
