"""GLM's reply text, as it streams, split into what the OpenAI API returns apart.

A GLM reply can hold three things in one stream of text:

- reasoning, ``<think>…</think>`` (GLM-4.5 and later, GLM-Z1): returned as
  ``reasoning_content``, never inside ``content``. A template whose prompt ends
  in an open ``<think>`` (thinking forced on) starts the reply inside it.
- tool calls of GLM-4.5 and later, the format llama.cpp's GLM-4.5 parser reads
  (common/chat.cpp)::

      <tool_call>get_weather
      <arg_key>city</arg_key>
      <arg_value>Beijing</arg_value>
      </tool_call>

  Values are text; a value is taken as JSON unless the tool's schema says the
  argument is a string (as llama.cpp and vLLM do), so ``3`` is a number for an
  integer parameter and the text "3" for a string one. GLM sometimes opens a
  call without closing its ``<think>``: a ``<tool_call>`` inside reasoning ends
  the reasoning and is parsed as a call, not lost in it.
- GLM-4's calls (glm-4-9b-chat): the reply is the function's name alone on the
  first line, then its arguments as one JSON object (the template renders such
  a turn as ``<|assistant|>{name}\\n{json}``). Only a declared tool's name counts.

``GlmOutput.feed`` takes text in whatever pieces tokens give (a tag may be
split anywhere, even mid-character of a name) and returns the events that are
certain so far; text that may still be the start of a tag is held back.
``finish`` flushes the rest. Streamed and whole replies go through the same
parser, so they always agree.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
_ARG = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.DOTALL)


@dataclass
class ToolCall:
    name: str
    arguments: str  # a JSON object, as OpenAI's ``function.arguments``
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass
class Event:
    kind: Literal["content", "reasoning", "tool_call"]
    text: str = ""
    call: ToolCall | None = None


def tool_format(template: str | None) -> Literal["glm45", "glm4"]:
    """Which call format a chat template teaches: GLM-4.5's ``<arg_key>`` tags,
    else GLM-4's name-and-JSON."""
    return "glm45" if template is not None and "<arg_key>" in template else "glm4"


def _schemas(tools: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """name -> JSON schema of its parameters, for the declared function tools."""
    out: dict[str, Mapping[str, Any]] = {}
    for tool in tools:
        fn = tool.get("function")
        if isinstance(fn, Mapping) and isinstance(fn.get("name"), str):
            params = fn.get("parameters")
            out[fn["name"]] = params if isinstance(params, Mapping) else {}
    return out


def _arg_value(raw: str, schema: Mapping[str, Any] | None) -> Any:
    """One ``<arg_value>``: text where the schema says string, else JSON if it parses."""
    kind = schema.get("type") if schema is not None else None
    if kind == "string":
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def parse_glm45_call(body: str, schemas: Mapping[str, Mapping[str, Any]]) -> ToolCall | None:
    """The text between ``<tool_call>`` and ``</tool_call>`` as a call (None: no name)."""
    cut = body.find("<arg_key>")
    name = (body if cut < 0 else body[:cut]).strip()
    if not name:
        return None
    props = schemas.get(name, {}).get("properties")
    props = props if isinstance(props, Mapping) else {}
    args = {}
    for key, value in _ARG.findall(body[max(cut, 0) :] if cut >= 0 else ""):
        key = key.strip()
        prop = props.get(key)
        args[key] = _arg_value(value.strip("\n"), prop if isinstance(prop, Mapping) else None)
    return ToolCall(name, json.dumps(args, ensure_ascii=False))


def _partial_tag(text: str, tags: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a tag."""
    best = 0
    for tag in tags:
        for n in range(min(len(tag) - 1, len(text)), best, -1):
            if text.endswith(tag[:n]):
                best = n
                break
    return best


class GlmOutput:
    """The streaming splitter (see the module docstring)."""

    def __init__(
        self,
        *,
        tools: Sequence[Mapping[str, Any]] = (),
        call_format: Literal["glm45", "glm4"] = "glm45",
        thinking_open: bool = False,
    ) -> None:
        self.schemas = _schemas(tools)
        self.call_format = call_format
        self.mode: Literal["content", "reasoning", "call", "glm4_head", "glm4_call"] = (
            "reasoning" if thinking_open else "content"
        )
        if self.schemas and call_format == "glm4" and not thinking_open:
            self.mode = "glm4_head"
        self.buf = ""
        self.calls: list[ToolCall] = []
        # Whitespace at the start of content or reasoning is GLM's separator
        # after a tag ("</think>\n"), not text: it is dropped, as split_thinking does.
        self._started = {"content": False, "reasoning": False}

    def _text(self, kind: Literal["content", "reasoning"], text: str) -> list[Event]:
        if not self._started[kind]:
            text = text.lstrip()
            if not text:
                return []
            self._started[kind] = True
        return [Event(kind, text)]

    def feed(self, text: str) -> list[Event]:
        self.buf += text
        out: list[Event] = []
        while True:
            before = (self.mode, len(self.buf))
            out += self._step(final=False)
            if (self.mode, len(self.buf)) == before:
                return out

    def finish(self) -> list[Event]:
        out: list[Event] = []
        while True:
            before = (self.mode, len(self.buf))
            out += self._step(final=True)
            if (self.mode, len(self.buf)) == before or not self.buf:
                break
        return out

    def _step(self, *, final: bool) -> list[Event]:
        if self.mode == "glm4_head":
            return self._glm4_head(final)
        if self.mode == "glm4_call":
            if final:
                return self._glm4_call()
            return []
        if self.mode == "call":
            end = self.buf.find(CALL_CLOSE)
            if end < 0:
                if final:  # cut off mid-call (length): the text stays visible
                    text, self.buf, self.mode = CALL_OPEN + self.buf, "", "content"
                    return self._text("content", text)
                return []
            body, self.buf = self.buf[:end], self.buf[end + len(CALL_CLOSE) :]
            self.mode = "content"
            call = parse_glm45_call(body, self.schemas)
            if call is None:
                return self._text("content", CALL_OPEN + body + CALL_CLOSE)
            self.calls.append(call)
            return [Event("tool_call", call=call)]
        calls_on = bool(self.schemas) and self.call_format == "glm45"
        if self.mode == "reasoning":
            tags = [THINK_CLOSE, CALL_OPEN] if calls_on else [THINK_CLOSE]
            kind: Literal["content", "reasoning"] = "reasoning"
        else:
            tags = [THINK_OPEN, CALL_OPEN] if calls_on else [THINK_OPEN]
            kind = "content"
        hits = [(i, t) for t in tags if (i := self.buf.find(t)) >= 0]
        if hits:
            i, tag = min(hits)
            text, self.buf = self.buf[:i], self.buf[i + len(tag) :]
            self.mode = {
                THINK_OPEN: "reasoning",
                THINK_CLOSE: "content",
                CALL_OPEN: "call",
            }[tag]  # type: ignore[assignment]
            return self._text(kind, text) if text else []
        keep = 0 if final else _partial_tag(self.buf, tags)
        text = self.buf[: len(self.buf) - keep]
        self.buf = self.buf[len(self.buf) - keep :]
        return self._text(kind, text) if text else []

    def _glm4_head(self, final: bool) -> list[Event]:
        """GLM-4: is the first line a declared tool's name?"""
        nl = self.buf.find("\n")
        line = (self.buf if nl < 0 else self.buf[:nl]).strip()
        if nl >= 0:
            self.mode = "glm4_call" if line in self.schemas else "content"
            return []
        if not final and (not line or any(n.startswith(line) for n in self.schemas)):
            return []  # still possibly a name: wait for more
        self.mode = "content"
        return []

    def _glm4_call(self) -> list[Event]:
        """The whole GLM-4 reply once it has ended: name line, then a JSON object.
        Several calls are separated by ``<|assistant|>`` where it shows in the text."""
        text, self.buf = self.buf, ""
        calls: list[ToolCall] = []
        for part in text.split("<|assistant|>"):
            if not part.strip():
                continue
            name, _, args = part.strip("\n").partition("\n")
            try:
                parsed = json.loads(args)
            except ValueError:
                parsed = None
            if name.strip() not in self.schemas or not isinstance(parsed, dict):
                self.mode = "content"
                return self._text("content", text)  # not a call after all: the text as is
            calls.append(ToolCall(name.strip(), json.dumps(parsed, ensure_ascii=False)))
        self.mode = "content"
        self.calls += calls
        return [Event("tool_call", call=c) for c in calls]


@dataclass
class Message:
    """A whole reply, split."""

    content: str | None
    reasoning: str | None
    tool_calls: list[ToolCall]


def collect(events: Sequence[Event]) -> Message:
    content = "".join(e.text for e in events if e.kind == "content").rstrip()
    reasoning = "".join(e.text for e in events if e.kind == "reasoning").rstrip()
    calls = [e.call for e in events if e.kind == "tool_call" and e.call is not None]
    return Message(content or None if calls else content, reasoning or None, calls)


def split_reply(
    text: str,
    *,
    tools: Sequence[Mapping[str, Any]] = (),
    call_format: Literal["glm45", "glm4"] = "glm45",
    thinking_open: bool = False,
) -> Message:
    """A whole reply, split as a stream of it would be."""
    p = GlmOutput(tools=tools, call_format=call_format, thinking_open=thinking_open)
    return collect([*p.feed(text), *p.finish()])
