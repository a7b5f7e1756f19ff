"""Chat prompts from the model's own template, and GLM's reply conventions.

Templates come with the model (GGUF ``tokenizer.chat_template`` or
tokenizer_config.json) and are untrusted text, so they render in Jinja's
immutable sandbox. GLM specifics live here and nowhere else: the
``[gMASK]<sop>`` prefix, ``<|user|>``/``<|observation|>`` as end-of-turn, and
the ``<think>…</think>`` reasoning block of GLM-4.5 and later.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from edgeglm.errors import UsageError

GLM_PREFIX = "[gMASK]<sop>"
# Tokens that end an assistant turn in every GLM chat format.
GLM_STOP_TOKENS = ("<|endoftext|>", "<|user|>", "<|observation|>")
# Used when a model ships no template (GLM-4 format, as llama.cpp's built-in "chatglm4").
FALLBACK_TEMPLATE = (
    GLM_PREFIX + "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
_THINK = re.compile(r"<think>(.*?)(</think>|$)", re.DOTALL)


@lru_cache(maxsize=8)
def _compile(template: str) -> Any:
    env = ImmutableSandboxedEnvironment(trim_blocks=False, lstrip_blocks=False)

    def raise_exception(message: str) -> None:  # used by HF templates
        raise TemplateError(message)

    env.globals["raise_exception"] = raise_exception
    return env.from_string(template)


def render(
    messages: Sequence[Mapping[str, Any]],
    template: str | None,
    *,
    add_generation_prompt: bool = True,
    **extra: Any,
) -> str:
    """The prompt text for ``messages`` (OpenAI shape: role + content)."""
    for m in messages:
        if m.get("role") not in ("system", "user", "assistant", "observation", "tool"):
            raise UsageError(f"unknown chat role {m.get('role')!r}")
    try:
        text = str(
            _compile(template or FALLBACK_TEMPLATE).render(
                messages=list(messages), add_generation_prompt=add_generation_prompt, **extra
            )
        )
    except TemplateError as e:
        raise UsageError(f"the model's chat template failed: {e}") from e
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
