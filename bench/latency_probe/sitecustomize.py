"""bench/latency_stages.py's probe, loaded by a server process through PYTHONPATH (never by the gateway itself):
with HYBRIDGW_LATENCY_PROBE=FILE set, each stage of a request on the loop thread is stamped (wall clock, the
thread's CPU clock, its run-queue wait from /proc/thread-self/schedstat) and the stamps go to FILE at exit."""
from __future__ import annotations

import os

if os.environ.get("HYBRIDGW_LATENCY_PROBE"):
    import atexit
    import importlib.abc
    import importlib.util
    import json
    import sys
    import time
    from typing import Any

    STAMPS: list[tuple[str, float, float, float]] = []
    _schedstat: list[int] = []

    def stamp(kind: str) -> None:
        if not _schedstat:  # opened by the thread that stamps first: the loop thread
            _schedstat.append(os.open("/proc/thread-self/schedstat", os.O_RDONLY))
        runq_ns = int(os.pread(_schedstat[0], 100, 0).split()[1])
        STAMPS.append((kind, time.time(), time.thread_time(), runq_ns / 1e9))

    def _dump() -> None:
        with open(os.environ["HYBRIDGW_LATENCY_PROBE"], "w") as out:
            json.dump(STAMPS, out)

    atexit.register(_dump)

    from uvicorn import server as uvicorn_server

    _shutdown = uvicorn_server.Server.shutdown

    async def _shutdown_and_dump(self: Any, sockets: Any = None) -> None:
        """uvicorn re-raises SIGTERM after its shutdown (no atexit then): the stamps are written here first."""
        try:
            await _shutdown(self, sockets)
        finally:
            _dump()

    uvicorn_server.Server.shutdown = _shutdown_and_dump  # type: ignore[method-assign]

    class _Tap:
        """The server's transport for one client connection: stamps each write (the head, the body)."""

        __slots__ = ("_inner",)

        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def write(self, data: bytes) -> None:
            stamp("head out" if data[:5] == b"HTTP/" else "body out")
            self._inner.write(data)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

    from uvicorn.protocols.http import httptools_impl

    _made, _received = httptools_impl.HttpToolsProtocol.connection_made, httptools_impl.HttpToolsProtocol.data_received

    def _connection_made(self: Any, transport: Any) -> None:
        _made(self, _Tap(transport))

    def _data_received(self: Any, data: bytes) -> None:
        stamp("request in")
        _received(self, data)

    httptools_impl.HttpToolsProtocol.connection_made = _connection_made  # type: ignore[method-assign]
    httptools_impl.HttpToolsProtocol.data_received = _data_received  # type: ignore[method-assign]

    def _gateway_stamps() -> None:
        """The upstream call (our client's send and reads), the usage record (finish) and the end of the answer's
        ASGI call."""
        from gateway import proxy
        from gateway.backends import upstream_wire

        conn = upstream_wire.UpstreamConnection
        send, received, answered, finish = conn.send, conn.data_received, proxy.AnsweredResponse.__call__, proxy.finish

        def _send(self: Any, data: bytes, streaming: bool) -> None:
            stamp("upstream send")
            send(self, data, streaming)

        def _upstream_received(self: Any, data: bytes) -> None:
            stamp("upstream in")
            received(self, data)

        async def _answered(self: Any, scope: Any, receive: Any, send: Any) -> None:
            try:
                await answered(self, scope, receive, send)
            finally:
                stamp("answer done")

        def _finish(svc: Any, ex: Any) -> Any:
            stamp("record start")
            try:
                return finish(svc, ex)
            finally:
                stamp("record end")

        conn.send, conn.data_received = _send, _upstream_received  # type: ignore[method-assign]
        proxy.finish = _finish
        proxy.AnsweredResponse.__call__ = _answered  # type: ignore[method-assign]

    class _AfterProxy(importlib.abc.MetaPathFinder):
        """Stamps the gateway's own classes once gateway.proxy is imported (the fake upstream never imports it)."""

        def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
            if name != "gateway.proxy":
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            assert spec is not None and spec.loader is not None
            run = spec.loader.exec_module

            def exec_module(module: Any) -> None:
                run(module)
                _gateway_stamps()

            spec.loader.exec_module = exec_module  # type: ignore[method-assign]
            return spec

    sys.meta_path.insert(0, _AfterProxy())
