"""The SSE relay response: sends each upstream chunk on as it arrives, timing its content and
tallying usage; turns a failure after the first byte into one error frame + [DONE]; gives up on a
client that stops reading (the upstream connection is released); finishes the record."""
from __future__ import annotations

import asyncio
import time

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.backends.base import Chunks
from gateway.disconnect import DisconnectGuard
from gateway.dispatch import AttemptObserver, OpenedStream
from gateway.errors import BudgetExhausted, UpstreamError, error_info
from gateway.exchange import Exchange
from gateway.outcome import stream_outcome
from gateway.services import Services
from gateway.sse import DONE_FRAME, error_frame
from gateway.stream_tally import OutputCap, StreamTally, payload_text
from gateway.usage_emit import finish
from gateway.write_watch import WriteWatch

_GONE = "client disconnected mid-stream"


class SSERelayResponse(Response):
    media_type = "text/event-stream"

    def __init__(self, svc: Services, ex: Exchange, opened: OpenedStream, tally: StreamTally,
                 guard: DisconnectGuard, observer: AttemptObserver, max_output_tokens: int | None = None) -> None:
        self.svc, self.ex, self.opened, self.tally, self.guard = svc, ex, opened, tally, guard
        self.observer = observer  # told of the stream's success (and TTFT) at its first content chunk
        # what a hard USD budget still pays for (None: no cap)
        self.cap = OutputCap(max_output_tokens) if max_output_tokens is not None else None
        self.write_timeout_s = svc.settings.stream_write_timeout_s
        self.status_code = 200
        self.background = None
        self.raw_headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                            (b"x-accel-buffering", b"no")]
        self.raw_headers += [(k.encode(), v.encode("latin-1")) for k, v in ex.response_headers().items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ex, tally = self.ex, self.tally
        self.watch = WriteWatch(self.write_timeout_s)
        try:
            start = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
            await self.watch.send(send, start)
            await self._relay(send)
        except (UpstreamError, BudgetExhausted) as exc:  # after the first byte: tell the client in-band, end
            await self._fail_in_band(send, exc)
        except asyncio.CancelledError:
            self.observer.abandoned()  # before its first content: no news of the backend, the probe given back
            stalled, gone = self.watch.absorb(), self.guard.absorb()  # either (or both) may have cancelled
            if stalled:
                ex.fail("aborted", 200, "client_stalled",
                        f"the client read nothing for {self.write_timeout_s:g} s; the stream was ended")
            elif gone:
                ex.fail("aborted", 200, "client_disconnected", _GONE)
            else:
                await self._cut_by_shutdown(send)
        except OSError:
            self.observer.abandoned()
            ex.fail("aborted", 200, "client_disconnected", _GONE)
        except Exception as exc:  # a bug of ours: an error record and an error frame, never a broken body
            self.observer.abandoned()
            self.svc.log.error("request %s: the relay failed", ex.request_id, exc_info=exc)
            info = error_info(exc)
            ex.fail("error", 200, info.type, info.message)
            self.guard.close()
            await self._send_last(send, error_frame(info.message, info.type, info.code) + DONE_FRAME,
                                  self.write_timeout_s)
        finally:
            self.watch.stop()
            self.guard.close()
            await self._close_upstream()
            ex.outcome = stream_outcome(self.svc, ex, tally)
            finish(self.svc, ex)
            del tally.payloads[:]

    async def _cut_by_shutdown(self, send: Send) -> None:
        """Not the client: uvicorn cancels what still runs at shutdown's grace limit. The record says
        so, and the client gets an error frame + [DONE] rather than a broken chunked body."""
        message = "the gateway shut down before the stream ended"
        self.ex.fail("error", 200, "shutdown", message)
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()  # ending now, cleanly, is what the cancel asked for
        self.guard.close()
        await self._send_last(send, error_frame(message, "service_unavailable", "shutdown") + DONE_FRAME, 1.0)

    async def _send_last(self, send: Send, body: bytes, timeout_s: float) -> bool:
        """The closing frame, under a deadline of its own (the watch is stopped); whether it went out."""
        self.watch.stop()
        try:
            async with asyncio.timeout(timeout_s):
                await send({"type": "http.response.body", "more_body": False, "body": body})
        except (OSError, TimeoutError):
            return False
        return True

    async def _fail_in_band(self, send: Send, exc: UpstreamError | BudgetExhausted) -> None:
        info = error_info(exc)
        self.ex.fail("error", 200, info.type, exc.message)
        if isinstance(exc, UpstreamError):  # the upstream broke after its first byte: the breaker hears of it
            self.svc.live.record_result(exc.backend or self.opened.target.backend, ok=False)
        self.guard.close()
        # Whether or not the client is still there to read it, the request failed upstream: stays `error`.
        frame = error_frame(info.message, info.type, info.code) + DONE_FRAME
        await self._send_last(send, frame, self.write_timeout_s)

    async def _relay(self, send: Send) -> None:
        watch, next_batch = self.watch, self.opened.rest.__anext__  # not anext(rest, None): no wrapper per read
        clock, perf_counter = asyncio.get_running_loop().time, time.perf_counter
        batch: Chunks = self.opened.first
        now = self.ex.clock.first_byte
        while True:  # per chunk: this loop, the backend's generator, one send
            body, cut = self._frames(batch, now)
            if body:  # watch.send(...) inlined: one coroutine less per relayed read
                watch.since = clock()
                await send({"type": "http.response.body", "body": body, "more_body": True})
                watch.since = None
            if cut is not None:
                raise cut
            try:
                batch = await next_batch()
            except StopAsyncIteration:
                break
            now = perf_counter()
        if self.ex.clock.first_chunk is None:  # a whole stream without content (e.g. an empty answer): a success
            self.observer.succeeded(self.opened.target)
        self.guard.close()
        await watch.send(send, {"type": "http.response.body", "body": DONE_FRAME, "more_body": False})

    def _frames(self, batch: Chunks, now: float | None) -> tuple[bytes, BudgetExhausted | None]:
        """One upstream read's chunks, tallied and timed one by one, as the bytes of one write; and the
        cut when a chunk crossed the budget's cap (the chunks before it are still sent)."""
        frame_of, clock, cap = self.tally.frame, self.ex.clock, self.cap
        frames: list[bytes] = []
        for payload in batch:
            frame, is_content = frame_of(payload)
            if is_content:
                if clock.first_chunk is None:
                    self._first_token(now)
                else:
                    clock.mark_chunk(now)
                if cap is not None and cap.crossed(payload, self._tokens_of):
                    return b"".join(frames), BudgetExhausted(
                        f"team {self.ex.team!r} reached its USD budget mid-stream; the rest of this response "
                        "is not served", code="budget_exceeded")
            if frame is not None:
                frames.append(frame)
        return b"".join(frames), None

    def _first_token(self, now: float | None) -> None:
        """TTFT: the first chunk with content. The stream's success is reported here, with it (dispatch
        only saw the first byte, which may have been a role-only chunk of a stream that then failed)."""
        self.ex.clock.mark_chunk(now)
        self.observer.succeeded(self.opened.target)

    def _tokens_of(self, payload: bytes) -> int:
        return self.svc.tokens.count_text(payload_text(payload), self.ex.alias)

    async def _close_upstream(self) -> None:
        try:
            await self.opened.rest.aclose()  # type: ignore[attr-defined]
        except Exception:  # closing a broken connection may fail; the stream is over either way
            pass
