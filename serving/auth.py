"""ASGI pieces shared by the service and the benchmark's bare app: the bearer-token check and JSON answers
straight from a middleware."""

from __future__ import annotations

import hmac
import json
from typing import Any

PROTECTED = ("/decide", "/decide_batch", "/feedback")
OPEN_PATHS = ("/livez", "/healthz", "/readyz")  # never behind the token: probes must reach them


async def send_json(send: Any, status: int, body: bytes, *headers: tuple[bytes, bytes]) -> None:
    """Answer the JSON ``body`` with ``status`` straight over ASGI (from a middleware, before any app)."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_json_error(send: Any, status: int, message: str, *headers: tuple[bytes, bytes]) -> None:
    """Answer ``{"error": message}`` with ``status`` (:func:`send_json`)."""
    await send_json(send, status, json.dumps({"error": message}).encode(), *headers)


class BearerAuth:
    """401 for a call to a protected path without ``Authorization: Bearer <token>``; the request body is
    never read, so nothing reaches the engine or the log. Health and readiness stay open; metrics and
    docs too unless ``everywhere`` (then every path but the probes needs the token)."""

    def __init__(self, app: Any, token: str, paths: tuple[str, ...] = PROTECTED, everywhere: bool = False) -> None:
        if not token:
            raise ValueError("token: must not be empty")
        self.app, self.paths, self.everywhere = app, paths, everywhere
        self.expected = f"Bearer {token}".encode()

    def _protected(self, path: str) -> bool:
        path = path.rstrip("/") or "/"
        return path in self.paths or (self.everywhere and path not in OPEN_PATHS)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self._protected(scope["path"]):
            given = b""
            for k, v in scope["headers"]:
                if k == b"authorization":
                    given = v
                    break
            if not hmac.compare_digest(given, self.expected):
                await send_json_error(
                    send, 401, "authorization: missing or wrong bearer token", (b"www-authenticate", b"Bearer")
                )
                return
        await self.app(scope, receive, send)
