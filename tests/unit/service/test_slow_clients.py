"""Slow and numerous clients against a real uvicorn server on a loopback socket: unfinished headers and
a body that trickles are answered 408 and closed at their time-outs, and connections past the cap
are answered 503. Raw sockets, so nothing hides what the server does; the socket time-outs are only
guards (30 s), never the behaviour asserted."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from fastapi import FastAPI, Request

from service.errors import install_error_handlers
from service.middleware import RequestContextMiddleware
from service.server import uvicorn_config
from service.settings import Settings

GUARD_S = 30.0


def make_app(body_timeout_s: float) -> RequestContextMiddleware:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @app.get("/ok")
    async def ok() -> dict[str, bool]:
        return {"ok": True}

    return RequestContextMiddleware(app, max_json_bytes=1 << 20, max_upload_bytes=1 << 20,
                                    body_timeout_s=body_timeout_s)


@pytest.fixture
def server() -> Iterator[tuple[int, Settings]]:
    settings = Settings(header_timeout_s=0.5, body_timeout_s=0.5, keep_alive_timeout_s=1, max_connections=3)
    config = uvicorn_config(make_app(settings.body_timeout_s), settings, "127.0.0.1", 0, "warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(3000):
        if srv.started:
            break
        time.sleep(0.01)
    port = srv.servers[0].sockets[0].getsockname()[1]
    yield port, settings
    srv.should_exit = True
    thread.join(GUARD_S)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=GUARD_S)
    sock.settimeout(GUARD_S)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_unfinished_headers_are_answered_408_and_closed(server: tuple[int, Settings]) -> None:
    port, _ = server
    with connect(port) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-")  # and never the rest
        answer = read_until_closed(sock)  # returns only because the server closed the connection
    assert answer.startswith(b"HTTP/1.1 408")
    assert b'"code": "request_timeout"' in answer


def test_a_trickling_body_is_answered_408_and_closed(server: tuple[int, Settings]) -> None:
    port, _ = server
    with connect(port) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: video/mp4\r\nContent-Length: 1000000\r\n\r\n")
        sock.sendall(b"x" * 10)  # then nothing: a 1 MB body that never comes
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"request_timeout" in answer, answer


def test_a_whole_request_still_works_and_connections_past_the_cap_get_503(server: tuple[int, Settings]) -> None:
    port, settings = server
    with connect(port) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: video/mp4\r\nContent-Length: 3\r\n"
                     b"Connection: close\r\n\r\nabc")
        assert b'{"bytes":3}' in read_until_closed(sock)
    assert settings.max_connections is not None
    idle = [connect(port) for _ in range(settings.max_connections)]  # open, headers not sent yet
    try:
        with connect(port) as sock:
            sock.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 503")
    finally:
        for s in idle:
            s.close()
