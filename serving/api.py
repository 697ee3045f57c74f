"""The endpoints' logic, independent of the HTTP framework: the BentoML service and the bare ASGI app
(:mod:`serving.asgi`, the benchmark's reference) both call these coroutines.

Each raises :class:`serving.engine.BadRequest` (4xx, message naming the field),
:class:`serving.engine.NotReady` (503) or returns a response model.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from nba.actions import ActionSpace
from serving.config import Settings
from serving.engine import BadRequest, Engine, Job, NotReady, Result, to_datetime
from serving.models import ModelStore
from serving.schemas import (
    Alternative,
    DecideBatchRequest,
    DecideBatchResponse,
    DecideRequest,
    Decision,
    FeedbackRequest,
    FeedbackResponse,
)

__all__ = ["BadRequest", "NotReady", "Runtime", "decide", "decide_batch", "feedback"]


@dataclass
class Runtime:
    """What one worker process holds: settings, the model store (polling), the log and the engine."""

    settings: Settings
    models: ModelStore
    engine: Engine

    @classmethod
    def start(cls, settings: Settings | None = None, counter: Any = None) -> Runtime:
        from nba.log.store import DecisionLog

        settings = settings or Settings.from_env()
        url = settings.log_url
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        namespace = os.environ.get("NBA_LOG_NAMESPACE") or None
        decision_log = DecisionLog(url, namespace=namespace)
        models = ModelStore(settings.tracking_uri, settings.model_name, settings.aliases, settings.cache_dir,
                            settings.poll_s)
        models.start()
        return cls(settings, models, Engine(settings, models, decision_log, counter))

    @property
    def ready(self) -> bool:
        return self.models.ready


@lru_cache(maxsize=16)
def _names(space: ActionSpace) -> tuple[str, ...]:
    return tuple(space.names())


def _decisions(job: Job, res: Result, experiment: str) -> list[Decision]:
    out = []
    rows = job.rows
    for i, (did, a, p, s) in enumerate(zip(res.decision_id, res.action.tolist(), res.propensity.tolist(),
                                           res.send_at.tolist(), strict=True)):
        space = res.spaces[i]
        names = _names(space)
        tz = rows.tz[i]
        if a:
            ch, ct, hour = space.channels[space.channel_of[a]], space.contents[space.content_of[a]], \
                space.send_slots[space.slot_of[a]]
            action = names[a]
        else:
            ch = ct = hour = None
            action = "no_contact"
        alts = []
        for alt, prob in res.alternatives[i]:
            if alt:
                alts.append(Alternative.model_construct(
                    action=names[alt], channel=space.channels[space.channel_of[alt]],
                    content=space.contents[space.content_of[alt]],
                    send_hour_local=space.send_slots[space.slot_of[alt]], probability=prob))
            else:
                alts.append(Alternative.model_construct(action="no_contact", channel=None, content=None,
                                                        send_hour_local=None, probability=prob))
        out.append(Decision.model_construct(
            decision_id=did, customer_id=rows.ids[i], action=action, channel=ch, content=ct,
            send_at=to_datetime(s), send_at_local=to_datetime(s, tz), send_hour_local=hour, propensity=p,
            policy=res.policy[i], policy_version=res.version[i], experiment=experiment,
            arm=rows.arm[i], alternatives=alts))
    return out


async def decide(rt: Runtime, req: DecideRequest) -> Decision:
    """One decision, committed to the log before it returns."""
    job = rt.engine.prepare([req], req.now, req.alternatives, batch=False)
    res = await asyncio.wrap_future(rt.engine.submit(job))
    return _decisions(job, res, rt.settings.experiment)[0]


async def decide_batch(rt: Runtime, req: DecideBatchRequest) -> DecideBatchResponse:
    """Up to 10,000 distinct customers decided and committed together."""
    job = rt.engine.prepare(req.customers, req.now, req.alternatives, batch=True)
    res = await asyncio.wrap_future(rt.engine.submit(job))
    return DecideBatchResponse.model_construct(decisions=_decisions(job, res, rt.settings.experiment))


async def feedback(rt: Runtime, req: FeedbackRequest) -> FeedbackResponse:
    """Record an outcome (idempotent); UnknownDecision (404) for an id the log does not hold."""
    if not rt.ready:
        raise NotReady("no policy loaded yet")
    recorded = await asyncio.to_thread(rt.engine.feedback, req.decision_id, req.event, req.time, req.value)
    return FeedbackResponse.model_construct(decision_id=req.decision_id, event=req.event, recorded=recorded)
