"""The nba decision service on BentoML: ``bentoml serve serving.service:DecisionService`` or ``nba serve``.

Endpoints (JSON over HTTP POST; OpenAPI at ``/docs.json``, Swagger UI at ``/``):

* ``/decide`` — one customer → a :class:`serving.schemas.Decision`;
* ``/decide_batch`` — up to 10,000 distinct customers → their decisions, in order;
* ``/feedback`` — an outcome event for a decision id (idempotent; 404 for an unknown id);
* BentoML's ``/livez``, ``/healthz``, ``/readyz`` (ready once ``@champion`` is loaded) and
  Prometheus ``/metrics``, which also carries ``nba_decisions_total{channel, arm}``.

Configuration is read from environment variables (:mod:`serving.config`). Bad input gets a 4xx
whose message names the field: 400 from BentoML's schema validation (missing field, wrong type,
NaN, oversize batch), 422 from the service's own checks (unknown segment, channel or time zone),
404 for feedback on an unknown decision; nothing is stored and no traceback is logged. A request not
answered within 60 s gets a 504 (:mod:`serving.traffic`); if it was still waiting for the decider, it is
dropped and never decided.
"""

from __future__ import annotations

import gc
import logging
import os
from typing import Any

import bentoml
from starlette.responses import JSONResponse, Response

from serving import api
from serving.auth import BearerAuth, QuietValidationErrors
from serving.engine import BadRequest, NotReady
from serving.schemas import (
    DecideBatchRequest,
    DecideBatchResponse,
    DecideRequest,
    Decision,
    FeedbackRequest,
    FeedbackResponse,
)
from serving.traffic import TIMEOUT_S, replace_bentoml_timeout

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
log = logging.getLogger("nba.serving")
logging.getLogger("bentoml._internal.server.http_app").addFilter(QuietValidationErrors())
replace_bentoml_timeout()  # BentoML's keeps every request's timer alive for the whole timeout

DECISIONS = bentoml.metrics.Counter(
    name="nba_decisions", documentation="Decisions made, by channel (none = no contact) and experiment arm",
    labelnames=["channel", "arm"])


def _json(body: bytes) -> Response:
    """A JSON body built by :mod:`serving.api` in the declared response layout, sent as is."""
    return Response(body, media_type="application/json")


def _error(e: Exception) -> JSONResponse:
    if isinstance(e, BadRequest):
        return JSONResponse({"error": str(e)}, status_code=e.status)
    if isinstance(e, NotReady):
        return JSONResponse({"error": str(e)}, status_code=503)
    log.error("request failed: %s: %s", type(e).__name__, e)
    return JSONResponse({"error": f"service error: {type(e).__name__}; nothing was acknowledged"}, status_code=503)


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
        self.rt = api.Runtime.start(counter=DECISIONS)
        for name in ("decide", "decide_batch", "feedback"):
            # BentoML looks the endpoint up on the instance for every request, and its descriptor builds a new
            # caller (inspecting the signature) each time: build it once, the instance attribute then wins
            setattr(self, name, getattr(self, name))
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
            return _json(await api.decide(self.rt, DecideRequest.model_construct(**req)))  # type: ignore[return-value]
        except Exception as e:
            return _error(e)  # type: ignore[return-value]

    @bentoml.api(input_spec=DecideBatchRequest, route="/decide_batch")
    async def decide_batch(self, **req: Any) -> DecideBatchResponse:
        """Decisions for up to 10,000 distinct customers, committed in one transaction."""
        try:
            return _json(await api.decide_batch(self.rt, DecideBatchRequest.model_construct(**req)))  # type: ignore[return-value]
        except Exception as e:
            return _error(e)  # type: ignore[return-value]

    @bentoml.api(input_spec=FeedbackRequest, route="/feedback")
    async def feedback(self, **req: Any) -> FeedbackResponse:
        """What the customer did after a decision (delivered, opened, clicked, converted, opted out)."""
        try:
            return await api.feedback(self.rt, FeedbackRequest.model_construct(**req))
        except Exception as e:
            return _error(e)  # type: ignore[return-value]


if os.environ.get("NBA_TOKEN"):
    DecisionService.add_asgi_middleware(BearerAuth, token=os.environ["NBA_TOKEN"])
