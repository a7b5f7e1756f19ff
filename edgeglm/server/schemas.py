"""Request bodies (pydantic) and the OpenAI-style error every refusal carries.

Fields the API defines and EdgeGLM does not use (``n`` above 1 aside, which is
refused) are accepted and ignored, as llama-server does: clients send many.
Types are checked strictly enough that a string where a number belongs, or a
list where a message belongs, is a 400 that names the field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

Number = StrictInt | StrictFloat


class APIError(Exception):
    """A refusal: HTTP status and the body OpenAI's clients understand."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def __reduce__(self) -> Any:  # crosses from the engine's process (child.py)
        return (
            _api_error,
            (self.status, self.message, self.type, self.param, self.code, self.headers),
        )

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def _api_error(
    status: int,
    message: str,
    type: str,
    param: str | None,
    code: str | None,
    headers: dict[str, str],
) -> APIError:
    return APIError(status, message, type=type, param=param, code=code, headers=headers)


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class FunctionCall(_Loose):
    name: StrictStr
    arguments: StrictStr | dict[str, Any] = "{}"


class ToolCallIn(_Loose):
    id: StrictStr | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Loose):
    role: Literal["system", "developer", "user", "assistant", "tool", "observation"]
    # text, or OpenAI content parts ({"type": "text", "text": ...})
    content: StrictStr | list[dict[str, Any]] | None = None
    name: StrictStr | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: StrictStr | None = None
    reasoning_content: StrictStr | None = None


class FunctionDef(_Loose):
    name: StrictStr
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None


class Tool(_Loose):
    type: Literal["function"] = "function"
    function: FunctionDef


class StreamOptions(_Loose):
    include_usage: StrictBool = False


class _Sampling(_Loose):
    """What both endpoints take: OpenAI's fields and llama.cpp's extensions."""

    model: StrictStr | None = None
    max_tokens: StrictInt | None = None
    max_completion_tokens: StrictInt | None = None
    temperature: Number | None = None
    top_p: Number | None = None
    top_k: StrictInt | None = None  # llama.cpp's extension
    min_p: Number | None = None  # llama.cpp's extension
    repeat_penalty: Number | None = None  # llama.cpp's extension
    seed: StrictInt | None = None
    stop: StrictStr | list[StrictStr] | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    n: StrictInt = 1


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[Tool] | None = None
    tool_choice: StrictStr | dict[str, Any] | None = None
    chat_template_kwargs: dict[str, Any] | None = None


class CompletionRequest(_Sampling):
    prompt: StrictStr | list[StrictStr]
    echo: StrictBool = False
