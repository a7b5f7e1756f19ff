"""The real ``edgeglm serve`` (a subprocess) over llama.cpp with the glm4_moe
fixture GGUF, driven by the official openai client and by raw HTTP: chat and
completions (plain and streamed), models, every bad-request case, API keys,
the command's own refusals, and a load test.

The fixture model is tiny and random: what it says is noise, so the tests
check shapes, counts and agreement (greedy streamed == greedy whole), never text.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from helpers import edgeglm

MODEL = "glm4_moe.gguf"
N_CTX = 256


def client(url: str, key: str = "none") -> Any:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def server(kit: Any, serve_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    cwd = tmp_path_factory.mktemp("serve-cwd")
    args = (str(serve_gguf), "-c", str(N_CTX), "--queue", "4", "--temp", "0", "-t", "2")
    with kit.serve_cli(*args, env=dict(os.environ), cwd=cwd) as s:
        yield s


def chat(url: str, **kw: Any) -> Any:
    kw.setdefault("model", MODEL)
    kw.setdefault("messages", [{"role": "user", "content": "def add(a, b):"}])
    kw.setdefault("max_tokens", 12)
    return client(url).chat.completions.create(**kw)


def counts(kit: Any, url: str) -> dict[tuple[str, str], float]:
    text = kit.raw_request(url, "GET", "/metrics").body.decode()
    found = re.findall(r'edgeglm_requests_total\{path="([^"]+)",status="(\d+)"\} (\S+)', text)
    return {(p, s): float(v) for p, s, v in found}


def test_models_and_health(kit: Any, server: Any) -> None:
    models = client(server.url).models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert kit.raw_request(server.url, "GET", "/health").json() == {"status": "ok"}


def test_chat_plain_and_streamed_agree(server: Any) -> None:
    r = chat(server.url)
    assert r.object == "chat.completion"
    assert r.model == MODEL
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 12 and r.usage.prompt_tokens > 0
    whole = r.choices[0].message.content
    assert isinstance(whole, str)
    text, finishes = "", []
    for chunk in chat(server.url, stream=True, stream_options={"include_usage": True}):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finishes.append(chunk.choices[0].finish_reason)
        else:
            assert chunk.usage.completion_tokens == r.usage.completion_tokens
    assert text == whole  # greedy (--temp 0): the same reply either way
    assert finishes[-1] == r.choices[0].finish_reason


def test_completions_plain_and_streamed(server: Any) -> None:
    c = client(server.url)
    r = c.completions.create(model=MODEL, prompt="import os\n", max_tokens=8)
    assert r.object == "text_completion"
    assert r.usage.completion_tokens <= 8
    text, usage = "", []
    for ch in c.completions.create(
        model=MODEL,
        prompt="import os\n",
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    ):
        if ch.choices:
            text += ch.choices[0].text
        else:  # the last chunk: usage alone, as OpenAI sends it
            usage.append(ch.usage)
    assert text == r.choices[0].text
    assert [u.completion_tokens for u in usage] == [r.usage.completion_tokens]
    assert usage[0].prompt_tokens == r.usage.prompt_tokens


def _error(reply: Any) -> dict[str, Any]:
    body = reply.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b"{not json", 400, None),
        (b"\xff\xfe", 400, None),
        (b'{"messages": "hello"}', 400, "messages"),
        (b'{"messages": []}', 400, "messages"),
        (b'{"messages": [{"role": "wizard", "content": "x"}]}', 400, "messages.0.role"),
        (
            b'{"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}',
            400,
            "temperature",
        ),
        (b'{"messages": [{"role": "user", "content": "x"}], "temperature": -1}', 400, None),
        (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}', 400, "max_tokens"),
        (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}', 400, "max_tokens"),
        (
            b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 1000000000}',
            400,
            "max_tokens",
        ),
        (b'{"messages": [{"role": "user", "content": "x"}], "n": 2}', 400, "n"),
        (b'{"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]}', 404, "model"),
    ],
)
def test_bad_chat_requests(
    kit: Any, server: Any, body: bytes, status: int, param: str | None
) -> None:
    r = kit.raw_request(server.url, "POST", "/v1/chat/completions", body)
    assert r.status == status, r.body
    error = _error(r)
    assert error["param"] == param
    assert error["type"] == ("not_found_error" if status == 404 else "invalid_request_error")


def test_bad_completion_requests(kit: Any, server: Any) -> None:
    for body in (b'{"prompt": 5}', b'{"prompt": ""}', b'{"prompt": ["a", "b"]}', b"[]"):
        r = kit.raw_request(server.url, "POST", "/v1/completions", body)
        assert r.status == 400, (body, r.body)
        _error(r)


def test_prompt_longer_than_the_context(kit: Any, server: Any) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        chat(server.url, messages=[{"role": "user", "content": "word " * 2000}])
    assert e.value.body["code"] == "context_length_exceeded"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        client(server.url).completions.create(model=MODEL, prompt="word " * 2000, max_tokens=4)
    assert kit.raw_request(server.url, "GET", "/health").status == 200


def test_unknown_model_with_the_client(server: Any) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        chat(server.url, model="glm-9000")
    assert e.value.body["code"] == "model_not_found"  # type: ignore[index]


@pytest.mark.parametrize("chunked", [False, True])
def test_body_over_the_limit_is_413(kit: Any, server: Any, chunked: bool) -> None:
    from edgeglm.server.app import MAX_BODY_BYTES

    big = json.dumps(
        {"messages": [{"role": "user", "content": "x" * (MAX_BODY_BYTES + 10)}]}
    ).encode()
    r = kit.raw_request(server.url, "POST", "/v1/chat/completions", big, chunked=chunked)
    assert r.status == 413
    assert _error(r)["code"] == "body_too_large"
    assert kit.raw_request(server.url, "GET", "/health").status == 200


def test_unknown_path_is_an_openai_404(kit: Any, server: Any) -> None:
    r = kit.raw_request(server.url, "GET", "/v1/nothing")
    assert r.status == 404
    _error(r)


def test_load_200_requests_16_clients(kit: Any, server: Any) -> None:
    """Each request gets a whole answer or a 503; nothing hangs; the server
    answers afterwards; /metrics counts add up."""
    before = counts(kit, server.url)
    outcomes: list[str] = []
    lock = threading.Lock()
    jobs = iter(range(200))

    def worker() -> None:
        c = client(server.url)
        while True:
            with lock:
                i = next(jobs, None)
            if i is None:
                return
            try:
                if i % 3 == 0:
                    finish = None
                    for chunk in c.chat.completions.create(
                        model=MODEL,
                        messages=[{"role": "user", "content": f"request {i}"}],
                        max_tokens=6,
                        stream=True,
                    ):
                        finish = chunk.choices[0].finish_reason or finish
                    ok = finish in ("stop", "length")
                else:
                    r = c.chat.completions.create(
                        model=MODEL,
                        messages=[{"role": "user", "content": f"request {i}"}],
                        max_tokens=6,
                    )
                    ok = r.choices[0].finish_reason in ("stop", "length")
                outcome = "ok" if ok else "incomplete"
            except openai.APIStatusError as e:
                outcome = str(e.status_code)
                if e.status_code == 503:
                    assert e.response.headers.get("retry-after") == "1"
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(kit.HANG_S * 5)
    assert not any(t.is_alive() for t in threads), "a client hung"
    assert len(outcomes) == 200
    assert set(outcomes) <= {"ok", "503"}, sorted(set(outcomes))
    assert outcomes.count("ok") > 0
    assert chat(server.url).choices[0].finish_reason in ("stop", "length")
    after = counts(kit, server.url)
    path = "/v1/chat/completions"

    def grew(status: str) -> float:
        return after.get((path, status), 0.0) - before.get((path, status), 0.0)

    assert grew("200") == outcomes.count("ok") + 1  # + the check just above
    assert grew("503") == outcomes.count("503")
    metrics = kit.raw_request(server.url, "GET", "/metrics").body.decode()
    assert "edgeglm_queue_depth 0.0" in metrics
    assert re.search(r"edgeglm_time_to_first_token_seconds_count \d+", metrics)


# -- keys ----------------------------------------------------------------------------


def test_api_key(kit: Any, serve_gguf: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("s3cret-key\n", encoding="utf-8")
    with kit.serve_cli(
        str(serve_gguf),
        "-c",
        "128",
        "--api-key-file",
        str(key_file),
        env=dict(os.environ),
        cwd=tmp_path,
    ) as s:
        for bad in ("none", "s3cret-kez", "s3cret-key-and-more"):
            with pytest.raises(openai.AuthenticationError) as e:
                client(s.url, bad).models.list()
            assert e.value.body["type"] == "authentication_error"  # type: ignore[index]
        assert [m.id for m in client(s.url, "s3cret-key").models.list().data] == [MODEL]
        r = kit.raw_request(s.url, "GET", "/v1/models", headers={"X-Api-Key": "s3cret-key"})
        assert r.status == 200
        r = kit.raw_request(s.url, "GET", "/v1/models")
        assert r.status == 401
        assert _error(r)["code"] == "invalid_api_key"
        assert kit.raw_request(s.url, "GET", "/metrics").status == 401
        assert kit.raw_request(s.url, "GET", "/health").status == 200  # open
        r = kit.raw_request(
            s.url, "POST", "/v1/chat/completions", b"{}", headers={"Authorization": "Bearer wrong"}
        )
        assert r.status == 401


def test_listening_beyond_loopback_without_a_key_warns(
    kit: Any, serve_gguf: Path, tmp_path: Path
) -> None:
    with kit.serve_cli(
        str(serve_gguf), "-c", "128", "--host", "0.0.0.0", env=dict(os.environ), cwd=tmp_path
    ) as s:
        assert "WARNING: listening on 0.0.0.0 without an API key" in s.stderr.read_text()
    with kit.serve_cli(str(serve_gguf), "-c", "128", env=dict(os.environ), cwd=tmp_path) as s:
        assert "WARNING" not in s.stderr.read_text()


# -- the command's refusals (nothing is loaded) ----------------------------------------


def test_serve_refuses_bad_flags(serve_gguf: Path, tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    empty = tmp_path / "empty-key"
    empty.write_text("\n", encoding="utf-8")
    cases = [
        (["--api-key", "a", "--api-key-file", str(empty)], "not both"),
        (["--api-key-file", str(empty)], "the file is empty"),
        (["--api-key-file", str(tmp_path / "missing")], "cannot read"),
        (["--parallel", "0"], "--parallel"),
        (["--queue", "-1"], "--queue"),
        (["--port", "70000"], "--port"),
        (["--port", str(busy.getsockname()[1])], "cannot listen"),
        (["--temp", "-1"], "temperature"),
        (["-c", "0"], "--ctx-size"),
        (["-ot", "x"], "PATTERN=DEVICE"),
        (["-ngl", "-1"], "--n-gpu-layers"),
    ]
    try:
        for args, said in cases:
            r = edgeglm("serve", str(serve_gguf), *args, cwd=tmp_path)
            assert r.returncode == 2, (args, r.stderr)
            assert said in r.stderr, (args, r.stderr)
            assert "Traceback" not in r.stderr
            assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    finally:
        busy.close()
    r = edgeglm("serve", str(tmp_path / "nope.gguf"), cwd=tmp_path)
    assert r.returncode == 3, r.stderr


def test_placement_flags_reach_llama_cpp(kit: Any, serve_gguf: Path, tmp_path: Path) -> None:
    # run's llama.cpp placement flags, on serve too: the engine child loads
    # with them, and the startup line shows what it loaded as llama-server flags
    args = (str(serve_gguf), "-c", str(N_CTX), "--cpu-moe", "-ngl", "0", "-t", "1")
    with kit.serve_cli(*args, env=dict(os.environ), cwd=tmp_path) as s:
        r = chat(s.url, max_tokens=2, temperature=0)
        assert r.choices[0].finish_reason in ("stop", "length")
        launch = [
            line
            for line in s.stderr.read_text(encoding="utf-8").splitlines()
            if line.startswith("launch:")
        ]
    assert len(launch) == 1, launch
    flags = launch[0].split()
    assert flags[flags.index("-ot") + 1] == r"\.ffn_(up|down|gate|gate_up)_(ch|)exps=CPU"
    assert flags[flags.index("-ngl") + 1] == "0" and flags[flags.index("-t") + 1] == "1"


def test_slots_split_the_context_each_within_the_trained_one(
    kit: Any, serve_gguf: Path, tmp_path: Path
) -> None:
    # -c is shared by the slots (llama-server's -np): 2 slots of the trained
    # 2048 tokens are fine, a context that gives each slot more is refused
    r = edgeglm("serve", str(serve_gguf), "-c", "4098", "--parallel", "2", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "each 2049 tokens" in r.stderr and "-c 4096 or less" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    args = (str(serve_gguf), "-c", "4096", "--parallel", "2", "-t", "1")
    with kit.serve_cli(*args, env=dict(os.environ), cwd=tmp_path) as s:
        assert "2 slot(s) of 2048 tokens" in s.stderr.read_text(encoding="utf-8")
        assert chat(s.url, max_tokens=2).choices[0].finish_reason in ("stop", "length")
