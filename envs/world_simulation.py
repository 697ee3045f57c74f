"""A brand's own deployment, simulated: N customers of a :class:`envs.world.LatentWorld`, deciding through
the library's one decide path.

:class:`WorldSimulation` has the shape of :class:`envs.simulation.Simulation`: :meth:`~WorldSimulation.observe`
(the features a policy sees), :meth:`~WorldSimulation.action_mask` (what the deployment allows now),
:meth:`~WorldSimulation.expected_rewards` (the exact expected reward of each action: ground truth),
:meth:`~WorldSimulation.step` (realised outcomes; contacts, opens, purchases and opt-outs enter the
customer's history when they happen, in time order). Observation and mask are built by the deployment's
own functions (:meth:`nba.features.AttributeFeatures.build`, :meth:`nba.deployment.Deployment.eligibility`,
with the offer budgets and channel capacities counted as :meth:`nba.deployment.Usage.count` counts them),
and :meth:`~WorldSimulation.decide` calls :func:`nba.decide.decide` itself. What the simulation sends
to the decide path is what a brand's caller would send: the attributes (:meth:`~WorldSimulation.attributes`),
the time zone, the channels still allowed; the history and the recent contacts are those the decision
log rebuilds (:func:`nba.decide.history_from_log`; ``tests/envs/test_world.py`` checks the parity).

**Randomness.** Row ``i`` owns the counter-based stream of row ``i`` of ``(seed, purpose)``
(:mod:`envs.random`): its attributes and time zone come from one draw of fixed width, and every step
draws the same fixed width for every row, whatever the action. So row ``i`` is the same customer in a
simulation of any size, two policies run on one (seed, purpose) meet the same customers and the same luck
(common random numbers), and another purpose (``"train"``, ``"held-out"``) is another, independent set
of customers. The policy's own exploration draws from the generator the caller gives :meth:`decide`.

**Time.** Decision ``k`` of every customer falls on UTC day ``start + k * every_days`` at a local hour
drawn in the world's ``decision_hours``. A message goes out at its send slot's time
(:func:`nba.eligibility.send_time`); it is delivered after the channel's ``delay_h``, seen after an
exponential delay, converted after another. The reward is the deployment's rule applied to those times
(:meth:`nba.deployment.Deployment.reward_rule`), realised at once in :class:`WorldStep`; the history
sees each event only once it has happened.

:func:`simulate_log` runs a policy and writes a real :class:`nba.log.DecisionLog` holding the deployment
(``nba train --source <url>`` trains on it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from envs.random import Streams, categorical, normal
from envs.world import LatentWorld, Model
from nba.actions import NO_CONTACT
from nba.decide import Decided, decide
from nba.deployment import Deployment, Usage
from nba.eligibility import Reason, send_time
from nba.features import History, hour_of_day
from nba.log.records import DecisionRecords, OutcomeRecords
from nba.policies import Policy

# uniforms per row per step: next hour, delivery, seen, seen delay, conversion, its delay, value, opt-out
STEP_WIDTH = 8
CHUNK = 2048  # rows at a time when scoring every action


# ----------------------------------------------------------------------------- the population
@dataclass
class Population:
    """Attribute values of N customers: a category as its value's index (-1 unknown), a boolean as
    -1 (unknown), 0 or 1, a number or a time as float64 (NaN unknown); time zones and first decision times."""

    values: dict[str, np.ndarray]
    tz: np.ndarray  # (N,) hours east of UTC
    now: np.ndarray  # (N,) hours since the epoch: the first decision

    def columns(self, d: Deployment) -> dict[str, np.ndarray]:
        """As :meth:`nba.deployment.Deployment.columns` gives them."""
        out = {}
        for a in d.attributes:
            v = self.values[a.name]
            if a.type == "category":
                out[a.name] = np.array([*a.values, None], dtype=object)[v]
            elif a.type == "boolean":
                out[a.name] = np.array([False, True, None], dtype=object)[v]
            else:
                out[a.name] = v.copy()
        return out

    def rows(self, d: Deployment) -> list[dict[str, Any]]:
        """Each customer's attributes as :meth:`nba.deployment.Deployment.check_attributes` returns them."""
        cols = []
        for a in d.attributes:
            v = self.values[a.name]
            if a.type == "category":
                cols.append(np.array([*a.values, None], dtype=object)[v].tolist())
            elif a.type == "boolean":
                cols.append(np.array([False, True, None], dtype=object)[v].tolist())
            else:
                cols.append(np.where(np.isnan(v), None, v.astype(object)).tolist())
        names = [a.name for a in d.attributes]
        return [dict(zip(names, row, strict=True)) for row in zip(*cols, strict=True)]


def population_width(d: Deployment) -> int:
    return 2 * len(d.attributes) + 2


def sample_population(world: LatentWorld, d: Deployment, streams: Streams) -> Population:
    """The customers of ``streams``' rows: one draw of :func:`population_width` uniforms each."""
    u = streams.uniform(population_width(d))
    n = u.shape[0]
    values: dict[str, np.ndarray] = {}
    for j, (a, law) in enumerate(zip(d.attributes, world.attributes, strict=True)):
        uv, um = u[:, 2 * j], u[:, 2 * j + 1]
        g = np.zeros(n, np.intp) if law.given is None else values[law.given].astype(np.intp)

        def by(p: tuple[float, ...], g=g) -> np.ndarray:
            return np.asarray(p, np.float64)[g] if len(p) > 1 else np.full(n, p[0])

        missing = um < by(law.missing)
        if a.type == "category":
            v = categorical(uv, np.cumsum(law.weights)).astype(np.int16)
            fill = -1 if a.default is None else a.values.index(a.default)
            v[missing] = fill
        elif a.type == "boolean":
            v = (uv < by(law.p)).astype(np.int8)
            v[missing] = -1 if a.default is None else int(a.default)
        else:
            x = _draw(law.distribution, {k: by(p) for k, p in law.params.items()}, uv) + law.offset
            if law.round is not None:
                x = np.round(x, law.round)
            if a.type == "time":
                x = world.start_h - 24.0 * x
            else:
                x = np.clip(x, -np.inf if a.min is None else a.min, np.inf if a.max is None else a.max)
            x[missing] = np.nan if a.default is None else a.default
            v = x
        values[a.name] = v
    offsets = np.array([z[0] for z in world.time_zones])
    tz = offsets[categorical(u[:, -2], np.cumsum([z[1] for z in world.time_zones]))]
    return Population(values, tz, _decision_time(world, 0, u[:, -1], tz))


def _draw(dist: str, p: dict[str, np.ndarray], u: np.ndarray) -> np.ndarray:
    if dist == "lognormal":
        return p["median"] * np.exp(p["sigma"] * normal(u))
    if dist == "normal":
        return p["mean"] + p["sd"] * normal(u)
    if dist == "uniform":
        return p["low"] + (p["high"] - p["low"]) * u
    return -p["mean"] * np.log1p(-u)  # exponential


def _decision_time(world: LatentWorld, k: int, u: np.ndarray, tz: np.ndarray) -> np.ndarray:
    lo, hi = world.decision_hours
    return world.start_h + 24.0 * world.every_days * k + lo + (hi - lo) * u - tz


def _rounds(rows: np.ndarray) -> list[np.ndarray]:
    """Positions of ``rows`` split into rounds holding each row at most once, each row's order kept."""
    if rows.size == 0:
        return []
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    start = np.r_[0, np.flatnonzero(sorted_rows[1:] != sorted_rows[:-1]) + 1]
    rank = np.empty(rows.size, np.int64)
    rank[order] = np.arange(rows.size) - np.repeat(start, np.diff(np.r_[start, rows.size]))
    return [np.flatnonzero(rank == k) for k in range(int(rank.max()) + 1)]


@dataclass
class _Pending:
    """What a step decided that has not happened yet: sends, first sights, purchases, opt-outs."""

    contact: dict[str, np.ndarray] = field(default_factory=dict)  # row, send_at, decided, channel
    seen: dict[str, np.ndarray] = field(default_factory=dict)  # row, time, channel, send_at
    bought: dict[str, np.ndarray] = field(default_factory=dict)  # row, time
    out: dict[str, np.ndarray] = field(default_factory=dict)  # row, time, channel

    def add(self, kind: str, **cols: np.ndarray) -> None:
        old = getattr(self, kind)
        setattr(self, kind, {k: np.concatenate([old[k], v]) if old else v for k, v in cols.items()})

    def due(self, kind: str, now: np.ndarray) -> dict[str, np.ndarray]:
        """Remove and return the items of ``kind`` that have happened by their row's ``now``."""
        items = getattr(self, kind)
        if not items:
            return {}
        time = items["send_at" if kind == "contact" else "time"]
        ready = time <= now[items["row"]]
        setattr(self, kind, {k: v[~ready] for k, v in items.items()})
        return {k: v[ready] for k, v in items.items()}


# ----------------------------------------------------------------------------- the simulation
@dataclass(frozen=True)
class WorldStep:
    """What followed one decision of each of N customers (times in hours since the epoch, NaN where the
    event did not happen)."""

    action: np.ndarray  # (N,) int64
    now: np.ndarray  # (N,) the decision time
    send_at: np.ndarray  # (N,) the send time (the decision time for no contact)
    cost: np.ndarray  # (N,) the channel's cost, 0 for no contact
    reward: np.ndarray  # (N,) realised, per the deployment's reward rule
    expected: np.ndarray  # (N,) the exact expected reward of the action at the decision
    delivered: np.ndarray  # (N,) bool
    opened: np.ndarray  # (N,) bool: seen
    converted: np.ndarray  # (N,) bool
    opted_out: np.ndarray  # (N,) bool
    value: np.ndarray  # (N,) the conversion's value, 0 without one
    t_delivered: np.ndarray
    t_opened: np.ndarray
    t_converted: np.ndarray


@dataclass
class _Moment:
    """Everything the decide path and the response need at the current decision time (cached until the
    next step); the observation, mask and scores are filled when first needed, or from :meth:`decide`."""

    rows: list[dict[str, Any]]
    columns: dict[str, np.ndarray]
    allowed: np.ndarray
    usage: Usage | None
    send: np.ndarray  # (N, S)
    load: np.ndarray  # (N, C) decayed contact load per channel
    X: np.ndarray | None = None
    mask: np.ndarray | None = None
    reasons: np.ndarray | None = None
    offer_score: np.ndarray | None = None  # (N, n_offers)
    channel_score: np.ndarray | None = None  # (N, C)


class WorldSimulation:
    """N customers of a deployment in a latent world (module docstring).

    Args:
        deployment: the brand's deployment.
        world: its latent world (:class:`envs.world.LatentWorld`, validated against ``deployment``).
        seed: the integer seed.
        n: number of customers.
        purpose: what the customers are for (``"train"``, ``"held-out"``...): rows of different
            (seed, purpose) pairs share no random stream (:mod:`envs.random`).
        first_row: index of this simulation's first row in the (seed, purpose) family (shards).
    """

    def __init__(
        self,
        deployment: Deployment,
        world: LatentWorld,
        *,
        seed: int,
        n: int,
        purpose: str,
        first_row: int = 0,
        model: Model | None = None,
    ) -> None:
        world.check(deployment)
        if not (isinstance(n, int | np.integer) and n >= 1):
            raise ValueError(f"n: must be a positive number of customers, got {n!r}")
        self.deployment, self.world = deployment, world
        self.model = Model(world, deployment) if model is None else model
        self.space = deployment.action_space()
        self.layout = deployment.features()
        self.n = int(n)
        self.streams = Streams.of(seed, self.n, purpose, first_row)
        pop = sample_population(world, deployment, self.streams)
        self.values, self.tz, self.now = pop.values, pop.tz, pop.now
        self.steps = 0
        c = len(deployment.channels)
        self.history = History.empty(self.n, c)
        self.recent = deployment.recent(self.n)
        self.blocked = np.zeros((self.n, c), bool)  # opted out of a channel that has no consent attribute
        self._consent = [None if ch.consent is None else ch.consent for ch in deployment.channels]
        self._pending = _Pending()
        self._counted = any(o.budget is not None for o in deployment.offers) or any(
            ch.capacity_per_day is not None for ch in deployment.channels
        )
        self._sent_action = np.zeros(0, np.int64)  # contacts whose send day may still count toward a capacity
        self._sent_at = np.zeros(0)
        self._offer_sends = np.zeros(len(deployment.offers), np.int64)  # the older ones, by offer
        self._moment: _Moment | None = None

    # ------------------------------------------------------------------ what the caller sends
    @property
    def population(self) -> Population:
        return Population(self.values, self.tz, self.now)

    def attributes(self) -> list[dict[str, Any]]:
        """Each customer's attributes now, as :meth:`nba.deployment.Deployment.check_attributes` gives them."""
        return self.moment.rows

    def allowed(self) -> np.ndarray:
        """(N, C) bool: the channels the caller still allows (not opted out of a channel without consent)."""
        return self.moment.allowed

    def usage(self) -> Usage | None:
        """The offer budgets and channel capacities used so far (:meth:`nba.deployment.Usage.count` of every
        contact), None when the deployment declares none."""
        return self.moment.usage

    def _usage(self) -> Usage | None:
        if not self._counted:
            return None
        first = math.floor(float(self.now.min()) / 24.0)
        old = np.floor(self._sent_at / 24.0) < first
        if old.any():  # no longer counts toward a day's capacity: keep its offer's count only
            self._offer_sends += np.bincount(
                self.space.content_of[self._sent_action[old]], minlength=len(self.deployment.offers)
            )
            self._sent_action, self._sent_at = self._sent_action[~old], self._sent_at[~old]
        u = Usage.count(self.deployment, self._sent_action, self._sent_at, self.now)
        return Usage(u.offer_sends + self._offer_sends, u.channel_sends, u.day)

    @property
    def moment(self) -> _Moment:
        if self._moment is None:
            d, pop = self.deployment, self.population
            self._moment = _Moment(
                pop.rows(d),
                pop.columns(d),
                ~self.blocked,
                self._usage(),
                send_time(self.space, self.now, self.tz),
                self.history.load_at(self.now),
            )
        return self._moment

    def _seen(self) -> _Moment:
        """The moment with what the decide path shows the policy (observation, mask, reasons) filled in."""
        m = self.moment
        if m.X is None:
            d = self.deployment
            m.X = np.ascontiguousarray(self.layout.build(m.columns, self.history, self.now, self.tz))
            m.mask, m.reasons = d.eligibility(
                m.rows,
                self.recent,
                now=self.now,
                tz_offset=self.tz,
                allowed=m.allowed,
                reasons=True,
                columns=m.columns,
                usage=m.usage,
            )
        if m.offer_score is None:
            m.offer_score, m.channel_score = self.model.customer_scores(m.X)
        return m

    # ------------------------------------------------------------------ views
    def observe(self) -> np.ndarray:
        """(N, d) float32: what a policy sees (:meth:`nba.features.AttributeFeatures.build`)."""
        return self._seen().X

    def action_mask(self) -> np.ndarray:
        """(N, A) bool: what the deployment allows now (:meth:`nba.deployment.Deployment.eligibility`)."""
        return self._seen().mask

    def reasons(self) -> np.ndarray:
        """(N, A) uint8 :class:`nba.eligibility.Reason` bits, 0 exactly where eligible."""
        return self._seen().reasons

    def decide(self, policy: Policy, rng: np.random.Generator) -> Decided:
        """The policy's decisions through :func:`nba.decide.decide`, with what the caller sends (attributes,
        time zones, allowed channels), the history and recent contacts, and the usage so far."""
        m = self.moment
        out = decide(
            self.deployment,
            policy,
            m.rows,
            now=self.now,
            tz_offset=self.tz,
            rng=rng,
            history=self.history,
            recent=self.recent,
            allowed=m.allowed,
            usage=m.usage,
        )
        if m.X is None:  # the same functions on the same inputs: keep what the policy saw
            m.X, m.mask, m.reasons = out.context, out.eligible, out.reasons
        return out

    def _response(self, actions: np.ndarray, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Probabilities and times of the funnel for ``actions`` (R, K) of customers ``rows`` (R,)."""
        m, mod, sp = self._seen(), self.model, self.space
        rows = np.arange(self.n) if rows is None else rows
        r = rows[:, None]
        contact = actions != NO_CONTACT
        c = np.maximum(sp.channel_of[actions], 0)
        o = np.maximum(sp.content_of[actions], 0)
        s = np.maximum(sp.slot_of[actions], 0)
        send_at = np.where(contact, m.send[r, s], self.now[r])
        load = m.load[rows]
        z = (
            mod.offer_logit[o]
            + m.offer_score[r, o]
            + m.channel_score[r, c]
            + mod.effect[c]
            + mod.slot_effect[s]
            - self.world.response.fatigue * load.sum(axis=1, keepdims=True)
        )
        return {
            "contact": contact,
            "channel": c,
            "offer": o,
            "send_at": send_at,
            "deliver": np.where(contact, mod.delivery[c], 0.0),
            "open": mod.open_probability(c, hour_of_day(send_at + self.tz[r])),
            "convert": 1.0 / (1.0 + np.exp(-z)),
            "opt_out": np.minimum(mod.opt_out[c] + mod.opt_out_per[c] * np.take_along_axis(load, c, axis=1), 1.0),
        }

    def _expected(self, p: dict[str, np.ndarray]) -> np.ndarray:
        mod, rule = self.model, self.model.rule
        c = p["channel"]
        gain = p["convert"] * mod.offer_value[p["offer"]] * mod.f_convert[c] if mod.counts_conversion else 0.0
        loss = (1.0 - p["convert"]) * p["opt_out"] * rule.opt_out_value * mod.f_open[c]
        e = p["deliver"] * p["open"] * (gain + loss)
        if rule.subtract_cost:
            e = e - mod.cost[c]
        return np.where(p["contact"], e, 0.0)

    def expected_rewards(self, actions: np.ndarray | None = None) -> np.ndarray:
        """Exact expected reward (the deployment's rule) of ``actions`` now: (N,) for (N,) actions, (N, K) for
        (N, K), and (N, n_actions) for every action by default (ineligible ones included)."""
        if actions is None:
            every = np.arange(self.space.n_actions)
            return np.concatenate(
                [
                    self._expected(
                        self._response(
                            np.broadcast_to(every, (min(CHUNK, self.n - i), every.size)),
                            np.arange(i, min(i + CHUNK, self.n)),
                        )
                    )
                    for i in range(0, self.n, CHUNK)
                ]
            )
        a = self.space.check(np.asarray(actions), "actions")
        if a.shape[0] != self.n or a.ndim not in (1, 2):
            raise ValueError(f"actions: expected shape ({self.n},) or ({self.n}, K), got {a.shape}")
        out = self._expected(self._response(a.reshape(self.n, -1)))
        return out.reshape(a.shape)

    def policy_value(self, probabilities: np.ndarray) -> float:
        """The exact expected reward per customer now of a policy whose action distribution is
        ``probabilities`` (N, n_actions) (e.g. :attr:`nba.decide.Decided.probabilities`)."""
        p = np.asarray(probabilities, np.float64)
        if p.shape != (self.n, self.space.n_actions):
            raise ValueError(f"probabilities: expected shape {(self.n, self.space.n_actions)}, got {p.shape}")
        every = np.arange(self.space.n_actions)
        total = 0.0
        for i in range(0, self.n, CHUNK):
            rows = np.arange(i, min(i + CHUNK, self.n))
            e = self._expected(self._response(np.broadcast_to(every, (rows.size, every.size)), rows))
            total += float((p[rows] * e).sum())
        return total / self.n

    # ------------------------------------------------------------------ a step
    def step(self, actions: np.ndarray) -> WorldStep:
        """Send ``actions`` (N,) now (each must be eligible: ValueError naming the row otherwise), realise what
        follows, and move every customer on to their next decision; the history gets each contact, sight
        and purchase once it has happened, in time order, and an opt-out turns the channel off then."""
        sp, mod, d = self.space, self.model, self.deployment
        a = sp.check(np.asarray(actions), "actions")
        if a.shape != (self.n,):
            raise ValueError(f"actions: expected shape ({self.n},), got {a.shape}")
        m = self._seen()
        bad = ~m.mask[np.arange(self.n), a]
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            why = ", ".join(x.name.lower() for x in Reason if m.reasons[i, a[i]] & x)
            raise ValueError(f"actions: row {i}: {sp.names()[a[i]]} is not eligible ({why})")
        p = {k: v[:, 0] for k, v in self._response(a[:, None]).items()}
        expected = self._expected(p)
        u = self.streams.uniform(STEP_WIDTH)
        contact, c, send_at = p["contact"], p["channel"], p["send_at"]
        rv = self.world.response
        delivered = contact & (u[:, 1] < p["deliver"])
        opened = delivered & (u[:, 2] < p["open"])
        converted = opened & (u[:, 4] < p["convert"])
        opted = opened & ~converted & (u[:, 7] < p["opt_out"])
        t_deliv = send_at + mod.delay[c]
        t_open = t_deliv - mod.open_delay[c] * np.log(u[:, 3])
        t_conv = t_open - rv.conversion_delay_h * np.log(u[:, 5])
        sigma = rv.value_sigma
        value = np.where(converted, mod.offer_value[p["offer"]] * np.exp(sigma * normal(u[:, 6]) - 0.5 * sigma**2), 0.0)
        rule = mod.rule
        end = send_at + rule.window_h
        reward = np.where(converted & (t_conv <= end), value, 0.0) if mod.counts_conversion else np.zeros(self.n)
        reward = reward + np.where(opted & (t_open <= end), rule.opt_out_value, 0.0)
        cost = np.where(contact, mod.cost[c], 0.0)
        if rule.subtract_cost:
            reward = reward - cost
        nan = np.full(self.n, np.nan)
        out = WorldStep(
            a,
            self.now.copy(),
            send_at,
            cost,
            reward,
            expected,
            delivered,
            opened,
            converted,
            opted,
            value,
            np.where(delivered, t_deliv, nan),
            np.where(opened, t_open, nan),
            np.where(converted, t_conv, nan),
        )
        # what happens later: the sends, sights, purchases and opt-outs, queued until they happen
        rows = np.flatnonzero(contact)
        self.recent.record(rows, c[rows], send_at[rows], sp.content_of[a[rows]])
        self._pending.add("contact", row=rows, send_at=send_at[rows], decided=self.now[rows], channel=c[rows])
        seen = np.flatnonzero(opened)
        self._pending.add("seen", row=seen, time=t_open[seen], channel=c[seen], send_at=send_at[seen])
        bought = np.flatnonzero(converted)
        self._pending.add("bought", row=bought, time=t_conv[bought])
        gone = np.flatnonzero(opted)
        self._pending.add("out", row=gone, time=t_open[gone], channel=c[gone])
        if self._counted:
            self._sent_action = np.concatenate([self._sent_action, a[rows]])
            self._sent_at = np.concatenate([self._sent_at, send_at[rows]])
        # the next decision
        self.steps += 1
        self.now = _decision_time(self.world, self.steps, u[:, 0], self.tz)
        for a_, law in zip(d.attributes, self.world.attributes, strict=True):
            if a_.type == "number" and law.drift_per_day:
                x = self.values[a_.name] + law.drift_per_day * self.world.every_days
                self.values[a_.name] = np.clip(
                    x, -np.inf if a_.min is None else a_.min, np.inf if a_.max is None else a_.max
                )
        self._happen()
        self._moment = None
        return out

    def _happen(self) -> None:
        """Apply what has happened by each customer's now: in the history's order (sends by send time,
        then decision time; sights by time), as :func:`nba.decide.history_from_log` rebuilds it."""
        h, tz = self.history, self.tz
        sent = self._pending.due("contact", self.now)
        if sent:
            order = np.lexsort((sent["decided"], sent["send_at"]))
            r, ch, t = sent["row"][order], sent["channel"][order], sent["send_at"][order]
            for sel in _rounds(r):
                h.record_contacts(r[sel], ch[sel], t[sel], hour_of_day(t[sel] + tz[r[sel]]))
        seen = self._pending.due("seen", self.now)
        if seen:
            order = np.argsort(seen["time"], kind="stable")
            r, ch, t, s = (seen[k][order] for k in ("row", "channel", "time", "send_at"))
            for sel in _rounds(r):
                h.record_engagements(r[sel], ch[sel], t[sel], hour_of_day(s[sel] + tz[r[sel]]))
        bought = self._pending.due("bought", self.now)
        if bought:
            np.add.at(h.n_purchases, bought["row"], np.float32(1.0))
            np.maximum.at(h.last_purchase, bought["row"], bought["time"])
        out = self._pending.due("out", self.now)
        if out:
            for j, key in enumerate(self._consent):
                r = out["row"][out["channel"] == j]
                if key is None:
                    self.blocked[r, j] = True
                else:
                    self.values[key][r] = np.where(self.values[key][r] >= 0, 0, self.values[key][r])


# ----------------------------------------------------------------------------- decision logs
def prepare_log(log: Any, deployment: Deployment) -> None:
    """Give ``log`` (:class:`nba.log.DecisionLog`) the deployment's layout and canonical document, as
    :func:`nba.log.importer.import_onto` does; ValueError naming ``deployment`` when it holds another."""
    from nba.log import LogLayout
    from nba.serialization import space_to_dict

    held = log.deployment()
    if held is not None and Deployment.from_dict(held).digest != deployment.digest:
        raise ValueError(
            f"deployment: this log holds another deployment ({held.get('deployment', {}).get('name')!r}),"
            f" not {deployment.name!r}"
        )
    space, features = deployment.action_space(), deployment.features()
    log.set_deployment(deployment.to_dict())
    log.set_layout(LogLayout(features.dim, space.n_actions, features.names, space_to_dict(space)))


def customer_ids(seed: int, purpose: str, n: int, first_row: int = 0) -> np.ndarray:
    """(n,) object str: the customers of rows ``first_row ..`` of ``(seed, purpose)``."""
    return np.array([f"{purpose}-{seed}-{i}" for i in range(first_row, first_row + n)], dtype=object)


def step_records(
    deployment: Deployment,
    decided: Decided,
    result: WorldStep,
    *,
    customers: np.ndarray,
    decision_ids: np.ndarray,
    policy: str,
    version: str = "0",
    experiment: str = "",
    arm: str = "",
) -> tuple[DecisionRecords, OutcomeRecords]:
    """One step's decisions and what followed them, as the decision log stores them. ``policy_version``
    is ``"<version>@<digest>"`` (the deployment's digest: what training checks a log's decisions by).
    Events: ``delivered``, ``opened`` (seen), ``clicked`` and ``converted`` (with its value) at the
    conversion, ``opted_out`` at the sight."""
    n = len(result.action)
    decisions = DecisionRecords(
        decision_id=decision_ids,
        time=result.now,
        customer_id=customers,
        context=decided.context,
        eligible=decided.eligible,
        action=result.action,
        send_at=result.send_at,
        propensity=decided.propensity,
        policy=np.full(n, policy, dtype=object),
        policy_version=np.full(n, f"{version}@{deployment.digest}", dtype=object),
        experiment=np.full(n, experiment, dtype=object),
        arm=np.full(n, arm, dtype=object),
        cost=result.cost,
    )
    parts = [
        ("delivered", result.delivered, result.t_delivered, None),
        ("opened", result.opened, result.t_opened, None),
        ("clicked", result.converted, result.t_converted, None),
        ("converted", result.converted, result.t_converted, result.value),
        ("opted_out", result.opted_out, result.t_opened, None),
    ]
    ids, events, times, values = [], [], [], []
    for name, happened, t, v in parts:
        k = np.flatnonzero(happened)
        ids.append(decision_ids[k])
        events.append(np.full(k.size, name, dtype=object))
        times.append(t[k])
        values.append(np.zeros(k.size) if v is None else v[k])
    outcomes = OutcomeRecords(
        np.concatenate(ids), np.concatenate(events), np.concatenate(times), np.concatenate(values)
    )
    return decisions, outcomes


@dataclass(frozen=True)
class LogRun:
    """What :func:`simulate_log` wrote."""

    decisions: int
    outcomes: int
    mean_reward: float  # realised
    mean_expected: float  # exact expected reward of the actions taken


def simulate_log(
    log: Any,
    deployment: Deployment,
    world: LatentWorld,
    policy: Policy,
    *,
    n: int,
    decisions: int,
    seed: int = 0,
    purpose: str = "log",
    rng: np.random.Generator | None = None,
    learn: bool = False,
    version: str = "0",
    experiment: str = "",
    arm: str = "",
    progress: Callable[[int], None] | None = None,
) -> LogRun:
    """Run ``policy`` for ``decisions`` decisions of each of ``n`` customers of ``(seed, purpose)`` and write
    every decision and its outcomes to ``log`` (:class:`nba.log.DecisionLog`), which gets the deployment
    (:func:`prepare_log`): ``nba train --source <url>`` trains on it. ``learn``: the policy updates on each
    step's realised rewards (online learning). ``rng``: the policy's draws (default:
    :func:`envs.rollout.policy_rng` of ``(seed, purpose)``, apart from the customers' streams); ``progress``
    is called after each decision round with its index."""
    from envs.rollout import policy_rng

    prepare_log(log, deployment)
    sim = WorldSimulation(deployment, world, seed=seed, n=n, purpose=purpose)
    rng = policy_rng(seed, purpose) if rng is None else rng
    ids = customer_ids(seed, purpose, n)
    written = [0, 0]
    rewards = expected = 0.0
    for k in range(decisions):
        out = sim.decide(policy, rng)
        res = sim.step(out.action)
        dec, outc = step_records(
            deployment,
            out,
            res,
            customers=ids,
            decision_ids=np.array([f"{c}/{k}" for c in ids.tolist()], dtype=object),
            policy=policy.name,
            version=version,
            experiment=experiment,
            arm=arm,
        )
        new_d, new_o = log.log(dec, outc)
        written[0] += new_d
        written[1] += new_o
        rewards += float(res.reward.sum())
        expected += float(res.expected.sum())
        if learn:
            policy.update(out.context, out.action, res.reward, out.propensity)
        if progress is not None:
            progress(k)
    total = max(n * decisions, 1)
    return LogRun(written[0], written[1], rewards / total, expected / total)
