"""GLM tool calls and thinking through the real server and the official openai client.

The backend is scripted (conftest.ScriptedBackend): it emits GLM-format text
split at awkward places, so what is tested is the server's parsing, template
handling and streaming, end to end over HTTP.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

import openai
import pytest

WEATHER = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    }
]
GLM45_CALL = (
    "<think>The user wants weather.\nI should call the tool.</think>\n"
    "Let me check.<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Beijing</arg_value>\n"
    "<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n</tool_call>"
)
SPLITS = [(1,), (1, 3, 2, 5), (2, 7), (4,), (9, 1)]


def client(url: str, **kw: Any) -> Any:
    """The official client (typed Any: these tests send what clients send, not its TypedDicts)."""
    return openai.OpenAI(
        base_url=url + "/v1", api_key=kw.pop("api_key", "none"), max_retries=0, timeout=120, **kw
    )


def ask_weather() -> list[dict[str, Any]]:
    return [{"role": "user", "content": "Weather in Beijing for 3 days?"}]


@pytest.mark.parametrize("sizes", SPLITS)
def test_glm45_tool_call_whole_and_streamed(kit: Any, sizes: tuple[int, ...]) -> None:
    backend = kit.ScriptedBackend([kit.pieces(GLM45_CALL, sizes)])
    with kit.serve_scripted(backend) as url:
        c = client(url)
        r = c.chat.completions.create(model="glm-test", messages=ask_weather(), tools=WEATHER)
        choice = r.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content == "Let me check."
        assert choice.message.reasoning_content == (
            "The user wants weather.\nI should call the tool."
        )
        calls = choice.message.tool_calls
        assert calls is not None and len(calls) == 1
        assert calls[0].function.name == "get_weather"
        assert json.loads(calls[0].function.arguments) == {"city": "Beijing", "days": 3}

        content, reasoning, finish = "", "", None
        args: dict[int, str] = {}
        names: dict[int, str] = {}
        for chunk in c.chat.completions.create(
            model="glm-test", messages=ask_weather(), tools=WEATHER, stream=True
        ):
            delta = chunk.choices[0].delta
            content += delta.content or ""
            reasoning += getattr(delta, "reasoning_content", None) or ""
            for tc in delta.tool_calls or []:
                if tc.function and tc.function.name:
                    names[tc.index] = tc.function.name
                args[tc.index] = args.get(tc.index, "") + (
                    (tc.function and tc.function.arguments) or ""
                )
            finish = chunk.choices[0].finish_reason or finish
        assert content == "Let me check."
        assert reasoning == "The user wants weather.\nI should call the tool."
        assert names == {0: "get_weather"}
        assert json.loads(args[0]) == {"city": "Beijing", "days": 3}
        assert finish == "tool_calls"
        # the tools reached the template, and nothing touched the model but one thread
        assert '"name": "get_weather"' in backend.prompts[0] or "get_weather" in backend.prompts[0]
    assert backend.threads == {"edgeglm-engine"}
    assert backend.closed


def test_two_calls_and_no_tools_means_no_parsing(kit: Any) -> None:
    two = (
        "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n</tool_call>"
        "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Rome</arg_value>\n</tool_call>"
    )
    backend = kit.ScriptedBackend([kit.pieces(two, (3,))])
    with kit.serve_scripted(backend) as url:
        c = client(url)
        r = c.chat.completions.create(model="glm-test", messages=ask_weather(), tools=WEATHER)
        calls = r.choices[0].message.tool_calls or []
        assert [json.loads(t.function.arguments)["city"] for t in calls] == ["Paris", "Rome"]
        assert len({t.id for t in calls}) == 2
        assert r.choices[0].message.content is None
        # tool_choice none: the tools are not offered, the text stays text
        r = c.chat.completions.create(
            model="glm-test", messages=ask_weather(), tools=WEATHER, tool_choice="none"
        )
        assert r.choices[0].message.tool_calls is None
        assert "<tool_call>" in (r.choices[0].message.content or "")
        assert "get_weather" not in backend.prompts[-1].split("<|user|>")[0]


@pytest.mark.parametrize("sizes", SPLITS)
def test_think_never_leaks_into_content(kit: Any, sizes: tuple[int, ...]) -> None:
    text = "<think>secret plan</think>\n\nThe answer is 4."
    backend = kit.ScriptedBackend([kit.pieces(text, sizes)])
    with kit.serve_scripted(backend) as url:
        c = client(url)
        msg = (
            c.chat.completions.create(
                model="glm-test", messages=[{"role": "user", "content": "2+2?"}]
            )
            .choices[0]
            .message
        )
        assert msg.content == "The answer is 4."
        assert msg.reasoning_content == "secret plan"
        deltas = []
        reasoning = ""
        for chunk in c.chat.completions.create(
            model="glm-test", messages=[{"role": "user", "content": "2+2?"}], stream=True
        ):
            d = chunk.choices[0].delta
            if d.content:
                deltas.append(d.content)
            reasoning += getattr(d, "reasoning_content", None) or ""
        assert "".join(deltas) == "The answer is 4."
        assert not any("think" in piece or "secret" in piece for piece in deltas)
        assert reasoning == "secret plan"


def test_history_reasoning_tool_results_and_arguments(kit: Any) -> None:
    """Third turn: earlier reasoning stays out of the prompt, string arguments
    from the client render through the template's .items(), tool results are
    observations, and the reply's think block still does not leak."""
    backend = kit.ScriptedBackend([kit.pieces("<think>third</think>It is sunny.", (2,))])
    messages: list[Any] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "<think>OLD-REASONING-1</think>Hello!"},
        {"role": "user", "content": "Weather in Beijing?"},
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": "CURRENT-LOOP-REASONING",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": '{"city": "Beijing", "days": 2}',
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 25C"},
    ]
    with kit.serve_scripted(backend) as url:
        r = client(url).chat.completions.create(model="glm-test", messages=messages, tools=WEATHER)
    prompt = backend.prompts[0]
    assert "OLD-REASONING-1" not in prompt
    assert "Hello!" in prompt
    assert "<think>CURRENT-LOOP-REASONING</think>" in prompt  # the loop after the last user turn
    assert "<arg_key>city</arg_key>\n<arg_value>Beijing</arg_value>" in prompt
    assert "<arg_key>days</arg_key>\n<arg_value>2</arg_value>" in prompt
    assert "<|observation|>\n<tool_response>\nsunny, 25C\n</tool_response>" in prompt
    assert prompt.endswith("<|assistant|>")
    assert r.choices[0].message.content == "It is sunny."
    assert r.choices[0].message.reasoning_content == "third"


def test_enable_thinking_false_reaches_the_template(kit: Any) -> None:
    backend = kit.ScriptedBackend([["Quick answer."]])
    with kit.serve_scripted(backend) as url:
        r = client(url).chat.completions.create(
            model="glm-test",
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"chat_template_kwargs": {"enable_thinking": False}},
        )
    assert backend.prompts[0].endswith("<|assistant|>\n<think></think>")
    assert "hi/nothink" in backend.prompts[0]
    assert r.choices[0].message.content == "Quick answer."


def test_thinking_forced_open_by_the_template(kit: Any) -> None:
    backend = kit.ScriptedBackend(
        [kit.pieces("pondering...</think>Done.", (3,))], template=kit.FORCED_THINK_TEMPLATE
    )
    with kit.serve_scripted(backend) as url:
        msg = (
            client(url)
            .chat.completions.create(model="glm-test", messages=[{"role": "user", "content": "go"}])
            .choices[0]
            .message
        )
    assert msg.content == "Done."
    assert msg.reasoning_content == "pondering..."


@pytest.mark.parametrize("sizes", SPLITS)
def test_glm4_format_tool_call(kit: Any, sizes: tuple[int, ...]) -> None:
    reply = 'get_weather\n{"city": "Beijing", "days": 1}'
    backend = kit.ScriptedBackend(
        [kit.pieces(reply, sizes), kit.pieces("\nIt is sunny in Beijing.", sizes)],
        template=kit.GLM4_TEMPLATE,
    )
    with kit.serve_scripted(backend) as url:
        c = client(url)
        r = c.chat.completions.create(model="glm-test", messages=ask_weather(), tools=WEATHER)
        calls = r.choices[0].message.tool_calls or []
        assert [t.function.name for t in calls] == ["get_weather"]
        assert json.loads(calls[0].function.arguments) == {"city": "Beijing", "days": 1}
        assert r.choices[0].finish_reason == "tool_calls"
        # the tools sat on a system message, as glm-4-9b-chat's template reads them
        assert backend.prompts[0].startswith("[gMASK]<sop><|system|>\n## get_weather")
        # the call and its result go back as GLM-4 renders them
        history = [
            *ask_weather(),
            {"role": "assistant", "content": None, "tool_calls": [calls[0].model_dump()]},
            {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny"},
        ]
        text = ""
        for chunk in c.chat.completions.create(
            model="glm-test", messages=history, tools=WEATHER, stream=True
        ):
            text += chunk.choices[0].delta.content or ""
            assert not chunk.choices[0].delta.tool_calls
        assert text == "It is sunny in Beijing."
    prompt = backend.prompts[1]
    assert '<|assistant|>get_weather\n{"city": "Beijing", "days": 1}' in prompt
    assert "<|observation|>\nsunny" in prompt


def test_template_that_fails_is_a_400(kit: Any) -> None:
    backend = kit.ScriptedBackend([["x"]], template=kit.BROKEN_TEMPLATE)
    with kit.serve_scripted(backend) as url, pytest.raises(openai.BadRequestError) as e:
        client(url).chat.completions.create(
            model="glm-test", messages=[{"role": "user", "content": "hi"}]
        )
    assert e.value.status_code == 400
    body: Any = e.value.body
    assert body["code"] == "template_error"
    assert "refuses every conversation" in body["message"]
    assert backend.prompts == []


def test_full_queue_is_503_with_retry_after(kit: Any) -> None:
    gate = threading.Event()
    backend = kit.ScriptedBackend([["a", "b"]], gate=gate)
    with kit.serve_scripted(backend, queue_size=1) as url:
        results: list[Any] = []

        def ask() -> None:
            results.append(
                client(url).chat.completions.create(
                    model="glm-test", messages=[{"role": "user", "content": "x"}]
                )
            )

        first = threading.Thread(target=ask)
        first.start()
        deadline = time.monotonic() + kit.HANG_S
        while not backend.emitted:  # the first is in the engine, held at the gate
            assert time.monotonic() < deadline
            time.sleep(0.02)
        second = threading.Thread(target=ask)
        second.start()
        while (
            "edgeglm_queue_depth 1.0" not in kit.raw_request(url, "GET", "/metrics").body.decode()
        ):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        r = kit.raw_request(
            url,
            "POST",
            "/v1/chat/completions",
            json.dumps({"messages": [{"role": "user", "content": "y"}]}).encode(),
        )
        assert r.status == 503
        assert r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "queue_full"
        gate.set()
        first.join(kit.HANG_S)
        second.join(kit.HANG_S)
        assert [x.choices[0].message.content for x in results] == ["ab", "ab"]
        assert kit.raw_request(url, "GET", "/health").status == 200


def test_client_leaving_mid_stream_stops_generation(kit: Any) -> None:
    long_reply = ["tok "] * 2000
    backend = kit.ScriptedBackend([long_reply, ["next"]], delay=0.005)
    with kit.serve_scripted(backend) as url:
        stream = client(url).chat.completions.create(
            model="glm-test", messages=[{"role": "user", "content": "talk"}], stream=True
        )
        for seen, _ in enumerate(stream, 1):
            if seen == 5:
                break
        stream.close()
        deadline = time.monotonic() + kit.HANG_S
        # the next request runs as soon as the abandoned generation has stopped
        r = client(url).chat.completions.create(
            model="glm-test", messages=[{"role": "user", "content": "again"}]
        )
        assert time.monotonic() < deadline
        assert r.choices[0].message.content == "next"
        metrics = kit.raw_request(url, "GET", "/metrics").body.decode()
    assert backend.emitted[0] < len(long_reply)
    assert "edgeglm_generations_cancelled_total 1.0" in metrics


def test_a_waiting_request_whose_client_left_never_runs(kit: Any) -> None:
    gate = threading.Event()
    backend = kit.ScriptedBackend([["first"], ["third"]], gate=gate)
    with kit.serve_scripted(backend) as url:
        results: list[Any] = []
        holder = threading.Thread(
            target=lambda: results.append(
                client(url).chat.completions.create(
                    model="glm-test", messages=[{"role": "user", "content": "1"}]
                )
            )
        )
        holder.start()
        deadline = time.monotonic() + kit.HANG_S
        while not backend.emitted:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        # a second request waits in the queue, then its client goes away
        host, port = url.removeprefix("http://").split(":")
        body = json.dumps({"messages": [{"role": "user", "content": "LEFT"}]}).encode()
        with socket.create_connection((host, int(port))) as s:
            s.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                + b"Content-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            while (
                "edgeglm_queue_depth 1.0"
                not in kit.raw_request(url, "GET", "/metrics").body.decode()
            ):
                assert time.monotonic() < deadline
                time.sleep(0.02)
        # the waiting request notices its client left, and leaves the line
        while (
            "edgeglm_queue_depth 0.0" not in kit.raw_request(url, "GET", "/metrics").body.decode()
        ):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        gate.set()
        holder.join(kit.HANG_S)
        r = client(url).chat.completions.create(
            model="glm-test", messages=[{"role": "user", "content": "3"}]
        )
        assert r.choices[0].message.content == "third"
        metrics = kit.raw_request(url, "GET", "/metrics").body.decode()
    assert not any("LEFT" in p for p in backend.prompts)
    assert len(backend.prompts) == 2
    assert 'edgeglm_requests_total{path="/v1/chat/completions",status="499"} 1.0' in metrics


CLOCK = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
    },
}
NAMED = {"type": "function", "function": {"name": "get_weather"}}


def streamed_calls(c: Any, **kw: Any) -> tuple[dict[int, str], dict[int, str], str | None]:
    """(names, arguments, finish_reason) of a streamed chat's tool calls."""
    names: dict[int, str] = {}
    args: dict[int, str] = {}
    finish = None
    for chunk in c.chat.completions.create(model="glm-test", stream=True, **kw):
        for tc in chunk.choices[0].delta.tool_calls or []:
            if tc.function and tc.function.name:
                names[tc.index] = tc.function.name
            args[tc.index] = args.get(tc.index, "") + (
                (tc.function and tc.function.arguments) or ""
            )
        finish = chunk.choices[0].finish_reason or finish
    return names, args, finish


@pytest.mark.parametrize("sizes", SPLITS[:3])
def test_required_tool_choice_is_enforced_not_only_rendered(
    kit: Any, sizes: tuple[int, ...]
) -> None:
    # The model is left to write only what follows "<tool_call>": the script
    # is what a model writes from there.
    rest = "get_time\n<arg_key>tz</arg_key>\n<arg_value>UTC</arg_value>\n</tool_call>"
    backend = kit.ScriptedBackend([kit.pieces(rest, sizes)])
    with kit.serve_scripted(backend) as url:
        c = client(url)
        ask = {"messages": ask_weather(), "tools": [*WEATHER, CLOCK], "tool_choice": "required"}
        r = c.chat.completions.create(model="glm-test", **ask)
        assert backend.prompts[0].endswith("<|assistant|>\n<think></think>\n<tool_call>")
        assert r.choices[0].finish_reason == "tool_calls"
        assert r.choices[0].message.content is None
        calls = r.choices[0].message.tool_calls or []
        assert [(t.function.name, json.loads(t.function.arguments)) for t in calls] == [
            ("get_time", {"tz": "UTC"})
        ]
        names, args, finish = streamed_calls(c, **ask)
        assert names == {0: "get_time"} and json.loads(args[0]) == {"tz": "UTC"}
        assert finish == "tool_calls"
        # "auto" leaves the reply to the model: nothing is appended
        c.chat.completions.create(model="glm-test", **{**ask, "tool_choice": "auto"})
        assert backend.prompts[-1].endswith("<|assistant|>")


def test_a_named_function_is_begun_with_its_name(kit: Any) -> None:
    rest = "<arg_key>city</arg_key>\n<arg_value>Oslo</arg_value>\n</tool_call>"
    backend = kit.ScriptedBackend([kit.pieces(rest, (2, 5))])
    with kit.serve_scripted(backend) as url:
        c = client(url)
        r = c.chat.completions.create(
            model="glm-test",
            messages=ask_weather(),
            tools=[*WEATHER, CLOCK],
            tool_choice=NAMED,
            # thinking off: the template already closed the reasoning
            extra_body={"chat_template_kwargs": {"enable_thinking": False}},
        )
        assert backend.prompts[0].endswith("<think></think>\n<tool_call>get_weather\n")
        assert backend.prompts[0].count("<think>") == 1
        calls = r.choices[0].message.tool_calls or []
        assert [(t.function.name, json.loads(t.function.arguments)) for t in calls] == [
            ("get_weather", {"city": "Oslo"})
        ]
        assert '"get_time"' not in backend.prompts[0]  # only the named tool is offered


def test_glm4_calls_are_forced_by_name_and_refused_when_ambiguous(kit: Any) -> None:
    backend = kit.ScriptedBackend(
        [kit.pieces('{"city": "Oslo"}', (3,))], template=kit.GLM4_TEMPLATE
    )
    with kit.serve_scripted(backend) as url:
        c = client(url)
        r = c.chat.completions.create(
            model="glm-test", messages=ask_weather(), tools=[*WEATHER, CLOCK], tool_choice=NAMED
        )
        assert backend.prompts[0].endswith("<|assistant|>get_weather\n")
        calls = r.choices[0].message.tool_calls or []
        assert [(t.function.name, json.loads(t.function.arguments)) for t in calls] == [
            ("get_weather", {"city": "Oslo"})
        ]
        with pytest.raises(openai.BadRequestError) as e:
            c.chat.completions.create(
                model="glm-test",
                messages=ask_weather(),
                tools=[*WEATHER, CLOCK],
                tool_choice="required",
            )
        assert e.value.status_code == 400
        assert "name" in e.value.message and len(backend.prompts) == 1
