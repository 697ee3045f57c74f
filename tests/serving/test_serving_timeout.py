"""The request deadline on its own: a 504 for a late answer, no timer left behind by an answered request,
no deadline once the response has started (BentoML building it in place of its own middleware:
test_bentoml_patches.py)."""

from __future__ import annotations

import asyncio
import json

import pytest

from serving.timeout import RequestTimeout


def _call(app, timeout: float) -> tuple[list[dict], list[asyncio.TimerHandle]]:
    """Run one HTTP request through ``RequestTimeout(app)``; the messages sent and the timers still live."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    async def main() -> list[asyncio.TimerHandle]:
        await RequestTimeout(app, timeout)({"type": "http", "path": "/decide"}, receive, send)
        return [h for h in asyncio.get_running_loop()._scheduled if not h.cancelled()]  # type: ignore[attr-defined]

    return sent, asyncio.run(main())


async def _answer(send, status: int = 200, body: bytes = b"ok") -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": body})


def test_an_answered_request_leaves_no_live_timer():
    async def app(scope, receive, send):
        await asyncio.sleep(0)
        await _answer(send)

    sent, live = _call(app, 60.0)
    assert [m.get("status") for m in sent] == [200, None] and sent[1]["body"] == b"ok"
    assert live == []  # the 60 s deadline was cancelled with the answer, not left to fire


def test_a_late_answer_gets_a_504_and_the_handler_is_cancelled():
    state = {}

    async def app(scope, receive, send):
        try:
            await asyncio.sleep(5)
            await _answer(send)
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise

    sent, live = _call(app, 0.05)
    assert sent[0]["status"] == 504 and state == {"cancelled": True}
    assert "0.05 s" in json.loads(sent[1]["body"])["error"] and live == []


def test_no_deadline_once_the_response_has_started():
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0.15)  # a slow body, well past the deadline
        await send({"type": "http.response.body", "body": b"late but whole"})

    sent, _ = _call(app, 0.05)
    assert [m.get("status") for m in sent] == [200, None] and sent[1]["body"] == b"late but whole"


def test_a_timeout_raised_by_the_handler_itself_is_not_turned_into_a_504():
    async def app(scope, receive, send):
        raise TimeoutError("the log did not answer")

    with pytest.raises(TimeoutError, match="the log did not answer"):
        _call(app, 60.0)


def test_other_scopes_pass_through_and_a_bad_timeout_is_refused():
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["type"])

    asyncio.run(RequestTimeout(app, 1.0)({"type": "lifespan"}, None, None))
    assert seen == ["lifespan"]
    with pytest.raises(ValueError, match="timeout"):
        RequestTimeout(app, 0)
