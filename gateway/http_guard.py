"""uvicorn's httptools protocol with the bounds uvicorn lacks against slow or greedy clients: a
request head (request line + headers) must arrive within `head_timeout_s` of the connection opening
or of the request's first byte, and be at most `max_head_bytes` long (431), whether it comes in one
read or many; one client address holds at most `max_per_client` connections, all together at most
`max_total` (503 at it; beyond, closed)."""
from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass
from typing import ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from observability.http_parse_errors import OpenAIErrorHttpToolsProtocol


@dataclass(frozen=True)
class ConnectionBounds:
    head_timeout_s: float  # a client dribbling its headers (or sending none) is cut off after this
    max_per_client: int  # connections one client address may hold at once; 0: no bound
    max_total: int  # connections beyond this are closed on arrival (at it, requests get 503)
    max_head_bytes: int = 64 * 1024  # httptools would buffer any length, re-copying it per packet


class HeadTooLarge(Exception):
    """Raised from a parser callback to stop httptools before the request reaches the app."""


HEAD_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n"
                  b"connection: close\r\n\r\n")


def connection_limit(requested: int) -> int:
    """`requested`, but at most half the process's open-file limit: the ledger, the key store,
    spill files and upstream connections need descriptors too, and running out of them kills those."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return requested if soft == resource.RLIM_INFINITY else max(1, min(requested, soft // 2))


class ClientCounts:
    """Connections held per client address, at most `limit` each (0: no bound); shared by the
    connections of one server, all on its event loop's thread, so a plain dict suffices."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held: dict[str, int] = {}

    def take(self, host: str) -> bool:
        """Count one more connection of `host`; False (nothing counted) when it holds `limit` already."""
        held = self.held.get(host, 0)
        if held >= self.limit:
            return False
        self.held[host] = held + 1
        return True

    def give_back(self, host: str) -> None:
        left = self.held[host] - 1
        if left:
            self.held[host] = left
        else:
            del self.held[host]


class GuardedHttpToolsProtocol(OpenAIErrorHttpToolsProtocol):
    """The guard over one connection; `guarded_protocol` binds a subclass to one server's bounds."""

    bounds: ClassVar[ConnectionBounds]
    client_counts: ClassVar[ClientCounts]
    # Takes uvicorn's "Invalid HTTP request received." for a head refused as too large: a 431 is no invalid
    # request, and a client sending such heads on purpose should not write a warning line per connection.
    silent: ClassVar[logging.Logger]

    _head_timer: asyncio.TimerHandle | None = None
    _counted: str | None = None  # the address this connection is counted under
    _head_bytes: int | None = None  # bytes of the request head so far; None: no head under way
    _read_len = 0  # the length of the read being parsed
    _head_refused = False

    # The connection: counted against the total and its address, or closed on arrival.

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.bounds.max_total:  # this one included: one over the total
            transport.close()
            return
        host = self.client[0] if self.client else None
        if host is not None and self.client_counts.limit:
            if not self.client_counts.take(host):
                # Refused before any byte is read: closing is all a client that holds this many gets.
                self.logger.debug("%s holds %d connections already: closing a new one", host, self.client_counts.limit)
                transport.close()
                return
            self._counted = host
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        if self._counted is not None:
            self.client_counts.give_back(self._counted)
            self._counted = None
        super().connection_lost(exc)

    # The head's size: per read while it comes in, as parsed when one read ends it.

    def data_received(self, data: bytes) -> None:
        self._read_len = len(data)
        super().data_received(data)
        if self._head_bytes is None:
            return
        # Still inside a head after this packet: all of it was head (the packet that began it
        # may also end the previous request's body: counted too, a slight over-count).
        self._head_bytes += len(data)
        if self._head_bytes > self.bounds.max_head_bytes and not self.transport.is_closing():
            self._refuse_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        if self._head_timer is None:  # a keep-alive connection's next request: its head is timed too
            self._arm_head_timer()

    def on_headers_complete(self) -> None:
        # The per-read count never sees the read that ends a head (httptools runs the whole head,
        # then the app, inside one feed). What came before plus this whole read bounds the head: only
        # past the limit (a read that big is rare) is the head measured as parsed, before the app runs.
        limit = self.bounds.max_head_bytes
        if (self._head_bytes or 0) + self._read_len > limit and self._parsed_head_bytes() > limit:
            self._head_refused = True
            self.logger = self.silent  # this connection is closing; nothing else of it is logged
            raise HeadTooLarge  # the parser stops; uvicorn answers through send_400_response
        self._disarm_head_timer()
        self._head_bytes = None
        super().on_headers_complete()

    def _parsed_head_bytes(self) -> int:
        """The head's size as parsed (the request line's method and version aside)."""
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)  # ": " CRLF

    def send_400_response(self, msg: str) -> None:
        """A head refused as too large stops the parser through here: a 431, not the OpenAI-shaped 400
        every other request httptools cannot parse gets (OpenAIErrorHttpToolsProtocol)."""
        if self._head_refused:
            if not self.transport.is_closing():
                self._refuse_head()
            return
        super().send_400_response(msg)

    def _refuse_head(self) -> None:
        if self.cycle is None or self.cycle.response_complete:  # never into another response
            self.transport.write(HEAD_TOO_LARGE)
        self.transport.close()

    # The head's time: from the connection's opening or the request's first byte.

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.bounds.head_timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.logger.debug("%s: no complete request head within %ss: closing", self.client,
                              self.bounds.head_timeout_s)
            self.transport.close()


def guarded_protocol(bounds: ConnectionBounds) -> type[HttpToolsProtocol]:
    """A protocol class for `uvicorn.Config(http=...)`, bound to `bounds`; its per-address counts are
    shared by the connections of one server."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {
        "bounds": bounds, "client_counts": ClientCounts(bounds.max_per_client),
        "silent": logging.Logger("hybridgw.http_guard.refused", logging.CRITICAL + 1)})
