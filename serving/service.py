"""The nba decision service on BentoML: ``bentoml serve serving.service:DecisionService`` or ``nba serve``.

Endpoints (JSON over HTTP POST; OpenAPI at ``/docs.json``, Swagger UI at ``/``):

* ``/decide`` — one customer → a :class:`serving.schemas.Decision`;
* ``/decide_batch`` — up to 10,000 distinct customers → their decisions, in order;
* ``/feedback`` — an outcome event for a decision id (idempotent; 404 for an unknown id);
* BentoML's ``/livez``, ``/healthz``, ``/readyz`` (ready once ``@champion`` is loaded) and
  Prometheus ``/metrics``, which also carries ``nba_decisions_total{channel, arm}``.

Configuration is read from environment variables (:mod:`serving.config`). Bad input gets a 4xx
whose message names the field: 400 from BentoML's schema validation (missing field, wrong type,
NaN, a boolean for a number, out of bounds, text no log can store, oversize batch), 415 for a body
not declared ``application/json``, 422 from the service's own checks (unknown segment, channel or
time zone, a time outside 1970-2199 or before its decision), 404 for feedback on an unknown
decision; nothing is stored and no traceback is logged. When the decision log fails, requests get a
fast 503 and the log gets one line when the outage starts and one when it ends. A request not
answered within 60 s gets a 504 (:mod:`serving.timeout`); if it was still waiting for the decider, it is
dropped and never decided. ``/readyz`` answers JSON saying what is served and what is wrong;
``/docs.json`` is :mod:`serving.openapi`'s spec, which states every one of these answers.
"""

from __future__ import annotations

import gc
import logging
import os
from typing import Any

import bentoml
from starlette.responses import JSONResponse, Response

from serving import bentoml_patches, endpoints, openapi
from serving.auth import BearerAuth
from serving.config import Settings
from serving.engine import BadRequest, NotReady, Outage
from serving.guard import JsonApi, Probes
from serving.schemas import (
    DecideBatchRequest,
    DecideBatchResponse,
    DecideRequest,
    Decision,
    FeedbackRequest,
    FeedbackResponse,
)
from serving.timeout import TIMEOUT_S

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
log = logging.getLogger("nba.serving")
# our request deadline in place of BentoML's, unknown paths under one metrics label, one warning line per
# invalid request instead of a traceback (each patch of BentoML's internals is in serving/bentoml_patches.py)
bentoml_patches.apply()
SETTINGS = Settings.from_env()  # the worker builds its runtime from the same variables

DECISIONS = bentoml.metrics.Counter(
    name="nba_decisions",
    documentation="Decisions made, by channel (none = no contact) and experiment arm",
    labelnames=["channel", "arm"],
)
DEAD_LETTERS = bentoml.metrics.Gauge(
    name="nba_dead_letters",
    documentation="Decisions the log refused on replay, kept in the spool's dead letter",
    multiprocess_mode="max",
)
LOG_BEHIND = bentoml.metrics.Gauge(
    name="nba_log_behind_bytes",
    documentation="Write-behind: bytes of spooled decisions not in the log yet",
    multiprocess_mode="max",
)
_RUNTIME: list[endpoints.Runtime] = []  # this worker's, once its service instance is built
_UNEXPECTED = Outage("request handling")  # failures outside the engine (none known): logged once per run


def _readiness() -> tuple[bool, dict[str, Any]]:
    if not _RUNTIME:
        return False, {"ready": False, "policies": {}, "problems": ["starting"], "log": {}}
    ready, body = _RUNTIME[0].readiness()
    log_state = body["log"]
    DEAD_LETTERS.set(log_state.get("dead_letters", 0))
    LOG_BEHIND.set(log_state.get("behind_bytes", 0))
    return ready, body


def _json(body: bytes) -> Response:
    """A JSON body built by :mod:`serving.endpoints` in the declared response layout, sent as is."""
    return Response(body, media_type="application/json")


def _spec() -> dict[str, Any]:
    names = _RUNTIME[0].names() if _RUNTIME else ((), ())
    deployment = _RUNTIME[0].deployment if _RUNTIME else None
    world = "" if deployment is None else openapi.attributes_schema(deployment)
    return openapi.spec(bool(SETTINGS.token), SETTINGS.token_everywhere, *names, world)


def _error(e: Exception) -> JSONResponse:
    if isinstance(e, BadRequest):
        return JSONResponse({"error": str(e)}, status_code=e.status)
    if isinstance(e, NotReady):
        return JSONResponse({"error": str(e)}, status_code=503)
    (_RUNTIME[0].engine.outage if _RUNTIME else _UNEXPECTED).failed(e)  # one log line per outage
    return JSONResponse(
        {"error": f"service error: {type(e).__name__}; nothing was acknowledged, retry later"}, status_code=503
    )


@bentoml.service(
    name="nba",
    workers=int(os.environ.get("NBA_WORKERS", "1")),
    traffic={"timeout": TIMEOUT_S},
    logging={"access": {"enabled": False}},  # an access log line per decision costs throughput
    # no OpenTelemetry spans on the hot paths (about 10% of a request's cost when nothing samples them)
    tracing={"sample_rate": 0.0, "excluded_urls": ["/decide", "/decide_batch", "/feedback"]},
)
class DecisionService:
    """Decides for customers with the registry's ``@champion`` (and ``@challenger`` in an experiment)."""

    def __init__(self) -> None:
        self.rt = endpoints.Runtime.start(SETTINGS, counter=DECISIONS)
        _RUNTIME[:] = [self.rt]
        # BentoML's descriptor would build each endpoint's caller anew for every request: once, here
        bentoml_patches.bind_endpoints(self, ("decide", "decide_batch", "feedback"))
        gc.collect()
        gc.freeze()  # the loaded policies and libraries leave the collector's generations: shorter pauses

    def __is_ready__(self) -> bool:
        return self.rt.ready

    @bentoml.on_shutdown
    def close(self) -> None:
        """Answer what is queued and, in write-behind mode, write the spool to the log."""
        self.rt.close()

    @bentoml.api(input_spec=DecideRequest, route="/decide")
    async def decide(self, **req: Any) -> Decision:
        """Next best action for one customer: channel, content, send time, propensity, alternatives."""
        try:
            return _json(await endpoints.decide(self.rt, DecideRequest.model_construct(**req)))  # type: ignore[return-value]
        except Exception as e:
            return _error(e)  # type: ignore[return-value]

    @bentoml.api(input_spec=DecideBatchRequest, route="/decide_batch")
    async def decide_batch(self, **req: Any) -> DecideBatchResponse:
        """Decisions for up to 10,000 distinct customers, committed in one transaction."""
        try:
            return _json(await endpoints.decide_batch(self.rt, DecideBatchRequest.model_construct(**req)))  # type: ignore[return-value]
        except Exception as e:
            return _error(e)  # type: ignore[return-value]

    @bentoml.api(input_spec=FeedbackRequest, route="/feedback")
    async def feedback(self, **req: Any) -> FeedbackResponse:
        """What the customer did after a decision (delivered, opened, clicked, converted, opted out)."""
        try:
            return await endpoints.feedback(self.rt, FeedbackRequest.model_construct(**req))
        except Exception as e:
            return _error(e)  # type: ignore[return-value]


# outermost first: the token is checked before the content type, the content type before any body is read
if SETTINGS.token:
    DecisionService.add_asgi_middleware(BearerAuth, token=SETTINGS.token, everywhere=SETTINGS.token_everywhere)
DecisionService.add_asgi_middleware(JsonApi)
DecisionService.add_asgi_middleware(Probes, readiness=_readiness, spec=_spec, before_metrics=_readiness)
