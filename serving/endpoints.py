"""The endpoints' logic, independent of the HTTP framework: the BentoML service and the bare ASGI app
(``bench/bare_app.py``, the benchmark's reference) both call these coroutines.

Each raises :class:`serving.engine.BadRequest` (4xx, message naming the field),
:class:`serving.engine.NotReady` (503) or returns a response model.
"""

from __future__ import annotations

import asyncio
import operator
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from itertools import repeat
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import orjson

from nba.actions import ActionSpace
from nba.deployment import Deployment
from serving.config import Settings
from serving.decisions import Result
from serving.engine import BadRequest, Engine, Job, NotReady
from serving.model_store import ModelStore
from serving.schemas import DecideBatchRequest, DecideRequest, FeedbackRequest, FeedbackResponse

T = TypeVar("T")

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

        keep_large_arrays_on_the_heap()
        settings = settings or Settings.from_env()
        url = settings.log_url
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        namespace = os.environ.get("NBA_LOG_NAMESPACE") or None
        decision_log = DecisionLog(url, namespace=namespace, checkpoint_every_s=1.0)
        deployment = None
        if settings.deployment is not None:
            try:
                deployment = Deployment.load(settings.deployment)
            except (OSError, ValueError) as e:
                decision_log.close()
                raise ValueError(f"NBA_DEPLOYMENT: {e}") from e
            try:  # the log records the world its decisions are made in (training on it finds it there)
                decision_log.set_deployment(deployment.to_dict())
            except ValueError as e:
                decision_log.close()
                raise ValueError(
                    f"NBA_DEPLOYMENT: {e}; if only the offers changed, move the log onto the new "
                    f"file first: nba deployment update {settings.deployment} --log <this log>"
                ) from e
        models = ModelStore(
            settings.tracking_uri,
            settings.model_name,
            settings.aliases,
            settings.cache_dir,
            settings.poll_s,
            deployment,
            decision_log.layout(),
        )
        models.start()
        return cls(settings, models, Engine(settings, models, decision_log, counter))

    @property
    def ready(self) -> bool:
        """A policy is loaded, and (write-behind) the spool can still acknowledge decisions."""
        spool = self.engine.spool
        return self.models.ready and (spool is None or spool.failed is None)

    def names(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The served champion's segment and channel names (empty before one is loaded; no segments for a
        deployment's policy)."""
        champion = self.models.served.get("champion")
        if champion is None:
            return (), ()
        segments = () if champion.bundle.deployment is not None else tuple(champion.bundle.spec.segments)
        return segments, tuple(champion.bundle.policy.space.channels)

    @property
    def deployment(self) -> Deployment | None:
        """The deployment the served champion decides on (None: the simulator's world, or none loaded)."""
        champion = self.models.served.get("champion")
        return None if champion is None else champion.bundle.deployment

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """``/readyz``'s answer: ready or not, what is served, and what is wrong in plain sentences."""
        problems = list(self.models.problems)
        spool = self.engine.spool
        if spool is None:
            log: dict[str, Any] = {"mode": "write-through"}
        else:
            log = {"mode": "write-behind", "behind_bytes": spool.pending_bytes, "dead_letters": spool.dead_letters}
            if spool.failed is not None:
                problems.append(f"the spool failed ({spool.failed}): nothing more is acknowledged until a restart")
            if spool.last_error is not None:
                problems.append(f"the decision log is {spool.pending_bytes} bytes behind the spool: {spool.last_error}")
            if spool.dead_letters:
                problems.append(f"{spool.dead_letters} decisions the log refused are kept in {spool.dead_letter_path}")
        down = self.engine.outage.down
        if down is not None:
            problems.append(down)
        policies = {
            alias: {"version": s.version, "policy": s.bundle.policy.name, "source": s.source}
            for alias, s in self.models.served.items()
        }
        ready = self.ready
        return ready, {"ready": ready, "policies": policies, "problems": problems, "log": log}

    def close(self) -> None:
        """Stop polling the registry and the decider (after what is queued; the spool replayed)."""
        self.models.stop()
        self.engine.close()


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def keep_large_arrays_on_the_heap(mmap_mb: int = 32, trim_mb: int = 64) -> bool:
    """Let glibc serve allocations up to ``mmap_mb`` MB from its heap and keep up to ``trim_mb`` MB of it free
    rather than give it back; True where it applied (glibc), False elsewhere.

    A batch's arrays are megabytes each (1,000 customers x 801 actions: 0.8 MB of eligibility flags, 6.4 MB of
    probabilities and as much of their cumulative sums). By default glibc maps each such block afresh and
    unmaps it when freed, so every batch pays the page faults of touching new memory again: the policy's
    draw over the telecom deployment took 9-10 ms of CPU instead of 6, and a batch's decide path 17 ms
    instead of 11. The process keeps at most ``trim_mb`` MB of freed heap.
    """
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_mb << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_mb << 20))


_EPOCH = datetime(1970, 1, 1)
_FEW = 2  # up to this many stamps, formatting each in Python beats numpy's per-call overhead


def _iso(hours: np.ndarray, offset_h: np.ndarray | None = None) -> list[str]:
    """ISO 8601 strings of hour stamps: UTC with ``Z``, or local time with its ``+hh:mm`` offset."""
    if len(hours) <= _FEW:
        try:
            return _iso_few(hours, offset_h)
        except OverflowError:  # beyond datetime's years: numpy's strings
            pass
    us = np.round(np.asarray(hours, np.float64) * 3.6e9).astype(np.int64)
    if offset_h is None:
        # a batch's stamps are a few distinct ones (its time, and each slot's in each zone): format each once
        us, back = np.unique(us, return_inverse=True)
        text = [t + "Z" for t in np.datetime_as_string(us.astype("datetime64[us]"), unit="us").tolist()]
        return list(map(text.__getitem__, back.tolist()))
    off = np.round(np.asarray(offset_h, np.float64) * 60).astype(np.int64)  # minutes
    back = None
    if us.size and int(np.abs(us).max()) < 2**53:  # (instant, offset) pairs as complex numbers: exact
        pairs, back = np.unique(us + 1j * off, return_inverse=True)
        us, off = pairs.real.astype(np.int64), pairs.imag.astype(np.int64)
    local = np.datetime_as_string((us + off * 60_000_000).astype("datetime64[us]"), unit="us")
    text = [t + _offset(m) for t, m in zip(local.tolist(), off.tolist(), strict=True)]
    return text if back is None else list(map(text.__getitem__, back.tolist()))


def _iso_few(hours: np.ndarray, offset_h: np.ndarray | None) -> list[str]:
    """:func:`_iso` one stamp at a time, with :mod:`datetime` (OverflowError beyond its years)."""
    out = []
    offsets = [0] * len(hours) if offset_h is None else [round(o * 60) for o in np.asarray(offset_h).tolist()]
    for h, m in zip(np.asarray(hours, np.float64).tolist(), offsets, strict=True):
        d = _EPOCH + timedelta(microseconds=round(h * 3.6e9) + m * 60_000_000)
        out.append(
            f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:{d.second:02d}."
            f"{d.microsecond:06d}{'Z' if offset_h is None else _offset(m)}"
        )
    return out


@lru_cache(maxsize=128)
def _offset(minutes: int) -> str:
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _alternatives(bases: tuple[dict[str, Any], ...], row: list[tuple[int, float]]) -> list[dict[str, Any]]:
    out = []
    for a, p in row:
        d = bases[a].copy()  # a copy and one key: half the time of a five-key literal
        d["probability"] = p
        out.append(d)
    return out


def _decisions(job: Job, res: Result, experiment: str) -> list[dict[str, Any]]:
    """The decisions of ``job`` as plain JSON data in the :class:`serving.schemas.Decision` layout
    (built directly: a pydantic object per decision costs more than the decision itself in a large batch)."""
    rows = job.rows
    n = len(rows.ids)
    actions = res.action.tolist()
    if n and all(map(operator.is_, res.bundles, repeat(res.bundles[0]))):  # one served version decided them all
        first = res.bundles[0]
        described = list(map(_action_info(first.policy.space, first.deployment).__getitem__, actions))
        base = _alternative_bases(first.policy.space)
        alts = [_alternatives(base, row) if row else [] for row in res.alternatives]
    else:
        bundles = {id(b): b for b in res.bundles}  # one or two served versions: look each up once
        infos = {key: _action_info(b.policy.space, b.deployment) for key, b in bundles.items()}
        bases = {key: _alternative_bases(b.policy.space) for key, b in bundles.items()}
        described = [infos[id(b)][a] for b, a in zip(res.bundles, actions, strict=True)]
        alts = [
            _alternatives(bases[id(b)], row) if row else []
            for b, row in zip(res.bundles, res.alternatives, strict=True)
        ]
    action, channel, content, hour, offer, features = zip(*described, strict=True) if n else ((),) * 6
    columns = (
        res.decision_id,
        rows.ids,
        action,
        channel,
        content,
        offer,
        features,
        _iso(res.send_at),
        _iso(res.send_at, np.asarray(rows.tz)),
        hour,
        res.propensity.tolist(),
        res.policy,
        res.version,
        [experiment] * n,
        rows.arm,
        alts,
    )
    return [
        {
            "decision_id": d,
            "customer_id": c,
            "action": a,
            "channel": ch,
            "content": ct,
            "offer": of,
            "offer_features": fe,
            "send_at": su,
            "send_at_local": sl,
            "send_hour_local": h,
            "propensity": p,
            "policy": po,
            "policy_version": v,
            "experiment": e,
            "arm": arm,
            "alternatives": al,
        }
        for d, c, a, ch, ct, of, fe, su, sl, h, p, po, v, e, arm, al in zip(*columns, strict=True)
    ]


Info = tuple[str, str | None, str | None, int | None, str | None, dict[str, Any] | None]


def _action_info(space: ActionSpace, deployment: Deployment | None = None) -> tuple[Info, ...]:
    """Per action index: (name, channel, content, send hour, offer, offer features) as the responses show
    them; the offer and its declared features only for a deployment's actions. Cached per world."""

    def build() -> tuple[Info, ...]:
        out: list[Info] = [("no_contact", None, None, None, None, None)]
        offers = {} if deployment is None else {o.name: dict(o.features) for o in deployment.offers}
        for a, name in enumerate(space.names()[1:], start=1):
            content = space.contents[space.content_of[a]]
            out.append(
                (
                    name,
                    space.channels[space.channel_of[a]],
                    content,
                    space.send_slots[space.slot_of[a]],
                    content if deployment is not None else None,
                    offers.get(content),
                )
            )
        return tuple(out)

    return _per_world(_INFO, space, deployment, build)


def _per_world(
    cache: dict[tuple[ActionSpace, str | None], T],
    space: ActionSpace,
    deployment: Deployment | None,
    build: Callable[[], T],
) -> T:
    """``build()``, computed once per world (the action space, and the deployment's digest): a few worlds are
    served at once, so the cache is emptied past 16 of them."""
    key = (space, None if deployment is None else deployment.digest)
    out = cache.get(key)
    if out is None:
        if len(cache) > 16:
            cache.clear()
        out = cache[key] = build()
    return out


_INFO: dict[tuple[ActionSpace, str | None], tuple[Info, ...]] = {}


@lru_cache(maxsize=16)
def _alternative_bases(space: ActionSpace) -> tuple[dict[str, Any], ...]:
    """Per action index: an alternative's fields but its probability."""
    return tuple(
        {"action": a, "channel": ch, "content": ct, "send_hour_local": h} for a, ch, ct, h, _, _ in _action_info(space)
    )


def _dumps(data: Any) -> bytes:
    return orjson.dumps(data)


def _batch_body(job: Job, res: Result, experiment: str) -> bytes:
    """The :class:`serving.schemas.DecideBatchResponse` of ``job``: the bytes orjson makes of
    ``{"decisions": _decisions(...)}``, written column by column when one served version decided every row.

    A dict per decision, then orjson over them, took 1.8 ms of CPU for 1,000 decisions. Here each column
    is written whole (one piece of text per action for its fields, the propensities in one orjson call,
    strings as they are unless JSON escapes something in them) and the rows' pieces joined in one pass.
    """
    rows = job.rows
    n = len(rows.ids)
    first = res.bundles[0] if n else None
    if first is None or not all(map(operator.is_, res.bundles, repeat(first))):  # none, or two served versions
        return _dumps({"decisions": _decisions(job, res, experiment)})
    heads, hours, alternative_heads = _action_json(first.policy.space, first.deployment)
    actions = res.action.tolist()
    columns = (
        _json_contents(res.decision_id),
        _json_contents(rows.ids),
        list(map(heads.__getitem__, actions)),  # ","action": ... "send_at":"
        _iso(res.send_at),
        _iso(res.send_at, np.asarray(rows.tz)),
        list(map(hours.__getitem__, actions)),  # ","send_hour_local": ... "propensity":
        orjson.dumps(res.propensity.tolist())[1:-1].decode().split(","),
        _served_json(res.policy, res.version, rows.arm, experiment),  # "policy": ... "alternatives":
        _alternatives_json(alternative_heads, res.alternatives),
    )
    seps = ('{"decision_id":"', '","customer_id":"', "", "", '","send_at_local":"', "", "", ",", "", "},")
    width = 2 * len(columns) + 1  # per row: a separator before each column, and one after the last
    parts: list[str] = [""] * (n * width)
    for k, sep in enumerate(seps):
        if sep:
            parts[2 * k :: width] = [sep] * n
    for k, column in enumerate(columns):
        parts[2 * k + 1 :: width] = column
    return f'{{"decisions":[{"".join(parts)[:-1]}]}}'.encode()


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _json_contents(values: list[str]) -> list[str]:
    """Each string as JSON writes it between its quotes (escaped as orjson escapes it)."""
    text = "".join(values)
    if text.isprintable() and '"' not in text and "\\" not in text:  # nothing to escape (orjson escapes only these)
        return values
    return [_json(v)[1:-1] for v in values]


def _served_json(policy: list[str], version: list[str], arm: list[str], experiment: str) -> list[str]:
    """Each row's fields from ``"policy"`` to ``"alternatives":`` (a few distinct ones: each written once)."""
    n = len(policy)
    served = [policy, version, arm]
    if all(column.count(column[0]) == n for column in served):
        served = [column[:1] for column in served]  # the usual batch: one policy, version and arm
    keys = list(zip(*served, strict=True))
    text = {
        key: f'"policy":{_json(key[0])},"policy_version":{_json(key[1])},"experiment":{_json(experiment)},'
        f'"arm":{_json(key[2])},"alternatives":'
        for key in dict.fromkeys(keys)
    }
    return list(map(text.__getitem__, keys)) * (n // len(keys))


def _alternatives_json(heads: tuple[str, ...], alternatives: list[list[tuple[int, float]]]) -> list[str]:
    """Each row's alternatives as JSON (``[]`` for none), their probabilities written by orjson."""
    if not any(alternatives):
        return ["[]"] * len(alternatives)
    probabilities = iter(orjson.dumps([p for row in alternatives for _, p in row])[1:-1].decode().split(","))
    return [f"[{','.join(heads[a] + next(probabilities) + '}' for a, _ in row)}]" for row in alternatives]


def _action_json(space: ActionSpace, deployment: Deployment | None) -> tuple[tuple[str, ...], ...]:
    """Per action index, the JSON of its fields in a decision (up to ``"send_at":"``, and from
    ``","send_hour_local"`` to ``"propensity":``) and in an alternative (up to ``"probability":``)."""

    def build() -> tuple[tuple[str, ...], ...]:
        heads, hours, alternatives = [], [], []
        for name, channel, content, hour, offer, features in _action_info(space, deployment):
            fields = {"action": name, "channel": channel, "content": content}
            heads.append('",' + _json(fields | {"offer": offer, "offer_features": features})[1:-1] + ',"send_at":"')
            hours.append(f'","send_hour_local":{_json(hour)},"propensity":')
            alternatives.append(_json(fields | {"send_hour_local": hour})[:-1] + ',"probability":')
        return (tuple(heads), tuple(hours), tuple(alternatives))

    return _per_world(_JSON, space, deployment, build)


_JSON: dict[tuple[ActionSpace, str | None], tuple[tuple[str, ...], ...]] = {}


async def decide(rt: Runtime, req: DecideRequest) -> bytes:
    """One decision as a JSON :class:`serving.schemas.Decision`, committed to the log before it returns."""
    job = rt.engine.prepare([req], req.now, req.alternatives, batch=False)
    res = await asyncio.wrap_future(rt.engine.submit(job))
    return _dumps(_decisions(job, res, rt.settings.experiment)[0])


async def decide_batch(rt: Runtime, req: DecideBatchRequest) -> bytes:
    """Up to 10,000 distinct customers decided and committed together, as a JSON
    :class:`serving.schemas.DecideBatchResponse`."""
    job = rt.engine.prepare(req.customers, req.now, req.alternatives, batch=True)
    res = await asyncio.wrap_future(rt.engine.submit(job))
    return _batch_body(job, res, rt.settings.experiment)


async def feedback(rt: Runtime, req: FeedbackRequest) -> FeedbackResponse:
    """Record an outcome (idempotent); UnknownDecision (404) for an id the log does not hold."""
    if not rt.models.ready:  # feedback goes to the log itself: a failed spool does not stop it
        raise NotReady(f"no policy loaded: {rt.models.not_ready_reason or 'not loaded yet'}")
    recorded = await asyncio.to_thread(rt.engine.feedback, req.decision_id, req.event, req.time, req.value)
    return FeedbackResponse.model_construct(decision_id=req.decision_id, event=req.event, recorded=recorded)
