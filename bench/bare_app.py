"""The same endpoints as a bare Starlette app, without BentoML: the benchmark's reference for the limit of
Python HTTP on this machine (``bench/serve.py``), calling exactly the same engine and log writes.

Run: ``uvicorn bare_app:create_app --factory --app-dir bench --no-access-log`` with the ``NBA_*`` variables.
"""

from __future__ import annotations

import contextlib
import gc

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from serving import endpoints, openapi
from serving.auth import BearerAuth
from serving.config import Settings
from serving.engine import BadRequest, NotReady
from serving.guard import JsonApi, Probes
from serving.schemas import DecideBatchRequest, DecideRequest, FeedbackRequest
from serving.timeout import TIMEOUT_S, RequestTimeout


def _json(out: BaseModel | bytes) -> Response:
    body = out if isinstance(out, bytes) else out.model_dump_json()
    return Response(body, media_type="application/json")


def create_app(rt: endpoints.Runtime | None = None, timeout_s: float = TIMEOUT_S) -> Starlette:
    """A Starlette app over ``rt`` (default: a runtime configured from the environment); a request not
    answered within ``timeout_s`` gets a 504, as from the service."""
    state: dict[str, endpoints.Runtime] = {}

    def runtime() -> endpoints.Runtime:
        if "rt" not in state:
            state["rt"] = rt or endpoints.Runtime.start()
            gc.collect()
            gc.freeze()
        return state["rt"]

    def endpoint(model: type[BaseModel], call):
        async def handle(request: Request) -> Response:
            try:
                req = model.model_validate_json(await request.body())
            except ValidationError as e:
                return JSONResponse(
                    {
                        "error": f"{e.error_count()} validation error(s)",
                        "detail": e.errors(include_context=False, include_input=False, include_url=False),
                    },
                    status_code=400,
                )
            try:
                return _json(await call(runtime(), req))
            except BadRequest as e:
                return JSONResponse({"error": str(e)}, status_code=e.status)
            except NotReady as e:
                return JSONResponse({"error": str(e)}, status_code=503)
            except Exception as e:  # the log failed: one line per outage, a fast 503 per request
                runtime().engine.outage.failed(e)
                return JSONResponse(
                    {"error": f"service error: {type(e).__name__}; nothing was acknowledged, retry later"},
                    status_code=503,
                )

        return handle

    async def livez(_: Request) -> Response:
        return Response("ok")

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette):
        runtime()
        yield
        runtime().close()

    app = Starlette(
        routes=[
            Route("/decide", endpoint(DecideRequest, endpoints.decide), methods=["POST"]),
            Route("/decide_batch", endpoint(DecideBatchRequest, endpoints.decide_batch), methods=["POST"]),
            Route("/feedback", endpoint(FeedbackRequest, endpoints.feedback), methods=["POST"]),
            Route("/livez", livez),
        ],
        lifespan=lifespan,
    )
    settings = rt.settings if rt is not None else Settings.from_env()
    # add_middleware puts each outside the previous: the token first, then the content type
    app.add_middleware(
        Probes,
        readiness=lambda: runtime().readiness(),
        spec=lambda: openapi.spec(bool(settings.token), settings.token_everywhere, *runtime().names()),
    )
    app.add_middleware(JsonApi)
    if settings.token:
        app.add_middleware(BearerAuth, token=settings.token, everywhere=settings.token_everywhere)
    app.add_middleware(RequestTimeout, timeout=timeout_s)
    return app
