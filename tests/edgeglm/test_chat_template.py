"""Chat templates render in a bounded worker process: same text as before for real
templates, a one-line CheckpointError for every template bomb, and a load path
(llama-cpp-python's own template compiler) that never touches the template."""

from __future__ import annotations

import json
import re
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import HF_FIXTURES
from malformed.templates import EXPECTED, TEMPLATES, build_template_cases, llama_load

from edgeglm.backends.isolated import run_isolated
from edgeglm.chat import FALLBACK_TEMPLATE, render
from edgeglm.chat_template import worker
from edgeglm.errors import CheckpointError, UsageError

DEMO = Path(__file__).parents[2] / "edgeglm" / "demo_model"

# GLM-4.5-style: macros, tools as JSON, reasoning blocks, enable_thinking.
NO_THINK = "(enable_thinking is defined and not enable_thinking)"
GLM45_LIKE = """[gMASK]<sop>
{%- macro visible_text(content) -%}
{%- if content is string -%}{{- content }}
{%- elif content is iterable and content is not mapping -%}
{%- for item in content -%}{%- if item is mapping and item.type == 'text' -%}{{- item.text }}
{%- elif item is string -%}{{- item }}{%- endif -%}{%- endfor -%}
{%- else -%}{{- content }}{%- endif -%}
{%- endmacro -%}
{%- if tools -%}<|system|>
# Tools
{% for tool in tools %}{{ tool | tojson }}
{% endfor %}{%- endif -%}
{%- for m in messages -%}
{%- if m.role == 'user' -%}<|user|>
{{ visible_text(m.content) }}{{- '/nothink' if NO_THINK else '' -}}
{%- elif m.role == 'assistant' -%}<|assistant|>
{%- if m.reasoning_content %}
<think>{{ m.reasoning_content.strip() }}</think>{% else %}
<think></think>{% endif %}
{{ visible_text(m.content).strip() }}
{%- elif m.role == 'system' -%}<|system|>
{{ visible_text(m.content) }}
{%- elif m.role == 'tool' or m.role == 'observation' -%}<|observation|>
<tool_response>
{{ m.content }}
</tool_response>
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}<|assistant|>{{- '\\n<think></think>' if NO_THINK else '' -}}
{%- endif -%}""".replace("NO_THINK", NO_THINK)

CONVERSATIONS: list[list[dict[str, Any]]] = [
    [{"role": "user", "content": "Hi"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Héllo, 世界 <|user|>"},
        {"role": "assistant", "content": "Hello.", "reasoning_content": " thought "},
        {"role": "user", "content": [{"type": "text", "text": "parts"}, "and text"]},
    ],
    [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "calling"},
        {"role": "observation", "content": '{"temp": 21}'},
        {"role": "tool", "content": "done"},
    ],
]


def _templates() -> dict[str, str]:
    found = {"glm45_like": GLM45_LIKE, "fallback": FALLBACK_TEMPLATE}
    for folder in [DEMO, *sorted(p for p in HF_FIXTURES.iterdir() if p.is_dir())]:
        cfg = folder / "tokenizer_config.json"
        if cfg.is_file():
            found[folder.name] = json.loads(cfg.read_text(encoding="utf-8"))["chat_template"]
    return found


def _in_process(template: str, **context: Any) -> str:
    """How EdgeGLM rendered templates before the worker: Jinja's immutable sandbox, here."""
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=False, lstrip_blocks=False)

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env.globals["raise_exception"] = raise_exception
    return str(env.from_string(template).render(**context))


@pytest.mark.parametrize("name", sorted(_templates()))
def test_real_templates_render_as_they_did_in_process(name: str) -> None:
    template = _templates()[name]
    tools = [{"name": "get_weather", "parameters": {"city": {"type": "string"}}}]
    extras: list[dict[str, Any]] = [{}, {"enable_thinking": False, "tools": tools}]
    for messages in CONVERSATIONS:
        for extra in extras:
            for gen in (True, False):
                before = _in_process(
                    template, messages=messages, add_generation_prompt=gen, **extra
                )
                if not before.startswith("[gMASK]<sop>"):
                    before = "[gMASK]<sop>" + before  # render adds GLM's prefix
                assert render(messages, template, add_generation_prompt=gen, **extra) == before


def test_the_worker_is_started_once_and_reused() -> None:
    render([{"role": "user", "content": "a"}], None)
    pid = worker().pid
    assert pid is not None
    for i in range(20):
        assert render([{"role": "user", "content": str(i)}], None).endswith(f"{i}<|assistant|>\n")
    assert worker().pid == pid


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/limits")
def test_the_worker_runs_under_an_address_space_limit() -> None:
    render([{"role": "user", "content": "a"}], None)
    limits = Path(f"/proc/{worker().pid}/limits").read_text()
    row = next(line for line in limits.splitlines() if line.startswith("Max address space"))
    soft = row.split()[3]
    assert worker().memory_limited and soft != "unlimited"
    assert int(soft) < 4 * 2**30  # far below the 5 GiB a bomb asks for


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_template_bomb_is_one_line_and_bounded(name: str) -> None:
    # bounded by the worker's own limits: the render's 3 s, its memory cap
    with pytest.raises(CheckpointError) as info:
        render([{"role": "user", "content": "Hello"}], TEMPLATES[name], timeout=3)
    message = str(info.value)
    assert "\n" not in message and message.startswith("the model's chat template is broken: ")
    assert re.search(EXPECTED[name], message), message
    # the next render works (a killed or crashed worker is replaced)
    assert render([{"role": "user", "content": "ok"}], None).endswith("ok<|assistant|>\n")


def test_a_five_gib_string_is_refused_not_allocated() -> None:
    # Jinja would fold it while compiling and again at render; under the
    # worker's limit both fail at the first allocation, at once
    with pytest.raises(CheckpointError, match="more memory than the limit of 1024 MiB"):
        render([{"role": "user", "content": "x"}], TEMPLATES["string_repetition"])


def test_renders_from_many_threads_at_once() -> None:
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            results[i] = render([{"role": "user", "content": f"thread {i}"}], GLM45_LIKE)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert all(results[i].endswith(f"thread {i}<|assistant|>") for i in range(8))


def test_request_that_cannot_cross_to_the_worker_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="cannot be passed"):
        render([{"role": "user", "content": "x"}], None, when=object())


def test_message_text_must_be_valid_utf8() -> None:
    with pytest.raises(UsageError, match="not valid UTF-8"):
        render([{"role": "user", "content": "caf\udce9"}], None)


def test_llama_cpp_loads_every_bomb_without_compiling_its_template(tmp_path: Path) -> None:
    """llama-cpp-python compiles GGUF templates while loading (a syntax error
    raised, a constant-folding bomb hung or ate gigabytes); EdgeGLM's load skips that."""
    cases = build_template_cases(tmp_path)
    loaded = run_isolated(llama_load, [str(p) for p in cases.values()], what="loading", timeout=300)
    assert loaded == [TEMPLATES[name] for name in cases]
