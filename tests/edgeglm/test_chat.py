from __future__ import annotations

import json

import pytest
from helpers import HF_FIXTURES

from edgeglm.chat import GLM_PREFIX, render, split_thinking
from edgeglm.errors import CheckpointError, UsageError

TEMPLATE = json.loads((HF_FIXTURES / "glm4" / "tokenizer_config.json").read_text())["chat_template"]


def test_renders_glm_turns_with_the_models_template() -> None:
    text = render(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Bye"},
        ],
        TEMPLATE,
    )
    assert text == (
        "[gMASK]<sop><|system|>\nBe brief."
        "<|user|>\nHi<|assistant|>\nHello.<|user|>\nBye<|assistant|>\n"
    )


def test_prefix_is_added_when_a_template_forgets_it() -> None:
    text = render(
        [{"role": "user", "content": "x"}],
        "{% for m in messages %}<|user|>\n{{ m.content }}{% endfor %}",
    )
    assert text.startswith(GLM_PREFIX)


def test_fallback_template_when_model_has_none() -> None:
    assert (
        render([{"role": "user", "content": "x"}], None) == "[gMASK]<sop><|user|>\nx<|assistant|>\n"
    )


def test_templates_are_sandboxed() -> None:
    evil = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    # the model file's template is at fault: exit 4, not a usage error
    with pytest.raises(CheckpointError, match=r"chat template is broken: .*unsafe"):
        render([{"role": "user", "content": "x"}], evil)


def test_unknown_role() -> None:
    with pytest.raises(UsageError, match="unknown chat role"):
        render([{"role": "wizard", "content": "x"}], TEMPLATE)


@pytest.mark.parametrize(
    ("text", "content", "reasoning"),
    [
        ("plain answer", "plain answer", None),
        ("<think>step 1\nstep 2</think>\nThe answer.", "The answer.", "step 1\nstep 2"),
        ("<think>still thinking", "", "still thinking"),
        ("<think></think>Done", "Done", None),
    ],
)
def test_split_thinking(text: str, content: str, reasoning: str | None) -> None:
    r = split_thinking(text)
    assert (r.content, r.reasoning) == (content, reasoning)
