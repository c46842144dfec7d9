"""A SIMULATED hosted LLM API (OpenAI-compatible, a real HTTP server under uvicorn) for benchmarks
and tests without the internet: TTFT and per-token latency drawn per model from
tests/fakes/hosted_profiles.py, 429s above a requests-per-second limit, usage counted with tiktoken
(OpenAI's chat formula). Every response says `x-simulated: true` and `system_fingerprint:
"hybridgw-hosted-sim"`: its numbers are never a real provider's.

Run: `python -m tests.fakes.hosted_sim --port P [--rps-limit 20] [--profile NAME=MED_MS,P90_MS,TPS,SD]`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from typing import Any

import orjson
import tiktoken

from policies.offline import configure_offline_env
from tests.fakes.hosted_profiles import PROFILES, Profile, RateLimit, draw, parse_profile, profile_for

Send = Any
Receive = Any
FINGERPRINT = "hybridgw-hosted-sim"
WORDS = (" the", " model", " answer", " is", " simulated", " here", " and", " now")


def _headers(content_type: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", content_type), (b"x-simulated", b"true")]


async def _json(send: Send, status: int, data: Any, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = orjson.dumps(data)
    headers = [*_headers(b"application/json"), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _error(message: str, kind: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _prompt_tokens(enc: tiktoken.Encoding, body: dict[str, Any]) -> int:
    """OpenAI's published chat count (3 per message + its fields, 3 to prime the reply), written
    here on its own so that the gateway's counter is checked against it, not against itself."""
    if "messages" not in body:
        prompt = body.get("prompt", "")
        return sum(len(enc.encode_ordinary(p)) for p in ([prompt] if isinstance(prompt, str) else prompt))
    total = 3
    for message in body["messages"]:
        total += 3 + sum(len(enc.encode_ordinary(v)) for v in message.values() if isinstance(v, str))
        total += 1 if "name" in message else 0
    return total


class HostedSim:
    def __init__(self, profiles: dict[str, Profile], rps_limit: float | None, seed: int) -> None:
        self.profiles, self.limit, self.rng = profiles, RateLimit(rps_limit), random.Random(seed)
        self.encodings = {name: tiktoken.get_encoding(name) for name in ("o200k_base", "cl100k_base")}

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["method"] == "GET":
            data = [{"id": name, "object": "model", "owned_by": "simulated"} for name in self.profiles]
            await _json(send, 200, {"object": "list", "data": data})
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            await _json(send, 400, _error("the body is not JSON", "invalid_request_error", "invalid_json"))
            return
        if not self.limit.allow(time.monotonic()):
            await _json(
                send,
                429,
                _error("Rate limit reached for requests (simulated)", "requests", "rate_limit_exceeded"),
                [(b"retry-after", b"1")],
            )
            return
        await self._complete(scope["path"].endswith("/chat/completions"), body, send)

    def _usage(self, body: dict[str, Any], model: str, completion: int) -> dict[str, int]:
        encoding = (
            "o200k_base" if model.startswith(("gpt-4o", "gpt-4.1", "o1", "o3", "o4")) else "cl100k_base"
        )
        prompt = _prompt_tokens(self.encodings[encoding], body)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    async def _complete(self, chat: bool, body: dict[str, Any], send: Send) -> None:
        model = str(body.get("model", "gpt-4o-mini"))
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        limit = max_tokens if isinstance(max_tokens, int) else None
        drawn = draw(profile_for(model, self.profiles), self.rng, limit)
        n_out, ttft, gap = drawn.output_tokens, drawn.ttft_s, drawn.gap_s
        usage = self._usage(body, model, n_out)
        base = {
            "id": f"sim-{drawn.id_bits}",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": FINGERPRINT,
        }
        if not body.get("stream"):
            await asyncio.sleep(ttft + gap * (n_out - 1))
            text = "".join(WORDS[i % len(WORDS)] for i in range(n_out))
            choice = (
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}
                if chat
                else {"index": 0, "text": text, "finish_reason": "length", "logprobs": None}
            )
            kind = "chat.completion" if chat else "text_completion"
            await _json(send, 200, {**base, "object": kind, "choices": [choice], "usage": usage})
            return
        await self._stream(chat, body, send, base, ttft, gap, n_out, usage)

    async def _stream(
        self,
        chat: bool,
        body: dict[str, Any],
        send: Send,
        base: dict[str, Any],
        ttft: float,
        gap: float,
        n_out: int,
        usage: dict[str, int],
    ) -> None:
        kind = "chat.completion.chunk" if chat else "text_completion"

        def event(choice: dict[str, Any], **extra: Any) -> dict[str, Any]:
            return {
                "type": "http.response.body",
                "more_body": True,
                "body": b"data: "
                + orjson.dumps({**base, "object": kind, "choices": [choice], **extra})
                + b"\n\n",
            }

        await send({"type": "http.response.start", "status": 200, "headers": _headers(b"text/event-stream")})
        if chat:
            await send(
                event({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None})
            )
        await asyncio.sleep(ttft)
        for i in range(n_out):
            if i:
                await asyncio.sleep(gap)
            word, finish = WORDS[i % len(WORDS)], ("length" if i == n_out - 1 else None)
            await send(
                event(
                    {"index": 0, "delta": {"content": word}, "finish_reason": finish}
                    if chat
                    else {"index": 0, "text": word, "finish_reason": finish, "logprobs": None}
                )
            )
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            await send(
                {
                    "type": "http.response.body",
                    "more_body": True,
                    "body": b"data: "
                    + orjson.dumps({**base, "object": kind, "choices": [], "usage": usage})
                    + b"\n\n",
                }
            )
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    configure_offline_env()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9002)
    p.add_argument("--rps-limit", type=float, default=None, help="429 above this many requests per second")
    p.add_argument(
        "--profile", action="append", default=[], help="NAME=TTFT_MEDIAN_MS,TTFT_P90_MS,TOK_PER_S,SD"
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    profiles = dict(PROFILES)
    for text in args.profile:
        try:
            name, profile = parse_profile(text)
        except ValueError as exc:
            p.error(str(exc))
        profiles[name] = profile
    uvicorn.run(
        HostedSim(profiles, args.rps_limit, args.seed),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
