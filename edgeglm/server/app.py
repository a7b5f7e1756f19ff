"""The OpenAI-compatible HTTP API (Starlette), over one engine.

``edgeglm serve`` uses ``build_process_app``: the model lives in a child
process (child.py) running the engine of engine.py (one request at a time)
or slots.py (``--parallel N``), so a crash there leaves this process up.
``build_app`` runs the engine on a thread of this process instead (any
Backend, e.g. a scripted one in tests).

Routes: ``POST /v1/chat/completions`` and ``POST /v1/completions`` (JSON, or
server-sent events with ``stream: true``), ``GET /v1/models``, ``GET
/health`` (open without a key) and ``GET /metrics`` (Prometheus text).

Every refusal is OpenAI's error body ``{"error": {"message", "type", "param",
"code"}}``: 400 for malformed JSON, wrong types, a prompt longer than the
context, a ``max_tokens`` below 1 or above the context, meaningless sampling
values, a template that fails to render; 401 for a missing or wrong key; 404
for another model's name; 413 for a body over ``max_body`` bytes (checked on
Content-Length and again while reading, for chunked bodies); 503 with
Retry-After when the queue is full.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from edgeglm.backends.base import Backend, Completion, SamplingParams
from edgeglm.chat import GLM_STOP_TOKENS, render
from edgeglm.errors import CheckpointError, UsageError
from edgeglm.generation import Sampling, max_tokens_param
from edgeglm.server.auth import OPEN_PATHS, key_matches, presented_key
from edgeglm.server.child import LoadRequest, ProcessEngine
from edgeglm.server.engine import Engine, Job
from edgeglm.server.glm_output import Event, GlmOutput, collect
from edgeglm.server.metrics import CONTENT_TYPE, Metrics
from edgeglm.server.prompt import chat_prompt, forced_call
from edgeglm.server.schemas import APIError, ChatRequest, CompletionRequest

# Larger bodies are refused (413) before they are read whole.
MAX_BODY_BYTES = 8 << 20
# How often a request waiting in the queue looks whether its client is still there.
_DISCONNECT_POLL_S = 0.5
ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass
class ServerConfig:
    model_id: str
    sampling: Sampling = field(default_factory=Sampling)  # the model's defaults, flags on top
    api_key: str | None = None
    queue_size: int = 32
    max_body: int = MAX_BODY_BYTES
    parallel: int = 1  # slots decoded together (a llama.cpp model loaded with n_seq_max)


class ClientGone(Exception):
    """The client disconnected while its request waited or ran (its job is cancelled)."""


def error_response(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


class Gate:
    """ASGI middleware: the API key, and requests counted by path and status."""

    def __init__(self, app: ASGIApp, config: ServerConfig, metrics: Metrics) -> None:
        self.app, self.config, self.metrics = app, config, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"] if scope["path"] in ROUTES else "other"
        counted = False

        async def counting_send(message: Message) -> None:
            nonlocal counted
            if message["type"] == "http.response.start" and not counted:
                counted = True
                status = int(message["status"])
                self.metrics.requests.labels(path, str(status)).inc()
                if status >= 400:
                    self.metrics.errors.labels(_error_type(status)).inc()
            await send(message)

        key = self.config.api_key
        try:
            if (
                key is not None
                and scope["path"] not in OPEN_PATHS
                and not key_matches(presented_key(Headers(scope=scope)), key)
            ):
                refusal = APIError(
                    401,
                    "invalid or missing API key (Authorization: Bearer KEY or X-Api-Key)",
                    type="authentication_error",
                    code="invalid_api_key",
                )
                await error_response(refusal)(scope, receive, counting_send)
                return
            await self.app(scope, receive, counting_send)
        finally:
            if not counted:  # the app raised before answering: uvicorn sends a 500
                self.metrics.requests.labels(path, "500").inc()
                self.metrics.errors.labels("server_error").inc()


def _error_type(status: int) -> str:
    return {
        401: "authentication_error",
        404: "not_found_error",
        413: "invalid_request_error",
        503: "unavailable_error",
    }.get(status, "invalid_request_error" if status < 500 else "server_error")


async def read_body(request: Request, limit: int) -> Any:
    """The JSON body, or APIError 413 (too large) / 400 (not JSON)."""
    too_large = APIError(
        413, f"the request body is larger than {limit} bytes", code="body_too_large"
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            raise too_large
    try:
        return json.loads(body)
    except ValueError as e:  # also bad UTF-8
        raise APIError(400, f"the body is not valid JSON ({e})", code="invalid_json") from None


def validate(model: type[BaseModel], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        # pydantic names the member of a union it tried last ("temperature.int"): not a field
        loc = [p for p in first["loc"] if isinstance(p, int) or not _UNION_TAG.fullmatch(p)]
        where = ".".join(str(p) for p in loc) or None
        message = first["msg"]
        if len(loc) < len(first["loc"]):
            given = json.dumps(first.get("input"), default=str)[:80]
            message = f"wrong type or value (got {given})"
        raise APIError(400, f"{where or 'body'}: {message}", param=where) from None


_UNION_TAG = re.compile(r"int|float|str|bool|none|bytes|.*[\[\-].*")


class Server:
    def __init__(
        self,
        engine: Engine | ProcessEngine,
        metrics: Metrics,
        config: ServerConfig,
        *,
        template: str | None,
        backend: str,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.config = config
        self.template = template
        self.backend = backend
        self.created = int(time.time())

    # -- request checks ------------------------------------------------------------

    def _check_model(self, name: str | None) -> None:
        if name is not None and name != self.config.model_id:
            raise APIError(
                404,
                f"the model {name!r} does not exist here (this server runs "
                f"{self.config.model_id!r})",
                type="not_found_error",
                param="model",
                code="model_not_found",
            )

    def _params(
        self, req: ChatRequest | CompletionRequest, stops: tuple[str, ...]
    ) -> SamplingParams:
        if req.n != 1:
            raise APIError(400, "n must be 1 (one choice per request)", param="n")
        n_ctx = self.engine.n_ctx
        given = (
            req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        )
        if given is not None and (given < 1 or (n_ctx is not None and given > n_ctx)):
            top = n_ctx if n_ctx is not None else "the context size"
            raise APIError(
                400,
                f"max_tokens must be a whole number from 1 to {top} (got {given})",
                param="max_tokens",
            )
        stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        if len(stop) > 16:
            raise APIError(400, "at most 16 stop strings", param="stop")
        fields = {
            "temperature": req.temperature,
            "top_p": req.top_p,
            "top_k": req.top_k,
            "min_p": req.min_p,
            "repeat_penalty": req.repeat_penalty,
            "seed": req.seed,
        }
        try:
            sampling = self.config.sampling.override(**fields)
            params = sampling.params(stop=tuple(stop) + stops)
        except UsageError as e:
            raise APIError(400, str(e)) from None
        max_tokens = given if given is not None else max_tokens_param(sampling.max_tokens)
        return SamplingParams(**{**vars(params), "max_tokens": max_tokens})

    async def _submit(self, request: Request, job: Job) -> int:
        """Queue ``job``; wait for it to start. The prompt's token count, or APIError."""
        self.engine.submit(job)
        kind, value = await self._next(request, job)
        if kind == "error":
            raise value
        return int(value)

    async def _next(self, request: Request, job: Job) -> tuple[str, Any]:
        """The job's next event; a client that leaves meanwhile cancels the job."""
        while True:
            try:
                return await asyncio.wait_for(job.events.get(), _DISCONNECT_POLL_S)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    job.cancel()
                    raise ClientGone from None

    # -- endpoints -----------------------------------------------------------------

    async def chat_completions(self, request: Request) -> Response:
        req: ChatRequest = validate(ChatRequest, await read_body(request, self.config.max_body))
        self._check_model(req.model)
        params = self._params(req, GLM_STOP_TOKENS)
        prompt = chat_prompt(req, self.template)
        try:
            text = await run_in_threadpool(
                render, prompt.messages, self.template, **prompt.variables
            )
        except UsageError as e:
            raise APIError(400, str(e), param="messages") from None
        except CheckpointError as e:
            raise APIError(400, str(e), param="messages", code="template_error") from None
        parser = GlmOutput(
            tools=prompt.tools,
            call_format=prompt.call_format,
            thinking_open=text.rstrip().endswith("<think>"),
        )
        forced = forced_call(prompt, text)
        parser.feed(forced)  # the reply's beginning, written for the model: no events
        job = Job(text + forced, params, asyncio.get_running_loop())
        n_prompt = await self._submit(request, job)
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        if req.stream:
            usage = req.stream_options is not None and req.stream_options.include_usage
            return _sse(self._chat_stream(request, job, parser, rid, n_prompt, usage), job)
        events: list[Event] = []
        while True:
            kind, value = await self._next(request, job)
            if kind == "error":
                raise value
            if kind == "chunk":
                events += parser.feed(value.text)
            if kind == "done":
                events += parser.finish()
                done: Completion = value
                break
        reply = collect(events)
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.reasoning is not None:
            message["reasoning_content"] = reply.reasoning
        if reply.tool_calls:
            message["tool_calls"] = [c.to_openai() for c in reply.tool_calls]
        return JSONResponse(
            {
                "id": rid,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.config.model_id,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": "tool_calls" if reply.tool_calls else done.finish_reason,
                    }
                ],
                "usage": _usage(n_prompt, done),
            }
        )

    async def _chat_stream(
        self, request: Request, job: Job, parser: GlmOutput, rid: str, n_prompt: int, usage: bool
    ) -> AsyncIterator[str]:
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            body = {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.config.model_id,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return _data(body)

        calls = 0

        def deltas(events: list[Event]) -> list[str]:
            nonlocal calls
            out = []
            for e in events:
                if e.kind == "content":
                    out.append(chunk({"content": e.text}))
                elif e.kind == "reasoning":
                    out.append(chunk({"reasoning_content": e.text}))
                elif e.call is not None:
                    call = {"index": calls, **e.call.to_openai()}
                    calls += 1
                    out.append(chunk({"tool_calls": [call]}))
            return out

        yield chunk({"role": "assistant", "content": ""})
        while True:
            kind, value = await self._next(request, job)
            if kind == "error":
                yield _data(value.body())
                return
            if kind == "chunk":
                for line in deltas(parser.feed(value.text)):
                    yield line
            if kind == "done":
                for line in deltas(parser.finish()):
                    yield line
                done: Completion = value
                yield chunk({}, "tool_calls" if calls else done.finish_reason)
                if usage:
                    yield _data(
                        {
                            "id": rid,
                            "object": "chat.completion.chunk",
                            "created": created,
                            "model": self.config.model_id,
                            "choices": [],
                            "usage": _usage(n_prompt, done),
                        }
                    )
                yield "data: [DONE]\n\n"
                return

    async def completions(self, request: Request) -> Response:
        req: CompletionRequest = validate(
            CompletionRequest, await read_body(request, self.config.max_body)
        )
        self._check_model(req.model)
        params = self._params(req, ())
        prompt = req.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise APIError(400, "prompt: give one text (a list of one)", param="prompt")
            prompt = prompt[0]
        if not prompt:
            raise APIError(400, "prompt is empty", param="prompt")
        try:
            from edgeglm.backends.base import check_text

            check_text(prompt, "prompt")
        except UsageError as e:
            raise APIError(400, str(e), param="prompt") from None
        # special tokens in the text (<|user|>...) are parsed, as llama-server does
        job = Job(prompt, params, asyncio.get_running_loop(), what="prompt")
        n_prompt = await self._submit(request, job)
        rid = f"cmpl-{uuid.uuid4().hex}"
        created = int(time.time())

        def body(text: str, finish: str | None) -> dict[str, Any]:
            return {
                "id": rid,
                "object": "text_completion",
                "created": created,
                "model": self.config.model_id,
                "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
            }

        echo = prompt if req.echo else ""
        if req.stream:
            usage = req.stream_options is not None and req.stream_options.include_usage

            async def stream() -> AsyncIterator[str]:
                if echo:
                    yield _data(body(echo, None))
                while True:
                    kind, value = await self._next(request, job)
                    if kind == "error":
                        yield _data(value.body())
                        return
                    if kind == "chunk" and value.text:
                        yield _data(body(value.text, None))
                    if kind == "done":
                        yield _data(body("", value.finish_reason))
                        if usage:
                            yield _data(
                                {**body("", None), "choices": [], "usage": _usage(n_prompt, value)}
                            )
                        yield "data: [DONE]\n\n"
                        return

            return _sse(stream(), job)
        while True:
            kind, value = await self._next(request, job)
            if kind == "error":
                raise value
            if kind == "done":
                done: Completion = value
                break
        return JSONResponse(
            {**body(echo + done.text, done.finish_reason), "usage": _usage(n_prompt, done)}
        )

    async def models(self, request: Request) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {
                        "id": self.config.model_id,
                        "object": "model",
                        "created": self.created,
                        "owned_by": "edgeglm",
                        "meta": {
                            "n_ctx": self.engine.n_ctx,  # per slot
                            "parallel": self.config.parallel,
                            "backend": self.backend,
                        },
                    }
                ],
            }
        )

    async def health(self, request: Request) -> Response:
        if not self.engine.alive:
            why = getattr(self.engine, "failure", None) or "the model's engine is not running"
            return JSONResponse({"status": "unavailable", "error": why}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def metrics_page(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)


def _data(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def _usage(n_prompt: int, done: Completion) -> dict[str, int]:
    n = done.timings.completion_tokens
    return {"prompt_tokens": n_prompt, "completion_tokens": n, "total_tokens": n_prompt + n}


def _sse(events: AsyncIterator[str], job: Job) -> StreamingResponse:
    """Server-sent events; the generation stops as soon as the client leaves
    (Starlette cancels the stream, and the job with it)."""

    async def guarded() -> AsyncIterator[str]:
        try:
            async for line in events:
                yield line
        except ClientGone:
            return
        finally:
            job.cancel()  # no-op after a finished job; stops one whose client left

    return StreamingResponse(
        guarded(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _handler(
    fn: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    async def wrapped(request: Request) -> Response:
        try:
            return await fn(request)
        except APIError as e:
            return error_response(e)
        except ClientGone:  # nobody reads this; nginx's "client closed request"
            return Response(status_code=499)

    return wrapped


def build_app(model: Backend, config: ServerConfig) -> Starlette:
    """The ASGI app serving ``model`` from an engine thread in this process (the
    model is closed when the app shuts down)."""
    metrics = Metrics()
    engine: Engine
    if config.parallel > 1:
        from edgeglm.server.slots import SlotEngine

        engine = SlotEngine(
            model, parallel=config.parallel, queue_size=config.queue_size, metrics=metrics
        )
    else:
        engine = Engine(model, queue_size=config.queue_size, metrics=metrics)
    server = Server(engine, metrics, config, template=model.chat_template(), backend=model.name)
    return serve_app(server)


def build_process_app(req: LoadRequest, config: ServerConfig) -> Starlette:
    """The ASGI app with the model loaded and run in a child process (child.py):
    a crash there leaves this server answering. Load errors are raised here."""
    metrics = Metrics()
    engine = ProcessEngine(req, queue_size=config.queue_size, metrics=metrics)
    info = engine.launch()
    server = Server(engine, metrics, config, template=info.template, backend=info.name)
    return serve_app(server)


def serve_app(server: Server) -> Starlette:
    """The routes, the key and count middleware, and the engine's lifespan."""
    config = server.config

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        server.engine.start()
        try:
            yield
        finally:
            await run_in_threadpool(server.engine.close)

    routes = [
        Route("/v1/chat/completions", _handler(server.chat_completions), methods=["POST"]),
        Route("/v1/completions", _handler(server.completions), methods=["POST"]),
        Route("/v1/models", _handler(server.models), methods=["GET"]),
        Route("/health", server.health, methods=["GET"]),
        Route("/metrics", server.metrics_page, methods=["GET"]),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(APIError(exc.status_code, str(exc.detail), type=kind))

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(Gate, config=config, metrics=server.metrics)],
        exception_handlers={HTTPException: http_error},
    )
    app.state.server = server
    return app
