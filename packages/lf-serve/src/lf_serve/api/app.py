"""`create_app(engine)`: the OpenAI-compatible FastAPI app.

Every failure a client can cause is answered in OpenAI's error shape with a 4xx status: bad JSON
or fields (400), a wrong key (401), an unknown model (404), an oversized body (413). Streaming
answers are server-sent events in OpenAI's chunk format, ending with `data: [DONE]`; a client
that disconnects, streaming or not, cancels its generation.

No request holds the event loop: prompt encoding and media decoding run in a worker thread (after
cheap size checks), so /health and the other clients keep their answers flowing meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import Any, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lf_data.messages import Message, MessageError, from_openai
from lf_serve.api.protocol import (
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessage,
    Completion,
    CompletionChoice,
    CompletionRequest,
    ErrorResponse,
    ModelCard,
    ModelList,
    NamedToolChoice,
    ResponseMessage,
    ScoreRequest,
    ScoreResponse,
    ToolCall,
    Usage,
)
from lf_serve.engine import ChatEngine, Response
from lf_serve.errors import RequestError
from lf_serve.limits import MEDIA_PARTS, count_media
from lf_serve.media_sources import MediaPolicy, read_input_audio, read_media
from lf_serve.tool_calls import to_openai_tool_calls

logger = logging.getLogger(__name__)
ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 404, 413)}
T = TypeVar("T")


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _error_response(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                    code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, type_, param, code), status_code=status, headers=headers)


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, by header or while they stream in (chunked
    bodies have no length header): the body is read here, up to the limit, and handed on whole."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        too_big = _error_response(413, f"request body is larger than this server's limit of {self.limit} bytes.",
                                  code="request_too_large")
        try:
            declared_size = int(declared) if declared is not None else None
        except ValueError:
            return await _error_response(400, "invalid Content-Length header.")(scope, receive, send)
        if declared_size is not None and declared_size > self.limit:
            return await too_big(scope, receive, send)
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None  # the client left before its body was complete: nobody to answer
            if message["type"] != "http.request":
                continue
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.limit:
                return await too_big(scope, receive, send)
            if not message.get("more_body", False):
                break
        pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay() -> dict:
            return pending.pop() if pending else await receive()  # then http.disconnect, when it comes

        await self.app(scope, replay, send)


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """`work`'s result; if the client goes away first, `work` is cancelled (which ends its generation,
    as closing a stream does) and the answer is a 499 nobody reads."""
    task = asyncio.ensure_future(work)

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(gone())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        logger.info("client went away; its generation is cancelled")
        raise APIError(499, "the client closed the request.", code="client_closed_request")
    finally:
        watcher.cancel()
        task.cancel()  # nothing when done; else (client gone, or this handler cancelled) ends the generation


def _validation_message(err: RequestValidationError) -> tuple[str, str | None]:
    errors = err.errors()
    if not errors:
        return "invalid request body.", None
    first = errors[0]
    if first.get("type") in ("json_invalid", "json_type"):
        return "the request body is not valid JSON.", None
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(loc) or None
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{param or 'body'}: {message}", param


def create_app(engine: ChatEngine, api_key: str | None = None, max_body_bytes: int | None = None,
               media_policy: MediaPolicy | None = None, root_path: str = "") -> FastAPI:
    """The API over one engine; `api_key` requires `Authorization: Bearer <key>` on all but /health;
    `root_path`: the path prefix a reverse proxy serves it under (and strips), for the docs' links."""
    infer = engine.plan.infer
    policy = media_policy or MediaPolicy.from_args(infer)
    created = int(time.time())
    app = FastAPI(title="LF OpenAI-compatible API", version="0.1.0", root_path=root_path)
    app.add_middleware(BodyLimit, limit=max_body_bytes or infer.api_max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(err)
        return _error_response(400, message, param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return _error_response(err.status_code, str(err.detail), headers=getattr(err, "headers", None))

    @app.exception_handler(APIError)
    async def _api(request: Request, err: APIError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
        return _error_response(err.status, err.message, err.type, err.param, err.code, headers)

    @app.exception_handler(RequestError)
    async def _request(request: Request, err: RequestError) -> JSONResponse:
        return _error_response(err.status, err.message, err.type, err.param, err.code)

    @app.exception_handler(Exception)
    async def _internal(request: Request, err: Exception) -> JSONResponse:
        logger.exception("internal error")
        return _error_response(500, f"internal error: {type(err).__name__}", "server_error")

    async def authenticate(request: Request) -> None:
        if not api_key:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), api_key.encode()):
            raise APIError(401, "invalid or missing API key: send `Authorization: Bearer <key>`.",
                           code="invalid_api_key")

    def check_model(name: str) -> None:
        if name != engine.model_name:
            raise APIError(404, f"the model {name!r} does not exist; this server serves {engine.model_name!r}.",
                           param="model", code="model_not_found")

    auth = [Depends(authenticate)]

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models", response_model=ModelList, dependencies=auth, responses=ERRORS)
    async def list_models() -> ModelList:
        return ModelList(data=[ModelCard(id=engine.model_name, created=created)])

    @app.post("/v1/chat/completions", response_model=ChatCompletion, dependencies=auth, responses=ERRORS)
    async def chat_completions(body: ChatCompletionRequest, http: Request) -> Any:
        check_model(body.model)
        tools = chosen_tools(body)
        max_tokens = body.max_completion_tokens or body.max_tokens
        choice = body.tool_choice.model_dump() if isinstance(body.tool_choice, NamedToolChoice) else body.tool_choice
        tool_text = json.dumps(tools) if tools else None

        def build() -> Any:  # in a worker thread: decoding media and tokenising can take seconds
            raw = [m.model_dump(exclude_none=True) for m in body.messages]
            engine.check_prompt(raw, None, tool_text)  # cheap bounds first: characters, lone surrogates
            engine.check_media(count_media(raw))  # media the model takes, and how many, before any is read
            messages, system, media = convert_messages(body.messages, policy)
            return engine.chat_request(messages, system, tool_text, tool_choice=choice, **media,
                                       **sampling_overrides(body, max_tokens))

        request = await asyncio.to_thread(build)
        reply_id, now = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return sse(stream_chat(engine, request, bool(tools), reply_id, now, include_usage))
        responses = await unless_disconnected(http, engine.arun(request, tools))
        return ChatCompletion(id=reply_id, created=now, model=engine.model_name, usage=usage(responses),
                              choices=[ChatChoice(index=i, message=response_message(r), finish_reason=r.finish_reason)
                                       for i, r in enumerate(responses)])

    @app.post("/v1/completions", response_model=Completion, dependencies=auth, responses=ERRORS)
    async def completions(body: CompletionRequest, http: Request) -> Any:
        check_model(body.model)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if body.stream and len(prompts) != 1:
            raise APIError(400, "streaming takes one prompt per request.", param="prompt")
        overrides = sampling_overrides(body, body.max_tokens)

        def build() -> list[Any]:  # in a worker thread, as for chat
            requests = []
            for i, prompt in enumerate(prompts):
                try:
                    requests.append(engine.completion_request(prompt, **overrides))
                except RequestError as err:
                    if len(prompts) > 1:
                        err.message = f"prompt[{i}]: {err.message}"
                    raise
            return requests

        requests = await asyncio.to_thread(build)
        reply_id, now = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return sse(stream_completion(engine, requests[0], body.echo, reply_id, now, include_usage))

        async def run_all() -> list[list[Response]]:  # submitted together, so the engine batches them
            tasks = [asyncio.ensure_future(engine.arun(r)) for r in requests]
            try:
                return list(await asyncio.gather(*tasks))
            finally:
                for task in tasks:  # one failed or the client left: the others stop too
                    task.cancel()

        choices, answers = [], []
        for prompt, responses in zip(prompts, await unless_disconnected(http, run_all()), strict=True):
            answers += responses
            for r in responses:
                choices.append(CompletionChoice(index=len(choices), text=(prompt if body.echo else "") + r.text,
                                                finish_reason=r.finish_reason))
        total = usage(answers)
        total.prompt_tokens = sum(len(r.prompt_ids) for r in requests)
        total.total_tokens = total.prompt_tokens + total.completion_tokens
        return Completion(id=reply_id, created=now, model=engine.model_name, choices=choices, usage=total)

    @app.post("/v1/score/evaluation", response_model=ScoreResponse, dependencies=auth, responses=ERRORS)
    async def score(body: ScoreRequest) -> ScoreResponse:
        from starlette.concurrency import run_in_threadpool

        check_model(body.model)
        scores = await run_in_threadpool(engine.get_scores, body.messages, body.max_length)
        return ScoreResponse(id=f"score-{uuid.uuid4().hex}", model=engine.model_name, scores=scores)

    return app


# -- request conversion -------------------------------------------------------------------------------
def convert_messages(messages: list[ChatMessage], policy: MediaPolicy
                     ) -> tuple[list[Message], str | None, dict[str, list[Any]]]:
    """Request messages -> (template turns, system prompt, {"images", "videos", "audios": items}) by
    `lf_data.messages.from_openai`; each media part is read under the policy and leaves its kind's
    placeholder (`<image>`, `<video>`, `<audio>`) where it was (lf_serve.multimodal)."""
    from lf_data.aligner import PLACEHOLDERS

    media: dict[str, list[Any]] = {kind: [] for kind in PLACEHOLDERS}

    def item(i: int, part: Mapping[str, Any]) -> str:
        part_type = part.get("type")
        kind = MEDIA_PARTS.get(part_type) if isinstance(part_type, str) else None
        if kind is None:
            raise RequestError(f"messages[{i}]: unknown content part type {part_type!r}.", "messages")
        if part_type == "input_audio":
            audio = part.get("input_audio") or {}
            if not audio.get("data"):
                raise RequestError(f"messages[{i}]: an input_audio part needs input_audio.data (base64).", "messages")
            media[kind].append(read_input_audio(audio["data"], audio.get("format"), policy))
        else:
            url = (part.get(part_type) or {}).get("url")
            if not url:
                raise RequestError(f"messages[{i}]: an {part_type} part needs {part_type}.url.", "messages")
            media[kind].append(read_media(kind, url, policy))
        return PLACEHOLDERS[kind]

    try:
        out, system = from_openai([m.model_dump(exclude_none=True) for m in messages], item)
    except MessageError as err:
        raise RequestError(str(err), "messages") from None
    return out, system, media


def chosen_tools(body: ChatCompletionRequest) -> list[dict[str, Any]] | None:
    if not body.tools or body.tool_choice == "none":
        return None
    tools = [t.model_dump(exclude_none=True) for t in body.tools]
    if body.tool_choice is not None and not isinstance(body.tool_choice, str):
        name = body.tool_choice.function.get("name")
        tools = [t for t in tools if t["function"]["name"] == name]
        if not tools:
            raise RequestError(f"tool_choice names {name!r}, which is not among the tools.", "tool_choice")
    return tools


def sampling_overrides(body: Any, max_tokens: int | None) -> dict[str, Any]:
    overrides = {"temperature": body.temperature, "top_p": body.top_p, "top_k": body.top_k, "n": body.n,
                 "max_tokens": max_tokens, "stop": body.stop, "seed": body.seed,
                 "repetition_penalty": body.repetition_penalty}
    return {k: v for k, v in overrides.items() if v is not None}


# -- response building ----------------------------------------------------------------------------------
def usage(responses: list[Response]) -> Usage:
    prompt = responses[0].prompt_tokens if responses else 0
    completion = sum(r.completion_tokens for r in responses)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def response_message(response: Response) -> ResponseMessage:
    if response.tool_calls:
        calls = [ToolCall.model_validate(c) for c in to_openai_tool_calls(response.tool_calls)]
        return ResponseMessage(content=None, tool_calls=calls)
    return ResponseMessage(content=response.text)


def sse(events: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        async for event in events:
            yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def stream_chat(engine: ChatEngine, request: Any, with_tools: bool, reply_id: str, created: int,
                      include_usage: bool) -> AsyncIterator[dict[str, Any]]:
    """OpenAI chat.completion.chunk events. With tools, each answer is held until it is complete,
    then sent as content or as tool_calls."""
    from lf_serve.tool_calls import parse_tool_calls

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": reply_id, "object": "chat.completion.chunk", "created": created, "model": engine.model_name,
                "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}]}

    for index in range(request.n):
        yield chunk(index, {"role": "assistant", "content": ""})
    held, counts = [""] * request.n, [0] * request.n
    try:
        async for event in engine.astream_events(request):
            counts[event.index] = max(counts[event.index], event.completion_tokens)
            if with_tools:
                held[event.index] += event.text
            elif event.text:
                yield chunk(event.index, {"content": event.text})
            if event.finish_reason is None:
                continue
            finish = event.finish_reason
            if with_tools:
                calls = parse_tool_calls(held[event.index], engine.tool_format)
                if calls:
                    deltas = [{"index": k, **c} for k, c in enumerate(to_openai_tool_calls(calls))]
                    yield chunk(event.index, {"tool_calls": deltas})
                    finish = "tool_calls"
                elif held[event.index]:
                    yield chunk(event.index, {"content": held[event.index]})
            yield chunk(event.index, {}, finish)
    except RequestError as err:
        yield error_body(err.message, err.type, err.param, err.code)
        return
    if include_usage:
        prompt, completion = len(request.prompt_ids), sum(counts)
        yield {"id": reply_id, "object": "chat.completion.chunk", "created": created, "model": engine.model_name,
               "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                        "total_tokens": prompt + completion}}


async def stream_completion(engine: ChatEngine, request: Any, echo: bool, reply_id: str, created: int,
                            include_usage: bool) -> AsyncIterator[dict[str, Any]]:
    def chunk(index: int, text: str, finish: str | None = None) -> dict[str, Any]:
        return {"id": reply_id, "object": "text_completion", "created": created, "model": engine.model_name,
                "choices": [{"index": index, "text": text, "finish_reason": finish, "logprobs": None}]}

    counts = [0] * request.n
    if echo:
        for index in range(request.n):
            yield chunk(index, request.prompt_text or "")
    try:
        async for event in engine.astream_events(request):
            counts[event.index] = max(counts[event.index], event.completion_tokens)
            if event.text or event.finish_reason:
                yield chunk(event.index, event.text, event.finish_reason)
    except RequestError as err:
        yield error_body(err.message, err.type, err.param, err.code)
        return
    if include_usage:
        prompt, completion = len(request.prompt_ids), sum(counts)
        yield {"id": reply_id, "object": "text_completion", "created": created, "model": engine.model_name,
               "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                        "total_tokens": prompt + completion}}
