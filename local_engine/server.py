"""The engine's OpenAI-compatible HTTP server: ``create_app(engine, tokenizer, info)`` wires the routes.

Chat and text completions (streamed or not), models, tokenize, Prometheus metrics, the engine
state the gateway polls, and health. Every error is OpenAI-shaped; nothing happens at import.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response, StreamingResponse

from local_engine.admission import EngineLimits
from local_engine.async_engine import AsyncEngine
from local_engine.body_limit import DEFAULT_MAX_BODY_BYTES, BodyLimit
from local_engine.chat_template import ChatTemplateError
from local_engine.errors import EngineDead, EngineError
from local_engine.http_errors import HttpError, ModelNotFound, http_error, status_error, validation_error
from local_engine.metrics import EngineMetrics
from local_engine.prompts import PromptTokenizer, chat_prompt_ids, chat_request_ids, completion_request_ids
from local_engine.protocol import ChatCompletionRequest, ChatMessage, CompletionRequest, ProtocolError
from local_engine.responses import ResponseIds, model_list
from local_engine.serving import chat_body, chat_events, collect, completion_body, completion_events
from local_engine.trace_context import TraceParent, parse_traceparent


@dataclass(frozen=True)
class ServerInfo:
    """Static facts the server reports (the engine's live numbers come from its snapshot)."""

    model_name: str
    served_model_names: tuple[str, ...]  # names a request's "model" may use (model_name included)
    kv_bytes_per_token: int
    kv_dtype: str
    device: str = "cpu"
    created: int = 0
    torch_threads: int = 0  # torch's CPU threads where the model runs
    kernels: str = "torch"  # small steps' kernels: "native" (local_engine/native) or "torch"


class ServerTokenizer(PromptTokenizer, Protocol):
    def token_text(self, token_id: int) -> str: ...


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_generation_prompt: bool = True
    add_special_tokens: bool = True


def _trace(request: Request) -> TraceParent | None:
    return parse_traceparent(request.headers.get("traceparent"))


Trace = Annotated[TraceParent | None, Depends(_trace)]


def error_response(err: HttpError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def create_app(engine: AsyncEngine, tokenizer: ServerTokenizer, info: ServerInfo,
               on_shutdown: Callable[[], None] | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    metrics = EngineMetrics(engine.snapshot, info.model_name)
    engine.observer = metrics
    app = FastAPI(title="hybridgw engine", lifespan=_lifespan(engine, on_shutdown))
    app.state.metrics = metrics
    app.state.engine = engine
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    _add_error_handlers(app)
    _add_generation_routes(app, engine, tokenizer, info)
    _add_info_routes(app, engine, tokenizer, info, metrics)
    return app


def _lifespan(engine: AsyncEngine, on_shutdown: Callable[[], None] | None) -> Callable[[FastAPI], Any]:
    """The engine runs while the app serves; at the end it stops, then `on_shutdown` (flush the last spans)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        try:
            yield
        finally:
            engine.shutdown()
            if on_shutdown is not None:
                on_shutdown()  # flush the last spans

    return lifespan


def _check_model(info: ServerInfo, name: str | None) -> None:
    if name is not None and name not in info.served_model_names:
        raise ModelNotFound(name, info.served_model_names)


def _add_generation_routes(app: FastAPI, engine: AsyncEngine, tokenizer: ServerTokenizer, info: ServerInfo) -> None:
    """Chat and text completions, streamed (SSE) or whole."""
    limits = engine.limits  # fixed facts: max_model_len, block size, pool size

    def max_tokens_for(requested: int | None, num_prompt_tokens: int) -> int:
        # No max_tokens: whatever room the context (and the pool) leaves, as vLLM does.
        return requested if requested is not None else max(limits.max_new_tokens(num_prompt_tokens), 1)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionRequest, request: Request, trace: Trace) -> Response:
        _check_model(info, body.model)
        body.refuse_tool_calls()  # before the template: nothing rendered for a request refused anyway
        prompt_ids = chat_request_ids(tokenizer, body)
        sampling = body.sampling_params(max_tokens_for(body.requested_max_tokens(), len(prompt_ids)),
                                        body.requested_logprobs())
        ids = ResponseIds.new("chatcmpl", info.model_name)
        stream = engine.submit(prompt_ids, sampling, priority=body.priority, request_id=ids.id,
                               trace_context=trace)
        if body.stream:
            return StreamingResponse(chat_events(stream, ids, tokenizer, body.include_usage),
                                     media_type="text/event-stream", background=BackgroundTask(stream.close))
        result = await collect(stream, request)
        return JSONResponse(chat_body(ids, result, tokenizer, sampling.logprobs is not None))

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request, trace: Trace) -> Response:
        _check_model(info, body.model)
        prompt_ids, prompt_text = completion_request_ids(tokenizer, body)
        if body.echo and body.logprobs is not None:
            raise ProtocolError("echo together with logprobs is not supported", "echo")
        sampling = body.sampling_params(body.requested_max_tokens(), body.requested_logprobs())
        echo_text = prompt_text if body.echo else ""
        ids = ResponseIds.new("cmpl", info.model_name)
        stream = engine.submit(prompt_ids, sampling, priority=body.priority, request_id=ids.id,
                               trace_context=trace)
        if body.stream:
            events = completion_events(stream, ids, tokenizer, body.include_usage, echo_text)
            return StreamingResponse(events, media_type="text/event-stream",
                                     background=BackgroundTask(stream.close))
        result = await collect(stream, request)
        return JSONResponse(completion_body(ids, result, tokenizer, sampling.logprobs is not None,
                                            echo_text))


def _add_info_routes(app: FastAPI, engine: AsyncEngine, tokenizer: ServerTokenizer, info: ServerInfo,
                     metrics: EngineMetrics) -> None:
    """Models, tokenize, Prometheus metrics, the state the gateway polls, health."""
    limits = engine.limits

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return model_list(info.model_name, info.created, limits.max_model_len)

    @app.post("/tokenize")
    async def tokenize(body: TokenizeRequest) -> dict[str, Any]:
        _check_model(info, body.model)
        if (body.prompt is None) == (body.messages is None):
            raise ProtocolError("give exactly one of prompt or messages", "prompt")
        if body.messages is not None:
            tokens = chat_prompt_ids(tokenizer, [m.as_template_input() for m in body.messages],
                                     add_generation_prompt=body.add_generation_prompt)
        else:
            tokens = tokenizer.encode(body.prompt or "", add_special_tokens=body.add_special_tokens)
        return {"tokens": tokens, "count": len(tokens), "max_model_len": limits.max_model_len}

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/engine/state")
    async def engine_state() -> dict[str, Any]:
        return _state_body(engine, info, limits)

    @app.get("/health", response_model=None)
    async def health() -> Response:
        if engine.is_alive:
            return JSONResponse({"status": "ok"})
        return error_response(http_error(EngineDead(engine.dead_reason or "the engine is not running")))


def _state_body(engine: AsyncEngine, info: ServerInfo, limits: EngineLimits) -> dict[str, Any]:
    """/v1/engine/state: the engine's snapshot with the server's and the engine's fixed facts."""
    s = engine.snapshot()
    return {
        "model": info.model_name, "device": info.device, "kv_dtype": info.kv_dtype,
        "kv_bytes_per_token": info.kv_bytes_per_token, "block_size": limits.block_size,
        "num_blocks_total": s.num_blocks_total, "num_blocks_free": s.num_blocks_free,
        "kv_cache_usage": round(s.kv_usage, 6), "num_running": s.num_running,
        "num_waiting": s.num_waiting, "max_waiting": limits.max_waiting,
        "num_preemptions": s.num_preemptions, "prefix_cache_hit_rate": round(s.prefix_cache_hit_rate, 6),
        "prefill_tokens_per_s": round(s.prefill_tokens_per_s, 1),
        "decode_tokens_per_s": round(s.decode_tokens_per_s, 1),
        "max_model_len": limits.max_model_len, "max_num_seqs": limits.max_num_seqs,
        "prefix_caching": s.prefix_caching, "num_cached_blocks": s.num_cached_blocks,
        "prefix_queried_tokens": s.prefix_queried_tokens, "prefix_hit_tokens": s.prefix_hit_tokens,
        "torch_threads": info.torch_threads, "kernels": info.kernels,
        "num_steps_total": s.num_steps_total, "step_seconds_total": round(s.step_seconds_total, 6),
        "step_cpu_seconds_total": round(s.step_cpu_seconds_total, 6),
        "healthy": engine.is_alive,
    }


def _add_error_handlers(app: FastAPI) -> None:
    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(validation_error(list(exc.errors())))

    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        return error_response(http_error(exc))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)  # FastAPI's own answer would be {"detail": ...}
        err = status_error(exc.status_code, str(exc.detail))
        return JSONResponse(err.body(), status_code=err.status, headers=exc.headers)

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    for exc_type in (EngineError, ProtocolError, ChatTemplateError, ModelNotFound):
        app.add_exception_handler(exc_type, on_error)
    app.add_exception_handler(Exception, on_error)  # a 500 without a traceback for the client
