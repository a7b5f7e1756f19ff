"""Chat prompts from the model's own template, and GLM's reply conventions.

Templates come with the model (GGUF ``tokenizer.chat_template`` or
tokenizer_config.json) and are untrusted programs: they render in Jinja's
immutable sandbox inside a worker process with time and memory limits
(chat_template.py); a template that fails there is the model file's fault
(CheckpointError, exit 4). GLM specifics live here and nowhere else: the
``[gMASK]<sop>`` prefix, ``<|user|>``/``<|observation|>`` as end-of-turn, and
the ``<think>…</think>`` reasoning block of GLM-4.5 and later.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgeglm.backends.base import check_text
from edgeglm.chat_template import RENDER_TIMEOUT_S, render_template
from edgeglm.errors import CheckpointError, UsageError

GLM_PREFIX = "[gMASK]<sop>"
# Tokens that end an assistant turn in every GLM chat format.
GLM_STOP_TOKENS = ("<|endoftext|>", "<|user|>", "<|observation|>")
# Used when a model ships no template (GLM-4 format, as llama.cpp's built-in "chatglm4").
FALLBACK_TEMPLATE = (
    GLM_PREFIX + "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
_THINK = re.compile(r"<think>(.*?)(</think>|$)", re.DOTALL)


ROLES = ("system", "user", "assistant", "observation", "tool")


def check_messages(messages: Sequence[Mapping[str, Any]]) -> None:
    """Known roles, and valid UTF-8 in every string of every message (content may
    be text or OpenAI-style parts): what a chat request must be before it renders."""
    for i, m in enumerate(messages):
        if m.get("role") not in ROLES:
            raise UsageError(f"unknown chat role {m.get('role')!r}")
        _check_strings(m, f"the {m['role']} message" + (f" #{i + 1}" if i else ""))


def _check_strings(value: Any, what: str) -> None:
    if isinstance(value, str):
        check_text(value, what)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            _check_strings(k, what)
            _check_strings(v, what)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check_strings(v, what)


def render(
    messages: Sequence[Mapping[str, Any]],
    template: str | None,
    *,
    add_generation_prompt: bool = True,
    timeout: float = RENDER_TIMEOUT_S,
    **extra: Any,
) -> str:
    """The prompt text for ``messages`` (OpenAI shape: role + content).

    ``extra`` become template variables (``enable_thinking``, ``tools``...);
    they and the messages must pickle (they cross to the render worker).
    """
    check_messages(messages)
    context = {
        "messages": [dict(m) for m in messages],
        "add_generation_prompt": add_generation_prompt,
        **extra,
    }
    try:
        text = render_template(template or FALLBACK_TEMPLATE, context, timeout=timeout)
    except CheckpointError as e:
        raise CheckpointError(f"the model's chat template is broken: {e}") from None
    if GLM_PREFIX not in text[: len(GLM_PREFIX) + 16]:
        # Every GLM chat starts with [gMASK]<sop>; a template that omits it
        # (some fine-tunes) makes the model drift.
        text = GLM_PREFIX + text
    return text


@dataclass
class Reply:
    """An assistant message split into GLM's reasoning and its answer."""

    content: str
    reasoning: str | None = None


def split_thinking(text: str) -> Reply:
    """``<think>…</think>answer`` -> Reply(answer, reasoning); open blocks count as reasoning."""
    m = _THINK.search(text)
    if m is None:
        return Reply(text.strip())
    reasoning = m.group(1).strip()
    content = (text[: m.start()] + text[m.end() :]).strip()
    return Reply(content, reasoning or None)
