"""An OpenAI chat request as the model's own template expects it.

The template renders in the sandboxed worker (edgeglm.chat.render); this
module only reshapes the messages, the way GLM's templates read them:

- previous turns' reasoning is history the model must not see again: a
  ``<think>`` block in an assistant message's content is removed, and its
  reasoning (``reasoning_content``) is kept only for assistant turns after the
  last user message (a tool-call loop in progress), which GLM-4.5+'s templates
  render back as ``<think>``;
- ``tool_calls[].function.arguments`` arrive as JSON text and GLM-4.5's
  template iterates them (``arguments.items()``): they are parsed into
  objects here, the bug behind "Unknown method: items" elsewhere;
- ``tool`` messages are GLM's observations: they stay ``tool`` for templates
  that know that role, and become ``observation`` for GLM-4's;
- for GLM-4's templates, an assistant turn with calls becomes one
  ``{"role": "assistant", "metadata": name, "content": json}`` per call (how
  that template renders a call), and the tools also ride on the first system
  message (``item['tools']``), where glm-4-9b-chat's template looks for them;
- ``developer`` is ``system``; content parts other than text are refused.

``tools`` and ``tool_choice`` become template variables, as do
``chat_template_kwargs`` (``enable_thinking``...). ``tool_choice: "required"``
or a named function is enforced, not only rendered: the reply is begun as a
call (``forced_call``), so the model cannot answer in prose instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from edgeglm.chat import split_thinking
from edgeglm.server.glm_output import CALL_OPEN, THINK_CLOSE, THINK_OPEN, tool_format
from edgeglm.server.schemas import APIError, ChatMessage, ChatRequest

# Template variables a request may not replace.
RESERVED = frozenset({"messages", "tools", "tool_choice", "add_generation_prompt"})


@dataclass
class ChatPrompt:
    messages: list[dict[str, Any]]
    variables: dict[str, Any]
    tools: list[dict[str, Any]]  # the tools whose calls are parsed (none: no parsing)
    call_format: Literal["glm45", "glm4"]
    must_call: bool = False  # tool_choice "required" or a named function


def forced_call(prompt: ChatPrompt, rendered: str) -> str:
    """The text that begins the reply as a tool call where ``tool_choice``
    demands one ("" where it does not): appended to the rendered prompt, it
    leaves the model only the call's name (when not named) and arguments to write.

    GLM-4.5+ reply as ``\n<think>…</think>\n<tool_call>name\n<arg_key>…``; a
    forced call closes the reasoning first, empty, as the templates render a
    turn without thinking (reasoning cannot be kept without a grammar).
    GLM-4's call is ``name\n{json}``, so its name must be known: with several
    tools, "required" is refused there (400) rather than left unenforced."""
    if not prompt.must_call:
        return ""
    names = [t["function"]["name"] for t in prompt.tools]
    named = names[0] if len(names) == 1 else None
    if prompt.call_format == "glm4":
        if named is None:
            raise APIError(
                400,
                'tool_choice "required" with several tools needs a GLM-4.5 or later '
                "template; this model's GLM-4 calls can only be forced to a named "
                'function (tool_choice {"type": "function", "function": {"name": ...}})',
                param="tool_choice",
            )
        return f"{named}\n"
    tail = rendered.rstrip()
    if tail.endswith(THINK_OPEN):
        head = f"{THINK_CLOSE}\n"
    elif tail.endswith(THINK_CLOSE):
        head = "\n"
    else:
        head = f"\n{THINK_OPEN}{THINK_CLOSE}\n"
    return head + CALL_OPEN + (f"{named}\n" if named is not None else "")


def _text(m: ChatMessage, i: int) -> str:
    if m.content is None:
        return ""
    if isinstance(m.content, str):
        return m.content
    parts = []
    for part in m.content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise APIError(
                400,
                f"messages[{i}]: only text content parts are supported "
                f"(got type {part.get('type')!r})",
                param=f"messages[{i}].content",
            )
        parts.append(part["text"])
    return "".join(parts)


def _strip_reasoning(text: str) -> tuple[str, str | None]:
    """(answer, reasoning) of an assistant message's text."""
    if THINK_CLOSE in text and THINK_OPEN not in text:  # thinking was forced open
        reasoning, _, answer = text.partition(THINK_CLOSE)
        return answer.strip(), reasoning.strip() or None
    reply = split_thinking(text)
    return reply.content, reply.reasoning


def _arguments(raw: str | dict[str, Any], i: int) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        parsed = json.loads(raw or "{}")
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise APIError(
            400,
            f"messages[{i}]: tool call arguments must be a JSON object",
            param=f"messages[{i}].tool_calls",
        )
    return parsed


def _chosen_tools(req: ChatRequest) -> list[dict[str, Any]]:
    tools = [t.model_dump(exclude_none=True) for t in req.tools or []]
    choice = req.tool_choice
    if not tools or choice == "none":
        return []
    if choice is None or choice in ("auto", "required"):
        return tools
    if isinstance(choice, dict):
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        chosen = [t for t in tools if t["function"]["name"] == name]
        if not chosen:
            raise APIError(
                400, f"tool_choice names no declared tool ({name!r})", param="tool_choice"
            )
        return chosen
    raise APIError(
        400,
        f"tool_choice must be none, auto, required or a function (got {choice!r})",
        param="tool_choice",
    )


def chat_prompt(req: ChatRequest, template: str | None) -> ChatPrompt:
    """The messages and variables to render ``req`` with (APIError 400 on a bad request)."""
    call_format = tool_format(template)
    tools = _chosen_tools(req)
    knows_tool_role = template is not None and ("'tool'" in template or '"tool"' in template)
    last_user = max((i for i, m in enumerate(req.messages) if m.role == "user"), default=-1)
    out: list[dict[str, Any]] = []
    for i, m in enumerate(req.messages):
        role = "system" if m.role == "developer" else m.role
        content = _text(m, i)
        msg: dict[str, Any] = {"role": role, "content": content}
        if m.name is not None:
            msg["name"] = m.name
        if role == "tool":
            msg["role"] = "tool" if knows_tool_role else "observation"
            if m.tool_call_id is not None:
                msg["tool_call_id"] = m.tool_call_id
        if role == "assistant":
            answer, reasoning = _strip_reasoning(content)
            reasoning = m.reasoning_content or reasoning
            msg["content"] = answer
            if reasoning and i > last_user:
                msg["reasoning_content"] = reasoning
            calls: list[dict[str, Any]] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {
                        "name": c.function.name,
                        "arguments": _arguments(c.function.arguments, i),
                    },
                }
                for c in m.tool_calls or []
            ]
            if calls and call_format == "glm4":
                if answer:
                    out.append(msg)
                out += [
                    {
                        "role": "assistant",
                        "metadata": c["function"]["name"],
                        "content": json.dumps(c["function"]["arguments"], ensure_ascii=False),
                    }
                    for c in calls
                ]
                continue
            if calls:
                msg["tool_calls"] = calls
        out.append(msg)
    if tools and call_format == "glm4":
        system = next((m for m in out if m["role"] == "system"), None)
        if system is None:
            out.insert(0, system := {"role": "system", "content": ""})
        system["tools"] = tools
    variables: dict[str, Any] = {}
    for key, value in (req.chat_template_kwargs or {}).items():
        if key in RESERVED:
            raise APIError(
                400, f"chat_template_kwargs may not set {key!r}", param="chat_template_kwargs"
            )
        variables[key] = value
    if tools:
        variables["tools"] = tools
        variables["tool_choice"] = req.tool_choice or "auto"
    must_call = bool(tools) and (req.tool_choice == "required" or isinstance(req.tool_choice, dict))
    return ChatPrompt(out, variables, tools, call_format, must_call)
