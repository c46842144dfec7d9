"""A fake OpenAI upstream: a real HTTP server (raw ASGI under uvicorn) for tests and benchmarks.

Run: `python -m tests.fakes.openai_upstream --port P`. Behaviour per request comes from the model
name's suffix (`m;chunks=16;delay_ms=5`), a `user` field `fake:chunks=16;delay_ms=5`, and/or a body
field `"fake": {...}`. Keys: ttft_ms (before the response starts), delay_ms (between chunks),
chunks (4), status + message (error reply), fail_after (drop the connection after k chunks),
no_usage, tag (names the request in /_disconnects), reply_model (the model the reply names, as
OpenAI names a dated snapshot; default: the requested one).
A streamed chat reply opens as OpenAI's does: a role-only chunk (`"content": ""`), then content;
role_delay_ms waits between the two (a prefill), no_role=1 leaves the role chunk out.
Hostile or broken upstreams: error_after=k (an in-band `data: {"error": …}` event after k content
chunks), error_body=1 (a non-streamed 200 whose body is an error), usage_prompt=<JSON number>
(the prompt_tokens it reports, e.g. 1e300 or -5), body_delay_ms (non-streamed: headers at once,
the body that much later), chunk_bytes=N (pad each content chunk to about N bytes), raw_body=TEXT (a
non-streamed 200 whose body is TEXT as given; embeddings too), raw_frame=TEXT (a stream's first event after the role chunk
is `data: TEXT`), echo_key=1 (an error status whose message repeats the request's Authorization header), redirect=PATH
(a 307 to PATH on the same server, which a client that follows it re-POSTs there), only_empty=1 (a stream of `chunks`
`data: {}` frames and [DONE], nothing else).
Inspection: GET /_last_request (path, headers, body as received), GET /_disconnects, POST /_reset.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson

Send = Any
Receive = Any


class DropConnection(Exception):
    """Raised mid-response so uvicorn closes the socket: the client sees a broken stream."""


@dataclass
class FakeState:
    last_request: dict[str, Any] | None = None
    disconnects: list[str] = field(default_factory=list)
    requests: int = 0


def _options(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The model name without its suffix, and the behaviour options from suffix + body."""
    model = str(body.get("model", "m"))
    name, *pairs = model.split(";")
    opts: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        opts[key] = value
    user = body.get("user")
    if isinstance(user, str) and user.startswith("fake:"):  # a standard field, so proxies pass it on
        for pair in user[5:].split(";"):
            key, _, value = pair.partition("=")
            opts[key] = value
    if isinstance(body.get("fake"), dict):
        opts.update(body["fake"])
    return name, opts


def _num(opts: dict[str, Any], key: str, default: float) -> float:
    return float(opts.get(key, default))


async def _json(send: Send, status: int, data: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = orjson.dumps(data)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                + (headers or [])})
    await send({"type": "http.response.body", "body": body})


async def _raw(send: Send, content: bytes) -> None:
    """A 200 whose body is `content` as given (JSON or not)."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]})
    await send({"type": "http.response.body", "body": content})


def _prompt_tokens(body: dict[str, Any]) -> int:
    if "messages" in body:
        return sum(len(str(m.get("content", "")).split()) for m in body["messages"] if isinstance(m, dict))
    value = body.get("prompt", body.get("input", ""))
    items = [value] if isinstance(value, str) else list(value)
    return sum(len(v.split()) if isinstance(v, str) else 1 for v in items)


class Disconnect:
    """Watches the client side of one request; `pause` sleeps unless the client leaves first."""

    def __init__(self, receive: Receive) -> None:
        self.gone = asyncio.Event()
        self.done = False
        self._task = asyncio.get_running_loop().create_task(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        if not self.done:
            self.gone.set()

    async def pause(self, seconds: float) -> bool:
        if seconds > 0:
            try:
                await asyncio.wait_for(self.gone.wait(), seconds)
            except TimeoutError:
                pass
        return self.gone.is_set()

    def close(self) -> None:
        self.done = True
        self._task.cancel()


def _chat_chunk(model: str, n: int, delta: dict[str, Any], finish: str | None, with_usage: bool) -> bytes:
    chunk: dict[str, Any] = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model,
                             "choices": [{"index": i, "delta": delta, "finish_reason": finish} for i in range(n)]}
    if with_usage:
        chunk["usage"] = None
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _text_chunk(model: str, n: int, text: str, finish: str | None, with_usage: bool) -> bytes:
    chunk: dict[str, Any] = {"id": "cmpl-fake", "object": "text_completion", "created": 0, "model": model,
                             "choices": [{"index": i, "text": text, "finish_reason": finish, "logprobs": None}
                                         for i in range(n)]}
    if with_usage:
        chunk["usage"] = None
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _usage(body: dict[str, Any], completion: int, opts: dict[str, Any]) -> dict[str, Any]:
    prompt: Any = _prompt_tokens(body)
    if "usage_prompt" in opts:  # a broken upstream's number, as given (1e300, -5, "12")
        value = opts["usage_prompt"]
        prompt = orjson.loads(value) if isinstance(value, str) else value
    total = prompt + completion if isinstance(prompt, (int, float)) else completion
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


class FakeUpstream:
    def __init__(self, defaults: dict[str, Any] | None = None) -> None:
        self.state = FakeState()
        self.defaults = defaults or {}  # options applied to every request (overridable per request)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        path, method = scope["path"], scope["method"]
        if method == "GET":
            await self._get(path, send)
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        if path == "/_reset":
            self.state = FakeState()
            await _json(send, 200, {"ok": True})
            return
        await self._generate(scope, path, raw, receive, send)

    async def _get(self, path: str, send: Send) -> None:
        if path == "/_last_request":
            await _json(send, 200, self.state.last_request or {})
        elif path == "/_disconnects":
            await _json(send, 200, {"tags": self.state.disconnects, "requests": self.state.requests})
        elif path in ("/health", "/v1/health"):
            await _json(send, 200, {"status": "ok"})
        elif path == "/v1/models":
            await _json(send, 200, {"object": "list", "data": [
                {"id": "m", "object": "model", "created": 0, "owned_by": "fake"}]})
        else:
            await _json(send, 404, {"error": {"message": f"no route {path}", "type": "not_found", "param": None,
                                              "code": None}})

    async def _generate(self, scope: dict[str, Any], path: str, raw: bytes, receive: Receive, send: Send) -> None:
        body = orjson.loads(raw) if raw else {}
        self.state.requests += 1
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.state.last_request = {"path": path, "headers": headers, "body": body}
        model, opts = _options(body)
        opts = {**self.defaults, **opts}
        model = str(opts.get("reply_model", model))
        if "redirect" in opts and path != opts["redirect"]:  # same origin: Location is a path
            await _json(send, 307, {"moved": True}, [(b"location", str(opts["redirect"]).encode())])
            return
        if "status" in opts:
            status = int(opts["status"])
            extra = [(b"retry-after", b"1")] if status == 429 else []
            message = headers.get("authorization", "") if "echo_key" in opts else opts.get("message")
            await _json(send, status, {"error": {"message": str(message or f"fake error {status}"),
                                                 "type": "fake_error", "param": None, "code": f"fake_{status}"}},
                        extra)
            return
        watch = Disconnect(receive)
        try:
            if await watch.pause(_num(opts, "ttft_ms", 0) / 1000):
                self.state.disconnects.append(str(opts.get("tag", "")))
                return
            if path == "/v1/embeddings" and "raw_body" in opts:
                await _raw(send, str(opts["raw_body"]).encode())
            elif path == "/v1/embeddings":
                await _json(send, 200, _embeddings(body, model))
            elif path not in ("/v1/chat/completions", "/v1/completions"):
                await _json(send, 404, {"error": {"message": f"no route {path}", "type": "not_found"}})
            elif body.get("stream"):
                await self._stream(path, body, model, opts, watch, send)
            else:
                await self._complete(path, body, model, opts, watch, send)
        finally:
            watch.close()

    async def _stream(self, path: str, body: dict[str, Any], model: str, opts: dict[str, Any], watch: Disconnect,
                      send: Send) -> None:
        chunks, n = int(_num(opts, "chunks", 4)), int(body.get("n") or 1)
        delay, fail_after = _num(opts, "delay_ms", 0) / 1000, int(_num(opts, "fail_after", -1))
        usage_on = bool((body.get("stream_options") or {}).get("include_usage")) and "no_usage" not in opts
        chat = path == "/v1/chat/completions"
        error_after, pad = int(_num(opts, "error_after", -1)), int(_num(opts, "chunk_bytes", 0))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        if "only_empty" in opts:  # a broken server: `data: {}` frames only, then [DONE]
            await send({"type": "http.response.body", "more_body": False,
                        "body": b"data: {}\n\n" * chunks + b"data: [DONE]\n\n"})
            return
        if chat and "no_role" not in opts:  # what OpenAI sends before any token
            await send({"type": "http.response.body", "more_body": True,
                        "body": _chat_chunk(model, n, {"role": "assistant", "content": ""}, None, usage_on)})
            if await watch.pause(_num(opts, "role_delay_ms", 0) / 1000):
                self.state.disconnects.append(str(opts.get("tag", "")))
                return
        if "raw_frame" in opts:
            await send({"type": "http.response.body", "more_body": True,
                        "body": b"data: " + str(opts["raw_frame"]).encode() + b"\n\n"})
        for i in range(chunks):
            if i == fail_after:
                raise DropConnection(f"fake drops the connection after {i} chunks")
            if i == error_after:
                error = {"error": {"message": f"fake in-band error after {i} chunks", "type": "fake_error",
                                   "param": None, "code": "fake_in_band"}}
                await send({"type": "http.response.body", "more_body": False,
                            "body": b"data: " + orjson.dumps(error) + b"\n\ndata: [DONE]\n\n"})
                return
            if await watch.pause(delay if i else 0):  # pause(0): only whether the client left
                self.state.disconnects.append(str(opts.get("tag", "")))
                return
            text = f"tok{i} ".ljust(pad, "x") if pad else f"tok{i} "
            if chat:
                delta = {"role": "assistant", "content": text} if i == 0 and "no_role" in opts else {"content": text}
                frame = _chat_chunk(model, n, delta, None, usage_on)
            else:
                frame = _text_chunk(model, n, text, None, usage_on)
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        tail = _chat_chunk(model, n, {}, "stop", usage_on) if chat else _text_chunk(model, n, "", "stop", usage_on)
        if usage_on:
            last: dict[str, Any] = {"id": "fake", "object": "chat.completion.chunk" if chat else "text_completion", "created": 0,
                    "model": model, "choices": [], "usage": _usage(body, chunks * n, opts)}
            tail += b"data: " + orjson.dumps(last) + b"\n\n"
        await send({"type": "http.response.body", "body": tail + b"data: [DONE]\n\n", "more_body": False})

    async def _complete(self, path: str, body: dict[str, Any], model: str, opts: dict[str, Any], watch: Disconnect,
                        send: Send) -> None:
        if "error_body" in opts:  # some providers answer 200 with an error object
            data: dict[str, Any] = {"error": {"message": "fake error in a 200 body", "type": "server_error",
                                              "param": None, "code": "fake_error_body"}}
        else:
            data = _reply(path, body, model, opts)
        content = str(opts["raw_body"]).encode() if "raw_body" in opts else orjson.dumps(data)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(content)).encode())]})
        if await watch.pause(_num(opts, "body_delay_ms", 0) / 1000):  # headers out, body still coming
            self.state.disconnects.append(str(opts.get("tag", "")))
            return
        await send({"type": "http.response.body", "body": content})


def _reply(path: str, body: dict[str, Any], model: str, opts: dict[str, Any]) -> dict[str, Any]:
    chunks, n = int(_num(opts, "chunks", 4)), int(body.get("n") or 1)
    text = "".join(f"tok{i} " for i in range(chunks))
    if path == "/v1/chat/completions":
        data: dict[str, Any] = {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": model,
                                "choices": [{"index": i, "message": {"role": "assistant", "content": text},
                                             "finish_reason": "stop", "logprobs": None} for i in range(n)]}
    else:
        data = {"id": "cmpl-fake", "object": "text_completion", "created": 0, "model": model,
                "choices": [{"index": i, "text": text, "finish_reason": "stop", "logprobs": None} for i in range(n)]}
    if "no_usage" not in opts:
        data["usage"] = _usage(body, chunks * n, opts)
    return data


def _embeddings(body: dict[str, Any], model: str) -> dict[str, Any]:
    inputs = body.get("input", "")
    items = [inputs] if isinstance(inputs, str) else list(inputs)
    data = []
    for i, item in enumerate(items):
        seed = zlib.crc32(str(item).encode())
        data.append({"object": "embedding", "index": i, "embedding": [((seed >> k) & 255) / 255 for k in range(8)]})
    prompt = _prompt_tokens(body)
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}


class _QuietDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], DropConnection))


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--chunks", type=int, default=None, help="default number of chunks per reply")
    args = parser.parse_args(argv)
    defaults = {} if args.chunks is None else {"chunks": args.chunks}
    logging.getLogger("uvicorn.error").addFilter(_QuietDrops())
    uvicorn.run(FakeUpstream(defaults), host=args.host, port=args.port, log_level="warning", access_log=False,
                lifespan="on", loop="uvloop", http="httptools")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
