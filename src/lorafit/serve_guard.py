"""ASGI middleware in front of the service: the API key, and the request-body size limit.

Both answer before the application sees the request, with ``{"detail": ...}`` JSON like the rest
of the API. The body limit refuses a too-large ``Content-Length`` without reading the body, and
counts the bytes of a streamed (chunked) body, refusing as soon as the count passes the limit.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/health"})
"""Paths answered without the API key."""
BROWSER_PATHS = frozenset({"/", "/docs", "/redoc", "/docs/oauth2-redirect"})
"""Pages a browser opens directly: a 401 there asks the browser for the key (Basic auth, key as password)."""


async def send_json(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """Answer with ``{"detail": detail}`` and ``status``."""
    body = json.dumps({"detail": detail}).encode()  # ensure_ascii: safe for any str
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("utf-8", "replace")
    return None


def presented_key(scope: Scope) -> str | None:
    """The key a request carries: ``Authorization: Bearer KEY``, ``X-API-Key: KEY``, or Basic auth with
    the key as password (what a browser sends after its login prompt)."""
    header = _header(scope, b"x-api-key")
    if header is not None:
        return header.strip()
    auth = _header(scope, b"authorization") or ""
    scheme, _, value = auth.strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return None
    return None


class ApiKeyGuard:
    """Every route but :data:`OPEN_PATHS` needs ``api_key`` (compared in constant time); else 401."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.api_key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        key = presented_key(scope)
        if key is not None and hmac.compare_digest(key.encode("utf-8"), self.api_key):
            return await self.app(scope, receive, send)
        challenge = b'Basic realm="lorafit serve: any user name, the API key as password"' \
            if scope["path"] in BROWSER_PATHS else b'Bearer realm="lorafit serve"'
        detail = ("wrong API key" if key else "missing API key") + \
            ": send the header 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
        await send_json(send, 401, detail, [(b"www-authenticate", challenge)])


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413, before reading more than the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self, size: str) -> str:
        return (f"request body is too large: {size} bytes, the limit is {self.max_bytes} "
                "(send fewer or shorter texts per request, or start the service with a larger --max-body-bytes)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                return await send_json(send, 400, f"Content-Length must be a number of bytes, got {declared!r}")
            if int(declared) > self.max_bytes:
                return await send_json(send, 413, self._too_large(declared.strip()))
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            total += len(chunks[-1])
            if total > self.max_bytes:
                return await send_json(send, 413, self._too_large(f"at least {total}"))
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the already-read body once, then defers to the real one."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay
