"""Keep-alive connections to one upstream, at most `limit` open: where they go (direct, TLS with certifi's
CAs, an HTTP(S)_PROXY from the environment: absolute-form for http, a CONNECT tunnel for https), idle ones
handed out again until their keep-alive expiry, a waiter queue when all are busy."""
from __future__ import annotations

import asyncio
import base64
import ssl
import urllib.request
from collections import deque
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import certifi

from gateway.backends.upstream_wire import UpstreamConnection

# Idle connections are dropped before uvicorn's 5 s keep-alive (vLLM, SGLang, our engine) closes them: a
# request sent as the server closes fails with no response (the soak saw 1 in 19,000).
KEEPALIVE_S = 4.0


class ConnectTimeout(TimeoutError):
    """No connection (TCP, proxy tunnel, TLS) within connect_s."""


class Unreachable(ConnectionError):
    """The upstream (or its proxy) refused, failed TLS, or has no address."""


def tls_context(base_url: str) -> ssl.SSLContext | None:
    """certifi's CAs for an https URL (a host without system CA files still reaches hosted APIs), with
    the hostname checked; None for plain HTTP. Loaded once per backend, at open."""
    return ssl.create_default_context(cafile=certifi.where()) if base_url.startswith("https:") else None


@dataclass(frozen=True)
class Proxy:
    url: str  # as the environment gave it
    host: str
    port: int
    tls: ssl.SSLContext | None  # an https:// proxy: TLS to the proxy itself
    authorization: bytes  # the `proxy-authorization: Basic …` header line, or b"" (no userinfo in the URL)


def env_proxy(base_url: str) -> Proxy | None:
    """The proxy HTTP(S)_PROXY names for this URL unless NO_PROXY covers its host (read once, at open;
    ALL_PROXY is not used, as aiohttp did not)."""
    parts = urlsplit(base_url)
    proxies = urllib.request.getproxies_environment()
    url = proxies.get(parts.scheme)
    if not url or urllib.request.proxy_bypass_environment(parts.hostname or "", proxies):
        return None
    p = urlsplit(url if "://" in url else f"http://{url}")
    if p.scheme not in ("http", "https") or not p.hostname:
        raise ValueError(f"the proxy {url!r} for {parts.scheme} is no http:// or https:// URL")
    auth = b""
    if p.username is not None:
        token = base64.b64encode(f"{unquote(p.username)}:{unquote(p.password or '')}".encode())
        auth = b"proxy-authorization: Basic %s\r\n" % token
    return Proxy(url, p.hostname, p.port or (443 if p.scheme == "https" else 80),
                 tls_context(url) if p.scheme == "https" else None, auth)


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    tls: ssl.SSLContext | None
    proxy: Proxy | None
    refused: str = ""  # why no connection can be made (a proxy we cannot use): each call fails with it

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls is not None else 80
        return host if self.port == default else f"{host}:{self.port}"


def target(base_url: str) -> Target:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"a backend's base_url must be an http(s) URL, not {base_url!r}")
    tls, port = tls_context(base_url), parts.port or (443 if base_url.startswith("https:") else 80)
    try:
        proxy = env_proxy(base_url)
    except ValueError as exc:  # e.g. a socks5:// proxy: the gateway starts, and each call says why it fails
        return Target(parts.hostname, port, tls, None, refused=f"{exc} (set in the environment; only http:// "
                      "and https:// proxies are supported — unset it or list the host in NO_PROXY)")
    return Target(parts.hostname, port, tls, proxy)


class Pool:
    """`acquire()` a connection (and whether it was used before), `release()` it when its response is done."""

    def __init__(self, where: Target, limit: int, connect_s: float, keepalive_s: float = KEEPALIVE_S) -> None:
        self.target = where
        self._limit = max(1, limit)
        self._connect_s = connect_s
        self._keepalive_s = keepalive_s
        self._loop = asyncio.get_running_loop()
        self._idle: list[UpstreamConnection] = []  # oldest first; handed out newest first
        self._open: set[UpstreamConnection] = set()  # every connection counted against the limit
        self._opening = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False

    def take_idle(self) -> UpstreamConnection | None:
        """An idle connection still inside its keep-alive, if any (no await: the common case)."""
        idle, oldest = self._idle, self._loop.time() - self._keepalive_s
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.idle_since > oldest:
                return conn
            self._drop(conn)
        return None

    async def acquire(self, fresh: bool = False) -> tuple[UpstreamConnection, bool]:
        """An idle connection (unless `fresh`), else a new one while under the limit, else the next one freed."""
        while True:
            if self._closed:
                raise ConnectionError("the backend is closed")
            if not fresh and (conn := self.take_idle()) is not None:
                return conn, True
            if len(self._open) + self._opening < self._limit:
                return await self._connect(), False
            if self._idle:  # a fresh connection wanted at the limit: an idle one makes room
                self._drop(self._idle.pop(0))
                continue
            waiter = self._loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # woken, then cancelled: the turn passes on
                else:
                    self._waiters.remove(waiter)
                raise

    def release(self, conn: UpstreamConnection) -> None:
        """Back to the idle list when its response was read to the end on a keep-alive connection, else closed."""
        conn.disarm()
        if conn.reusable and not self._closed:
            conn.idle_since = self._loop.time()
            self._idle.append(conn)
            if self._sweep is None:
                self._sweep = self._loop.call_later(self._keepalive_s, self._expire_idle)
        else:
            self._drop(conn)
        self._wake_one()

    def close(self) -> None:
        self._closed = True
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()
        if self._sweep is not None:
            self._sweep.cancel()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _drop(self, conn: UpstreamConnection) -> None:
        conn.discard()
        self._open.discard(conn)

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _expire_idle(self) -> None:
        """Close connections idle past the keep-alive (one timer per pool, not one per connection)."""
        self._sweep = None
        oldest = self._loop.time() - self._keepalive_s
        while self._idle and (self._idle[0].idle_since <= oldest or self._idle[0].closed):
            self._drop(self._idle.pop(0))
        if self._idle:
            self._sweep = self._loop.call_at(self._idle[0].idle_since + self._keepalive_s, self._expire_idle)
        self._wake_one()

    async def _connect(self) -> UpstreamConnection:
        t = self.target
        if t.refused:
            raise Unreachable(t.refused)
        conn = UpstreamConnection(self._loop)
        self._opening += 1
        try:
            async with asyncio.timeout(self._connect_s):
                await self._open_connection(t, conn)
        except TimeoutError:
            conn.discard()
            raise ConnectTimeout(f"no connection within {self._connect_s:g} s") from None
        except Unreachable:  # ours, naming what failed past the proxy (its refusal, TLS inside its tunnel)
            conn.discard()
            raise
        except OSError as exc:
            conn.discard()
            where = f"{t.proxy.host}:{t.proxy.port} (the proxy)" if t.proxy else f"{t.host}:{t.port}"
            raise Unreachable(f"cannot connect to {where}: {exc.strerror or exc}") from None
        except BaseException:
            conn.discard()
            raise
        finally:
            self._opening -= 1
            if conn.closed:
                self._wake_one()  # the room it took is free again
        if self._closed:
            conn.close()
            raise ConnectionError("the backend is closed")
        self._open.add(conn)
        return conn

    async def _open_connection(self, t: Target, conn: UpstreamConnection) -> None:
        loop = self._loop
        if t.proxy is None:
            await loop.create_connection(lambda: conn, t.host, t.port, ssl=t.tls,
                                         server_hostname=t.host if t.tls else None)
            return
        p = t.proxy
        await loop.create_connection(lambda: conn, p.host, p.port, ssl=p.tls, server_hostname=p.host if p.tls else None)
        if t.tls is None:
            return  # plain HTTP through the proxy: absolute-form requests on this connection
        host = f"[{t.host}]" if ":" in t.host else t.host
        authority = f"{host}:{t.port}"
        status = await conn.tunnel(b"CONNECT %s HTTP/1.1\r\nhost: %s\r\n%s\r\n"
                                   % (authority.encode(), authority.encode(), p.authorization))
        parts = status.split(b" ", 2)
        if len(parts) < 2 or parts[1] != b"200":
            raise Unreachable(f"the proxy {p.host}:{p.port} refused the tunnel to {authority}: "
                              f"{status.decode('latin-1')}")
        assert conn.transport is not None
        try:
            tls = await loop.start_tls(conn.transport, conn, t.tls, server_hostname=t.host)
        except OSError as exc:  # the upstream's TLS failed, or the tunnel closed in its handshake: not the proxy
            # asyncio's start_tls frame holds its waiter, which holds `exc`, whose traceback holds that frame
            # (and `conn`): a cycle, unless the traceback goes (uvloop's start_tls leaves none)
            exc.__traceback__ = None
            raise Unreachable(f"TLS with {authority} through the proxy {p.host}:{p.port} failed: "
                              f"{_tls_failure(exc, authority)}") from None
        if tls is None:
            raise Unreachable(f"TLS with {authority} through the proxy {p.host}:{p.port} failed")
        conn.transport = tls  # type: ignore[assignment]


def _tls_failure(exc: OSError, authority: str) -> str:
    """Why a TLS handshake inside a proxy's tunnel failed: the upstream's TLS, or the tunnel closed under it."""
    if isinstance(exc, ssl.SSLError) and not isinstance(exc, ssl.SSLEOFError):
        return str(exc)
    return f"the proxy closed the tunnel ({exc.strerror or str(exc) or type(exc).__name__}); it may not reach {authority}"


def request_head(where: Target, path: str, fixed: dict[str, str]) -> bytes:
    """A POST's request line and fixed headers for `path` (e.g. /v1/chat/completions), built once per
    backend: origin-form, or absolute-form (with the proxy's credentials) for plain HTTP through a proxy."""
    line = f"POST {path} HTTP/1.1\r\n".encode()
    proxy = b""
    if where.proxy is not None and where.tls is None:
        line = f"POST http://{where.authority}{path} HTTP/1.1\r\n".encode()
        proxy = where.proxy.authorization
    headers = {"host": where.authority, **fixed}
    return line + "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode() + proxy
