"""Slow or greedy clients cannot starve `hybridgw serve` (raw sockets against a real gateway): a
client dribbling its headers one byte at a time is cut off after the header timeout while normal
requests are served; a huge head is refused; one client address holds at most N connections; at
the total requests get 503, beyond it connections are closed."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.integration.gateway.conftest import create_key, policy_yaml
from tests.support import procs
from tests.support.procs import wait_until

PER_CLIENT = 4
TOTAL = 12
# A long head: at one byte per 50 ms it would take ~5 minutes to send, far beyond any wait here.
SLOW_HEAD = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 6000 + b"\r\n\r\n"


@dataclass
class Served:
    url: str
    port: int
    key: str
    proc: procs.Proc


@pytest.fixture(scope="module")
def served(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("slow-clients")
    config = root / "policy.yaml"
    config.write_text(policy_yaml(fake_upstream, procs.free_port()))
    key = create_key(root / "data", "red", config)
    port = procs.free_port()
    env = {"HYBRIDGW_DATA_DIR": str(root / "data"), "HYBRIDGW_HEADER_TIMEOUT_S": "3",
           "HYBRIDGW_MAX_CONNECTIONS_PER_CLIENT": str(PER_CLIENT), "HYBRIDGW_MAX_CONNECTIONS": str(TOTAL)}
    with procs.gateway(config, env, "gateway-slow", port=port) as (url, proc):
        yield Served(url, port, key, proc)
        assert proc.alive(), proc.output()[-3000:]


def _connect(port: int, source: str) -> socket.socket:
    """A connection from loopback address `source` (all of 127/8 is local: each is another client)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
    sock.settimeout(30)
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed the connection (EOF or reset) without answering anything."""
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True


def _dribble(sock: socket.socket, sent: list[int], stop: threading.Event) -> None:
    for byte in SLOW_HEAD:
        if stop.is_set():
            return
        try:
            sock.sendall(bytes([byte]))
        except OSError:  # the server closed it: what the test waits for
            return
        sent[0] += 1
        time.sleep(0.05)


def _chat(http: httpx.Client, key: str) -> int:
    return http.post("/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                     json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}).status_code


def test_a_client_dribbling_its_headers_is_cut_off(served: Served) -> None:
    sock = _connect(served.port, "127.0.0.2")
    sent, stop = [0], threading.Event()
    dribbler = threading.Thread(target=_dribble, args=(sock, sent, stop), daemon=True)
    dribbler.start()
    try:
        with httpx.Client(base_url=served.url, timeout=30) as http:
            wait_until(lambda: sent[0] >= 3, "the slow client to start its head")
            assert _chat(http, served.key) == 200  # served while the slow head is still coming
            assert _closed_by_server(sock)  # blocks until the server hangs up (or 30 s: then it fails)
            assert sent[0] < len(SLOW_HEAD)  # cut off before its head was complete
            assert _chat(http, served.key) == 200
    finally:
        stop.set()
        sock.close()
        dribbler.join(timeout=30)


def test_a_connection_that_sends_nothing_is_closed(served: Served) -> None:
    with _connect(served.port, "127.0.0.3") as sock:
        assert _closed_by_server(sock)


def _hold_stream(port: int, source: str, key: str) -> tuple[socket.socket, bytes]:
    """A connection busy with a slow streamed answer (kept open until closed): (socket, status line)."""
    body = b'{"model": "slow", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'
    sock = _connect(port, source)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key.encode()
                 + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
                 + b"\r\n\r\n" + body)
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(1024)
        if not chunk:
            break
        head += chunk
    return sock, head.split(b"\r\n", 1)[0]


def test_one_address_holds_at_most_its_share(served: Served) -> None:
    held = [_hold_stream(served.port, "127.0.0.4", served.key) for _ in range(PER_CLIENT)]
    try:
        assert [status for _, status in held] == [b"HTTP/1.1 200 OK"] * PER_CLIENT
        with _connect(served.port, "127.0.0.4") as extra:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _closed_by_server(extra)  # no answer at all: refused on arrival
        with httpx.Client(base_url=served.url, timeout=30) as http:  # another address is served
            assert http.get("/healthz").status_code == 200
    finally:
        for sock, _ in held:
            sock.close()


def test_beyond_the_total_requests_get_503(served: Served) -> None:
    held: list[socket.socket] = []
    statuses: list[bytes] = []
    try:
        for i in range(TOTAL + 1):  # every address below its own share: only the total can refuse
            sock, status = _hold_stream(served.port, f"127.0.1.{i}", served.key)
            held.append(sock)
            statuses.append(status)
            if status != b"HTTP/1.1 200 OK":
                break
        assert statuses[-1] == b"HTTP/1.1 503 Service Unavailable", statuses
        assert len(statuses) > TOTAL // 2, statuses  # the earlier ones were served
    finally:
        for sock in held:
            sock.close()
    with httpx.Client(base_url=served.url, timeout=30) as http:
        wait_until(lambda: http.get("/healthz").status_code == 200, "the gateway to serve again")


def test_a_connection_beyond_the_total_is_closed_on_arrival(served: Served) -> None:
    held = [_hold_stream(served.port, f"127.0.2.{i}", served.key)[0] for i in range(TOTAL - 1)]
    try:
        held.append(_connect(served.port, "127.0.3.1"))  # the total reached by a connection yet to speak
        with _connect(served.port, "127.0.3.2") as extra:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _closed_by_server(extra)  # not even a 503: closed before a byte was read
    finally:
        for sock in held:
            sock.close()
    with httpx.Client(base_url=served.url, timeout=30) as http:
        wait_until(lambda: http.get("/healthz").status_code == 200, "the gateway to serve again")


def _answer(sock: socket.socket) -> bytes:
    answer = b""
    try:
        while chunk := sock.recv(4096):
            answer += chunk
    except ConnectionResetError:
        pass
    return answer


@pytest.mark.parametrize("head", [
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"b" * 700) for i in range(100))
    + b"\r\n",
    b"GET /healthz?" + b"q" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
], ids=["one-header", "many-headers", "url"])
def test_a_70kb_head_in_one_write_is_refused(served: Served, head: bytes) -> None:
    # Counting across reads missed a head that one read began and ended: it reached the app (200).
    with _connect(served.port, "127.0.4.2") as sock:
        sock.sendall(head)
        answer = _answer(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    assert "Invalid HTTP request" not in served.proc.output()  # a refused head is no warning line


def test_a_huge_request_head_is_refused(served: Served) -> None:
    # httptools buffers a header of any length, copying it again with every packet: 100 MiB sent in
    # 1 MiB pieces kept the event loop busy for about a minute.
    with _connect(served.port, "127.0.4.1") as sock:
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n")
        except OSError:  # closed while we were still sending: also a refusal
            pass
        answer = b""
        try:
            while chunk := sock.recv(4096):
                answer += chunk
        except ConnectionResetError:
            pass
    assert answer.startswith(b"HTTP/1.1 431 ") or answer == b"", answer[:100]  # (a reset can beat the 431)
    with httpx.Client(base_url=served.url, timeout=30) as http:
        assert http.get("/healthz", headers={"x-fine": "a" * 4000}).status_code == 200

