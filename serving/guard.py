"""ASGI middleware in front of the decision service: what a request must be before any handler runs, and
the answers the service gives about itself.

* :class:`JsonApi`: a POST to an endpoint must declare ``Content-Type: application/json`` (415
  otherwise): a form, a multipart upload or an undeclared body is never parsed as a decision; and a
  schema validation error (400) names the failed fields in its ``error``;
* :class:`Probes`: ``GET /readyz`` answers JSON saying what is served and what is wrong
  (:meth:`serving.endpoints.Runtime.readiness`), ``GET /docs.json`` the spec of :mod:`serving.openapi`.

What is done inside BentoML's own middleware (request metrics, the timeout) is in
:mod:`serving.bentoml_patches`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from serving.auth import PROTECTED, send_json, send_json_error


def _media_type(scope: dict) -> bytes | None:
    for k, v in scope["headers"]:
        if k == b"content-type":
            return v.split(b";", 1)[0].strip().lower()
    return None


class JsonApi:
    """The endpoints' request and error rules, before and after any handler.

    A POST whose body is not declared JSON gets a 415 and its body is never read. A 400 from BentoML's
    schema validation (``{"error": "1 validation error for DecideRequestIODescriptor", "detail": [...]}``)
    gets an ``error`` that names the fields, as every other error does
    (``customers[3].tenure_days: Input should be greater than or equal to 0``).
    """

    def __init__(self, app: Any, paths: tuple[str, ...] = PROTECTED) -> None:
        self.app, self.paths = app, frozenset(paths)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"].rstrip("/") not in self.paths:
            await self.app(scope, receive, send)
            return
        media = _media_type(scope)
        if media != b"application/json":
            given = "none" if media is None else repr(media.decode("latin-1")[:60])
            await send_json_error(send, 415, f"content-type: expected application/json, got {given}")
            return
        held: dict | None = None
        chunks: list[bytes] = []

        async def named_fields(message: dict) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and message["status"] == 400:
                held = message  # rewritten with its body
                return
            if held is not None and message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if message.get("more_body"):
                    return
                body = _name_fields(b"".join(chunks))
                headers = [(k, v) for k, v in held.get("headers", []) if k.lower() != b"content-length"]
                await send({**held, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, named_fields)


def _name_fields(body: bytes) -> bytes:
    """A validation error's body with the failed fields in ``error`` (unchanged if not one)."""
    try:
        data = orjson.loads(body)
        detail = data["detail"]
        parts = []
        for d in detail[:5]:
            path = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in d.get("loc", ())).lstrip(".")
            parts.append(f"{path or 'body'}: {d.get('msg', 'invalid')}")
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return body
    more = f" (and {len(detail) - 5} more)" if len(detail) > 5 else ""
    data["error"] = "; ".join(parts) + more
    data["detail"] = [{k: v for k, v in d.items() if k != "url"} for d in detail if isinstance(d, dict)]
    return orjson.dumps(data)


class Probes:
    """``GET /readyz`` and ``GET /docs.json`` answered here; everything else passes through.

    ``readiness()`` returns ``(ready, body)``; ``spec()`` the OpenAPI document; ``before_metrics()`` runs
    before ``GET /metrics`` is answered (to bring gauges up to date).
    """

    def __init__(
        self,
        app: Any,
        readiness: Callable[[], tuple[bool, dict]],
        spec: Callable[[], dict],
        before_metrics: Callable[[], object] | None = None,
    ) -> None:
        self.app, self.readiness, self.spec, self.before_metrics = app, readiness, spec, before_metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            path = scope["path"]
            if path == "/readyz":
                ready, body = self.readiness()
                await send_json(send, 200 if ready else 503, orjson.dumps(body))
                return
            if path == "/docs.json":
                await send_json(send, 200, orjson.dumps(self.spec()))
                return
            if path == "/metrics" and self.before_metrics is not None:
                self.before_metrics()
        await self.app(scope, receive, send)
