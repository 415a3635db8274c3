"""uvicorn as `lawm serve` and `lawm worker` run it, with limits against slow and numerous clients.

uvicorn times out idle keep-alive connections, but a connection that never finishes its request
headers holds its socket forever, and nothing caps how many connections are open. Here:

- `header_timeout_s`: a connection whose first request's headers are not complete this long after
  it opened is answered 408 and closed (later requests on a kept-alive connection are covered by
  uvicorn's `timeout_keep_alive`, which runs until the next request's headers are complete);
- `keep_alive_timeout_s`: uvicorn's `timeout_keep_alive`;
- `max_connections`: uvicorn's `limit_concurrency` (open connections and requests in flight; past it
  a request is answered 503 at once);
- the request body's time-out is `service.middleware`'s (`body_timeout_s`): a body still arriving
  that long after the request started is answered 408 and the connection closed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from service.errors import error_body
from service.settings import Settings


def _timeout_response() -> bytes:
    body = json.dumps(error_body(
        "request_timeout", "the request's headers did not arrive in time", "send the whole request at once", None
    )).encode()
    head = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n")
    return head + body


def header_timeout_protocol(header_timeout_s: float, base: type[asyncio.Protocol] = AutoHTTPProtocol) -> type:
    """uvicorn's HTTP protocol (`base`) with a time limit on the first request's headers."""

    class HeaderTimeoutProtocol(base):  # type: ignore[valid-type, misc]
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._header_timer = self.loop.call_later(header_timeout_s, self._headers_too_slow)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.cycle is not None:  # the first request's headers are complete
                self._cancel_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_timer()
            super().connection_lost(exc)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.cycle is None and not self.transport.is_closing():
                self.transport.write(_timeout_response())
                self.transport.close()

    return HeaderTimeoutProtocol


def uvicorn_config(app: Any, settings: Settings, host: str, port: int, log_level: str = "info") -> uvicorn.Config:
    """The uvicorn configuration of a served app, its limits from `settings`."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=header_timeout_protocol(settings.header_timeout_s),
        timeout_keep_alive=max(1, round(settings.keep_alive_timeout_s)),
        limit_concurrency=settings.max_connections,
        timeout_graceful_shutdown=max(1, round(settings.drain_timeout_s)),
    )


def run(app: Any, settings: Settings, host: str, port: int, log_level: str = "info") -> None:
    uvicorn.Server(uvicorn_config(app, settings, host, port, log_level)).run()
