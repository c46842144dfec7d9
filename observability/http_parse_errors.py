"""uvicorn's httptools protocol answering a request it cannot parse with an OpenAI-shaped 400 (code
invalid_http_request) instead of uvicorn's text/plain line. Here, the package both the gateway's
connection guard (gateway/http_guard.py) and the engine's server (local_engine/cli.py) may import."""
from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_INVALID_HTTP_BODY = (b'{"error":{"message":"Invalid HTTP request received.","type":"invalid_request_error",'
                      b'"param":null,"code":"invalid_http_request"}}')
INVALID_HTTP = (b"content-type: application/json\r\ncontent-length: " + str(len(_INVALID_HTTP_BODY)).encode()
                + b"\r\nconnection: close\r\n\r\n" + _INVALID_HTTP_BODY)


class OpenAIErrorHttpToolsProtocol(HttpToolsProtocol):
    """For `uvicorn.Config(http=...)`: what httptools refuses (a control character in a header,
    Content-Length beside Transfer-Encoding, a malformed request line) gets the OpenAI error shape."""

    def send_400_response(self, msg: str) -> None:
        if self._no_response_under_way():  # never into another response
            head = [b"HTTP/1.1 400 Bad Request\r\n"]
            head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
            self.transport.write(b"".join(head) + INVALID_HTTP)
        self.transport.close()

    def _no_response_under_way(self) -> bool:
        """No response has begun on this connection: none since the last complete one, or the request whose
        body httptools cannot read (a malformed chunk) has no answer yet and none is queued before it."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return True
        return cycle.more_body and not cycle.response_started and not self.pipeline
