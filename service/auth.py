"""Optional bearer API keys: `Authorization: Bearer <key>` on every path but the exempt ones.

A pure ASGI middleware, so every router (v1, jobs, KServe v2, /docs) is covered without each route
remembering a dependency. Keys are compared with `hmac.compare_digest` against every configured key
(no early exit), so the time taken says nothing about how much of a key was right. With no keys
configured the middleware is not installed at all.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from service.errors import error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def key_matches(presented: str, keys: list[bytes]) -> bool:
    """Constant-time check of `presented` against every key."""
    given = presented.encode()
    matches = [hmac.compare_digest(given, key) for key in keys]  # all compared, whatever matched
    return any(matches)


def bearer_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


class ApiKeyMiddleware:
    """Answers 401 (JSON error, `WWW-Authenticate: Bearer`) unless the request carries a valid key."""

    def __init__(self, app: ASGIApp, keys: list[str], exempt: list[str]) -> None:
        if not keys:
            raise ValueError("ApiKeyMiddleware needs at least one key; leave it out when auth is off")
        self.app = app
        self.keys = [k.encode() for k in keys]
        self.exempt = frozenset(p.rstrip("/") or "/" for p in exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or (scope["path"].rstrip("/") or "/") in self.exempt:
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        if token is not None and key_matches(token, self.keys):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":  # refused before the handshake completes: the client sees a 403
            await send({"type": "websocket.close", "code": 1008})
            return
        message = "missing API key" if token is None else "invalid API key"
        body = error_body(
            "unauthorized",
            message,
            "send `Authorization: Bearer <key>` with a key the server was started with (LAWM_API_KEYS)",
            scope.get("state", {}).get("request_id"),
        )
        await _send_json(send, 401, body, [(b"www-authenticate", b"Bearer")])


async def _send_json(send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> None:
    import json

    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
