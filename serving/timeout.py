"""A request deadline for both HTTP front ends, which leaves nothing behind once a request is answered.

BentoML's own timeout middleware (1.4) schedules a timer for every request and never cancels it. Each
request therefore leaves its timer, a future and a copy of its context alive for the whole timeout:
at 1,700 requests/s and the 60 s timeout, about 100,000 of each. The collector's full passes over
them paused the service for 7 to 30 ms about once a second, measured at concurrency 8.
:class:`RequestTimeout` cancels its timer as soon as the response starts;
:func:`serving.bentoml_patches.replace_bentoml_timeout` puts it in the place of BentoML's, and the benchmark's
bare app (``bench/bare_app.py``) uses it too.
"""

from __future__ import annotations

import asyncio
from typing import Any

from serving.auth import send_json_error

TIMEOUT_S = 60.0  # both front ends' deadline for an answer to start


class RequestTimeout:
    """504 for an HTTP request whose response has not started within ``timeout`` seconds.

    The handler is cancelled. A decision it had already queued may still be logged: a 504 acknowledges
    nothing, and the caller may ask again. Once the response starts, the deadline is lifted.
    """

    def __init__(self, app: Any, timeout: float) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout: must be > 0 seconds, got {timeout!r}")
        self.app, self.timeout = app, float(timeout)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        deadline = asyncio.timeout(self.timeout)

        async def send_started(message: dict) -> None:
            nonlocal started
            if not started:
                started = True
                deadline.reschedule(None)  # the response is on its way: no deadline for its body
            await send(message)

        try:
            async with deadline:
                await self.app(scope, receive, send_started)
        except TimeoutError:
            if started or not deadline.expired():  # raised by the handler itself, or too late to answer
                raise
            await send_json_error(send, 504, f"not answered within {self.timeout:g} s; nothing was acknowledged")
