"""``edgeglm serve --parallel N``: requests decode together in one llama.cpp
batch, each in its own sequence, with prompt-prefix reuse per slot (the real
command over llama.cpp and the glm4_moe fixture GGUF)."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

MODEL = "glm4_moe.gguf"
SLOTS = 4
CTX = 2048  # 512 tokens per slot (the fixture's trained context is 2048)


def client(url: str) -> Any:
    return openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def server(kit: Any, serve_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    cwd = tmp_path_factory.mktemp("slots-cwd")
    args = (
        str(serve_gguf),
        "-c",
        str(CTX),
        "--parallel",
        str(SLOTS),
        "--queue",
        "8",
        "--temp",
        "0",
    )
    with kit.serve_cli(*args, env=dict(os.environ), cwd=cwd) as s:
        yield s


def metric(kit: Any, url: str, name: str) -> float:
    text = kit.raw_request(url, "GET", "/metrics").body.decode()
    m = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert m, name
    return float(m.group(1))


def test_each_slot_has_its_share_of_the_context(kit: Any, server: Any) -> None:
    model = client(server.url).models.list().data[0]
    assert model.meta == {"n_ctx": CTX // SLOTS, "parallel": SLOTS, "backend": "llama.cpp"}
    assert f"{SLOTS} slot(s) of {CTX // SLOTS} tokens" in server.stderr.read_text()
    with pytest.raises(openai.BadRequestError) as e:
        client(server.url).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "word " * 800}], max_tokens=4
        )
    assert e.value.body["code"] == "context_length_exceeded"  # type: ignore[index]


def test_concurrent_requests_share_decode_batches(kit: Any, server: Any) -> None:
    count_before = metric(kit, server.url, "edgeglm_batch_sequences_count")
    sum_before = metric(kit, server.url, "edgeglm_batch_sequences_sum")
    replies: list[Any] = []
    lock = threading.Lock()

    def ask(i: int) -> None:
        r = client(server.url).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"question {i}"}], max_tokens=48
        )
        with lock:
            replies.append(r)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(SLOTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(kit.HANG_S)
    assert not any(t.is_alive() for t in threads)
    assert len(replies) == SLOTS
    for r in replies:
        assert r.choices[0].finish_reason in ("stop", "length")
        assert r.usage.completion_tokens <= 48
    decodes = metric(kit, server.url, "edgeglm_batch_sequences_count") - count_before
    sampled = metric(kit, server.url, "edgeglm_batch_sequences_sum") - sum_before
    assert sampled == sum(r.usage.completion_tokens for r in replies)
    assert sampled > decodes  # some decodes carried more than one sequence


def test_prompt_prefix_is_reused(kit: Any, server: Any) -> None:
    history = [{"role": "user", "content": "a long shared conversation opening " * 4}]
    c = client(server.url)
    first = c.chat.completions.create(model=MODEL, messages=history, max_tokens=4)
    before = metric(kit, server.url, "edgeglm_prompt_tokens_cached_total")
    again = c.chat.completions.create(model=MODEL, messages=history, max_tokens=4)
    reused = metric(kit, server.url, "edgeglm_prompt_tokens_cached_total") - before
    assert reused == again.usage.prompt_tokens - 1  # all but the token that makes logits
    assert again.choices[0].message.content == first.choices[0].message.content


def test_a_client_leaving_frees_its_slot(kit: Any, server: Any) -> None:
    c = client(server.url)
    before = metric(kit, server.url, "edgeglm_generations_cancelled_total")
    streams = [
        c.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": f"s{i}"}],
            max_tokens=490,
            stream=True,
        )
        for i in range(SLOTS)
    ]
    for s in streams:  # every slot busy, then every client leaves after its first chunk
        next(iter(s))
        s.close()
    deadline = time.monotonic() + kit.HANG_S
    # the first streams opened are abandoned long before their 490 tokens
    while metric(kit, server.url, "edgeglm_generations_cancelled_total") < before + 1:
        assert time.monotonic() < deadline, "abandoned generations kept running"
        time.sleep(0.05)
    r = c.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=3
    )
    assert r.choices[0].finish_reason in ("stop", "length")
    assert metric(kit, server.url, "edgeglm_requests_running") == 0


def test_load_with_slots(kit: Any, server: Any) -> None:
    outcomes: list[str] = []
    lock = threading.Lock()
    jobs = iter(range(100))

    def worker() -> None:
        c = client(server.url)
        while (i := next(jobs, None)) is not None:
            try:
                text = ""
                for chunk in c.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": f"load {i}"}],
                    max_tokens=8,
                    stream=True,
                ):
                    text += chunk.choices[0].delta.content or ""
                outcome = "ok"
            except openai.APIStatusError as e:
                outcome = str(e.status_code)
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(kit.HANG_S * 5)
    assert not any(t.is_alive() for t in threads), "a client hung"
    assert len(outcomes) == 100 and set(outcomes) <= {"ok", "503"}
    assert kit.raw_request(server.url, "GET", "/health").status == 200
    assert metric(kit, server.url, "edgeglm_queue_depth") == 0
