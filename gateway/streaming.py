"""The SSE relay response: sends each upstream chunk on as it arrives, timing it and tallying
usage; turns a failure after the first byte into one error frame + [DONE]; finishes the record."""
from __future__ import annotations

import asyncio
import time

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.disconnect import DisconnectGuard
from gateway.dispatch import OpenedStream
from gateway.errors import BudgetExhausted, UpstreamError, error_info
from gateway.exchange import Exchange
from gateway.services import Services
from gateway.sse import DONE_FRAME, error_frame
from gateway.stream_tally import StreamTally, payload_text
from gateway.usage_emit import finish


class SSERelayResponse(Response):
    media_type = "text/event-stream"

    def __init__(self, svc: Services, ex: Exchange, opened: OpenedStream, tally: StreamTally,
                 guard: DisconnectGuard, max_output_tokens: int | None = None) -> None:
        self.svc, self.ex, self.opened, self.tally, self.guard = svc, ex, opened, tally, guard
        self.max_output_tokens = max_output_tokens  # what a hard USD budget still pays for (None: no cap)
        self.output_tokens = 0  # counted only under a cap
        self.status_code = 200
        self.background = None
        self.raw_headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                            (b"x-accel-buffering", b"no")]
        self.raw_headers += [(k.encode(), v.encode("latin-1")) for k, v in ex.response_headers().items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ex, tally = self.ex, self.tally
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await self._relay(send)
        except (UpstreamError, BudgetExhausted) as exc:  # after the first byte: tell the client in-band, end
            info = error_info(exc)
            ex.fail("error", 200, info.type, exc.message)
            self.guard.close()
            try:
                await send({"type": "http.response.body", "more_body": False,
                            "body": error_frame(info.message, info.type, info.code) + DONE_FRAME})
            except OSError:
                ex.fail("aborted", 200, "client_disconnected", "client disconnected mid-stream")
        except asyncio.CancelledError:
            if not self.guard.absorb():
                raise
            ex.fail("aborted", 200, "client_disconnected", "client disconnected mid-stream")
        except OSError:
            ex.fail("aborted", 200, "client_disconnected", "client disconnected mid-stream")
        finally:
            self.guard.close()
            await self._close_upstream()
            self._settle_usage()
            finish(self.svc, ex)
            del tally.payloads[:]

    async def _relay(self, send: Send) -> None:
        tally, clock, rest = self.tally, self.ex.clock, self.opened.rest
        out, _ = tally.accept(self.opened.first)
        capped = self.max_output_tokens is not None
        if capped:
            self._charge(self.opened.first)
        if out is not None:
            await send({"type": "http.response.body", "body": b"data: " + out + b"\n\n", "more_body": True})
        async for payload in rest:
            now = time.perf_counter()
            out, is_content = tally.accept(payload)
            if is_content:
                clock.mark_chunk(now)
                if capped:
                    self._charge(payload)
            if out is not None:
                await send({"type": "http.response.body", "body": b"data: " + out + b"\n\n", "more_body": True})
        self.guard.close()
        await send({"type": "http.response.body", "body": DONE_FRAME, "more_body": False})

    def _charge(self, payload: bytes) -> None:
        """Count the chunk's output tokens against the budget cap; cut the stream past it."""
        assert self.max_output_tokens is not None
        self.output_tokens += self.svc.tokens.count_text(payload_text(payload), self.ex.alias)
        if self.output_tokens > self.max_output_tokens:
            raise BudgetExhausted(f"team {self.ex.team!r} reached its USD budget mid-stream; "
                                  "the rest of this response is not served", code="budget_exceeded")

    async def _close_upstream(self) -> None:
        try:
            await self.opened.rest.aclose()  # type: ignore[attr-defined]
        except Exception:  # closing a broken connection may fail; the stream is over either way
            pass

    def _settle_usage(self) -> None:
        ex, tally = self.ex, self.tally
        ex.finish_reason = tally.finish_reason
        ex.response_model = tally.response_model
        usage = tally.usage
        if usage is not None and isinstance(usage.get("completion_tokens"), int):
            ex.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            ex.completion_tokens = int(usage["completion_tokens"])
            ex.usage_source = "upstream"
        else:
            ex.completion_tokens = self.svc.tokens.count_text(tally.completion_text(), ex.alias)
            ex.usage_source = "counted"
