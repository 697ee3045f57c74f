"""The service's OpenAPI 3.0 description, built from the models in :mod:`serving.schemas` and the answers
the service really gives (``/docs.json``; the Swagger UI at ``/`` reads it).

BentoML's own spec is built for its generic endpoints: it states no 401, 415, 422, 503 or 504, says
``detail`` is a string where its validation errors send a list, and writes nullable fields as
``{"type": "null"}`` (JSON Schema, not OpenAPI 3.0) or drops the null altogether. This one is
checked against the running service by the contract tests (``tests/serving/test_serving_contract.py``,
schemathesis) and ``bench/fuzz.py``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import BaseModel

from nba.deployment import Deployment
from serving.requests import DEPLOYMENT_FIELDS, PROFILE_FIELDS
from serving.schemas import (
    MAX_BATCH,
    DecideBatchRequest,
    DecideBatchResponse,
    DecideRequest,
    Decision,
    FeedbackRequest,
    FeedbackResponse,
)

REF = "#/components/schemas/{model}"

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "what is wrong, starting with the offending field"},
        "detail": {
            "type": "array",
            "items": {"type": "object"},
            "description": "schema validation (400): one entry per failed check, with its field path in `loc`",
        },
    },
}
READINESS = {
    "type": "object",
    "required": ["ready", "policies", "problems"],
    "properties": {
        "ready": {"type": "boolean"},
        "policies": {
            "type": "object",
            "description": "served alias -> version, policy and where it came from",
            "additionalProperties": {"type": "object"},
        },
        "problems": {
            "type": "array",
            "items": {"type": "string"},
            "description": "what is wrong, in plain sentences (empty when all is well)",
        },
        "log": {"type": "object", "description": "the decision log: mode, replay backlog, dead letters"},
    },
}
_STATUS = {
    400: "the body breaks the schema (missing field, wrong type, out of bounds, not storable)",
    401: "missing or wrong bearer token (when the service has one)",
    404: "unknown decision id",
    415: "the body is not declared as application/json",
    422: "a value the deployed policy does not know (segment, channel, time zone) or an inconsistent time",
    503: "no policy loaded, or the decision log cannot acknowledge now; nothing was acknowledged: retry",
    504: "not answered within the deadline; nothing was acknowledged: retry",
}


def to_openapi30(schema: Any) -> Any:
    """A pydantic (JSON Schema 2020-12) schema rewritten in OpenAPI 3.0's dialect: ``nullable`` instead
    of a ``{"type": "null"}`` branch, ``enum`` instead of ``const``, no ``propertyNames``."""
    if isinstance(schema, list):
        return [to_openapi30(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: to_openapi30(v) for k, v in schema.items() if k not in ("propertyNames", "const")}
    if "const" in schema:
        out["enum"] = [schema["const"]]
    branches = out.get("anyOf")
    if branches and any(b == {"type": "null"} for b in branches):
        rest = [b for b in branches if b != {"type": "null"}]
        del out["anyOf"]
        if len(rest) == 1 and "$ref" not in rest[0]:
            out.update(rest[0])
        elif len(rest) == 1:
            out["allOf"] = rest
        else:
            out["anyOf"] = rest
        out["nullable"] = True
    return out


def _model(model: type[BaseModel], mode: str, components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=REF, mode=mode)  # type: ignore[arg-type]
    for name, sub in schema.pop("$defs", {}).items():
        components.setdefault(name, to_openapi30(sub))
    components.setdefault(model.__name__, to_openapi30(schema))
    return {"$ref": REF.format(model=model.__name__)}


def _json(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}, **extra}


def _text(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): _json({"$ref": REF.format(model="Error")}, _STATUS[c]) for c in codes}


def attributes_schema(deployment: Deployment) -> str:
    """The OpenAPI schema (as JSON text, for :func:`spec`) of a deployment's ``attributes`` object and its
    offers: each declared attribute with its type, range or allowed values; the required ones required."""
    props: dict[str, Any] = {}
    for a in deployment.attributes:
        if a.type == "number":
            p: dict[str, Any] = {"type": "number"}
            if a.min is not None:
                p["minimum"] = a.min
            if a.max is not None:
                p["maximum"] = a.max
        elif a.type == "category":
            p = {"type": "string", "enum": list(a.values)}
        elif a.type == "boolean":
            p = {"type": "boolean"}
        else:
            p = {"type": "string", "format": "date-time"}
        p["nullable"] = not a.required
        props[a.name] = p
    schema = {
        "type": "object",
        "properties": props,
        "additionalProperties": False,
        "description": f"the customer's attributes as the deployment {deployment.name!r} declares them",
    }
    required = [a.name for a in deployment.attributes if a.required]
    if required:
        schema["required"] = required
    return json.dumps({"attributes": schema, "offers": [o.name for o in deployment.offers]})


@lru_cache(maxsize=8)
def spec(
    token: bool = False,
    token_everywhere: bool = False,
    segments: tuple[str, ...] = (),
    channels: tuple[str, ...] = (),
    deployment: str = "",
) -> dict[str, Any]:
    """The OpenAPI 3.0 document of a service with a bearer token (``token``), needed for ``/metrics`` and
    the docs too (``token_everywhere``) or only for the decisions; ``segments`` and ``channels``: the
    served champion's names, stated as the only values those fields take (none: any name);
    ``deployment``: :func:`attributes_schema` of the champion's deployment, if it has one."""
    components: dict[str, Any] = {"Error": ERROR, "Readiness": READINESS}
    secured: list[dict[str, list]] = [{"bearer": []}] if token else []
    unauthorised = (401,) if token else ()
    token_everywhere = token and token_everywhere

    def post(
        op: str,
        summary: str,
        request: type[BaseModel],
        response: type[BaseModel],
        *codes: int,
        links: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        ok = _json(_model(response, "serialization", components), "the answer")
        if links:
            ok["links"] = links
        return {
            "post": {
                "operationId": op,
                "summary": summary,
                "tags": ["decisions"],
                "security": secured,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _model(request, "validation", components)}},
                },
                "responses": {"200": ok, **_errors(400, *unauthorised, *codes, 415, 503, 504)},
            }
        }

    feedback_link = {
        "feedback": {
            "operationId": "feedback",
            "description": "report what the customer did after this decision",
            "requestBody": {"decision_id": "$response.body#/decision_id", "event": "opened"},
        }
    }
    paths = {
        "/decide": post(
            "decide", "next best action for one customer", DecideRequest, Decision, 422, links=feedback_link
        ),
        "/decide_batch": post(
            "decide_batch",
            f"decisions for up to {MAX_BATCH:,} distinct customers",
            DecideBatchRequest,
            DecideBatchResponse,
            422,
        ),
        "/feedback": post(
            "feedback", "an outcome event for a decision (idempotent)", FeedbackRequest, FeedbackResponse, 404, 422
        ),
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "ready to decide, and what is wrong if not",
                "tags": ["infrastructure"],
                "security": [],
                "responses": {
                    "200": _json({"$ref": REF.format(model="Readiness")}, "ready"),
                    "503": _json({"$ref": REF.format(model="Readiness")}, "not ready"),
                },
            }
        },
        "/livez": {
            "get": {
                "operationId": "livez",
                "summary": "the process is alive",
                "tags": ["infrastructure"],
                "security": [],
                "responses": {"200": _text("alive")},
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "the process is alive",
                "tags": ["infrastructure"],
                "security": [],
                "responses": {"200": _text("alive")},
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "tags": ["infrastructure"],
                "security": secured if token_everywhere else [],
                "responses": {
                    "200": _text("metrics in Prometheus' text format"),
                    **(_errors(401) if token_everywhere else {}),
                },
            }
        },
    }
    if segments:
        components["Customer"]["properties"]["segment"]["enum"] = list(segments)
        components["DecideRequest"]["properties"]["segment"]["enum"] = list(segments)
    if channels:
        for name in ("Customer", "DecideRequest"):
            props = components[name]["properties"]
            props["channels"]["items"]["enum"] = list(channels)
            props["consent"]["properties"] = {c: {"type": "boolean"} for c in channels}
            props["consent"]["additionalProperties"] = False
    # the fields of the served world only: a scenario's profile, or a deployment's attributes
    for name in ("Customer", "DecideRequest"):
        schema = components[name]
        props = schema["properties"]
        if deployment:
            world = json.loads(deployment)
            props["attributes"] = world["attributes"]
            props["offers"]["items"]["enum"] = world["offers"]
            for field in PROFILE_FIELDS:
                props.pop(field, None)
        elif segments:
            for field in DEPLOYMENT_FIELDS:
                props.pop(field, None)
            schema["required"] = sorted({*schema.get("required", ()), "segment", "tenure_days"})
            for field in ("segment", "tenure_days"):
                props[field].pop("nullable", None)
                props[field].pop("default", None)
    try:
        release = version("nba")
    except PackageNotFoundError:
        release = "0"
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "nba decision service",
            "version": release,
            "description": "Next best action per customer: channel, content and send time, decided by the "
            "registry's champion policy and logged before the answer. Errors are JSON "
            '`{"error": ...}` naming the field; nothing is stored by a request that fails.',
        },
        "servers": [{"url": "."}],
        "paths": paths,
        "components": {
            "schemas": components,
            **({"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}} if token else {}),
        },
    }
