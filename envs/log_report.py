"""How far is the simulator from your world? A decision log's own figures beside a scenario's.

The calibration report (:mod:`envs.calibration`) holds the default scenario against figures
published in the articles this project grew from. This module holds a scenario against a brand's
*own* decision log: :func:`log_figures` measures a :class:`nba.log.DecisionLog`, and
:func:`scenario_figures` measures the same figures on a log the scenario writes under its
business-as-usual schedule (:class:`nba.policies.baselines.BusinessAsUsual`), through the same code.
:func:`compare` sets them side by side and :func:`render` prints the table
(``nba scenario report --log URL``).

The figures (:class:`LogFigures`):

* per channel: contacts sent, their share of all sends, and the funnel: delivered / sent, opened /
  delivered, clicked / opened, converted / clicked, opt-outs per send. Each event implies the ones
  before it (an open implies a delivery, a click an open: opens go unseen where a mail client blocks
  tracking, deliveries where a channel reports none), and a conversion counts in the funnel only
  after a click on the message, as in :meth:`nba.log.DecisionLog.funnel_events`;
* opens per send by hour of the send (0-23), every channel together: in the customer's local time
  when the context carries the ``tz_offset`` feature of :mod:`nba.features` (``tz_offset / 12``),
  else in UTC (the log holds no time zone of its own) — :attr:`LogFigures.hour_basis` says which;
* contacts a customer received up to their first conversion (organic ones count: a ``converted``
  event of a no-contact decision), over the customers who converted: a histogram, median and 90th
  percentile;
* revenue concentration over every customer in the log: the share of revenue from the top 10 %,
  and the Gini coefficient;
* the contact rate (share of decisions that contact), the no-contact share, and contacts per
  customer-week (a customer is counted from their first decision to their last, plus a day).

What a log cannot show, it cannot show: a customer's contacts before the log began are not in it
(contacts before a conversion are counted from the log's start, for the log and the scenario
alike), the outcomes of the last days may not have arrived yet, and a log that records only the
decisions that contacted has a contact rate of 1. Every outcome event of a decision counts,
whenever it arrived (the simulator's delays are unbounded too).

:func:`compare` calls a figure "close" within 25 % (relative) of the scenario's, "higher" or "lower"
beyond, "noisy" when beyond but within 2.58 standard errors of the difference (the rates carry
standard errors by customer, :class:`LogFigures`), and "no data" when a side has none or fewer
than 20 sends (or customers) behind it.

Reading is columnar and streamed: decisions are paged by their insertion order as
:meth:`nba.log.DecisionLog.iter_batches` does, with their outcome events joined per page, and
every figure is a NumPy reduction (``bincount``, ``minimum.at``, one ``unique`` over the customer
ids); no Python loop runs per decision. A SQLite log of 1M decisions (20,000 customers over 52
days) reads in about 14 s, most of it in the database driver.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from envs.log_writer import CustomerIds, PreStep, scenario_layout, step_records
from envs.rollout import policy_rng
from envs.scenario import Scenario
from envs.simulation import Simulation
from nba.log import DecisionLog
from nba.policies import Policy
from nba.policies.baselines import BusinessAsUsual
from nba.serialization import space_from_dict

PURPOSE = "log-report/scenario"  # the customers a report simulates by default (envs.random)
CUSTOMERS = 2_000  # simulated customers of a report
DAYS = 28  # days the report's simulation logs
WARMUP_DAYS = 28  # days simulated before it logs: contact histories fill as in a running business
TOLERANCE = 0.25  # "close": within 25 % of the scenario's value
MIN_COUNT = 20  # fewer sends (or customers) than this behind a figure: "no data"
TOP_SHARE = 0.10  # the top customers of the revenue concentration figure
CHUNK_ROWS = 100_000
_EVENTS = ("delivered", "opened", "clicked", "converted", "opted_out")
# the per-channel figures: (name, numerator, denominator); "all" is every channel's sends
FUNNEL = (
    ("send share", "sent", "all"),
    ("delivered / sent", "delivered", "sent"),
    ("opened / delivered", "opened", "delivered"),
    ("clicked / opened", "clicked", "opened"),
    ("converted / clicked", "converted", "clicked"),
    ("opt-outs / send", "opted_out", "sent"),
)


@dataclass(frozen=True)
class Figure:
    """One figure's value and, for a rate, its standard error (nan when unknown)."""

    value: float
    se: float = math.nan


NO_DATA = Figure(math.nan)


@dataclass(frozen=True)
class LogFigures:
    """What a decision log shows of its customers (see the module docstring). Counts are per channel
    ``(C,)`` or per hour of the send ``(24,)``.

    Standard errors of the rates are by customer (a ratio estimator over customers' totals, the
    linearised variance ``sum_i (y_i - R x_i)^2 / (sum_i x_i)^2``): one customer's sends are not
    independent draws (a customer who opens opens often), and treating them as such would call
    sampling noise a difference.
    """

    channels: tuple[str, ...]
    decisions: int
    customers: int
    customer_days: float  # each customer's first to last decision, plus a day, summed
    first_time: float  # hours since the epoch of the first decision (nan without decisions)
    last_time: float  # and of the last
    sent: np.ndarray  # (C,) contacts sent
    delivered: np.ndarray  # (C,) delivered (or opened)
    opened: np.ndarray  # (C,) opened (or clicked)
    clicked: np.ndarray  # (C,)
    converted: np.ndarray  # (C,) converted after a click
    opted_out: np.ndarray  # (C,)
    sent_by_hour: np.ndarray  # (24,) contacts sent in each hour of the day
    opened_by_hour: np.ndarray  # (24,) of which opened
    hour_basis: str  # "local" (from the tz_offset feature) or "UTC"
    contacts_to_convert: np.ndarray  # (K,) customers whose first conversion came after k contacts
    revenue: float  # total conversion value
    revenue_top_share: float  # share of revenue from the top TOP_SHARE of customers (nan without revenue)
    revenue_gini: float  # Gini coefficient of revenue per customer (nan without revenue)
    funnel_se: np.ndarray  # (len(FUNNEL), C) standard errors of the per-channel rates
    hour_se: np.ndarray  # (24,) of the opens per send by hour
    contact_se: float  # of the contact rate (and the no-contact share)
    weekly_se: float  # of the contacts per customer-week

    @classmethod
    def empty(cls, channels: tuple[str, ...] = ()) -> LogFigures:
        """The figures of a log with no decisions."""
        c = len(channels)
        z = lambda k: np.zeros(k, np.int64)  # noqa: E731
        return cls(
            channels=tuple(channels),
            decisions=0,
            customers=0,
            customer_days=0.0,
            first_time=math.nan,
            last_time=math.nan,
            sent=z(c),
            delivered=z(c),
            opened=z(c),
            clicked=z(c),
            converted=z(c),
            opted_out=z(c),
            sent_by_hour=z(24),
            opened_by_hour=z(24),
            hour_basis="UTC",
            contacts_to_convert=z(0),
            revenue=0.0,
            revenue_top_share=math.nan,
            revenue_gini=math.nan,
            funnel_se=np.full((len(FUNNEL), c), math.nan),
            hour_se=np.full(24, math.nan),
            contact_se=math.nan,
            weekly_se=math.nan,
        )

    @property
    def span_days(self) -> int:
        """Calendar days the decisions span (whole days from the first to the last, plus one); 0 without
        decisions: what a scenario's run should log to be compared with this log."""
        return 0 if self.decisions == 0 else math.floor((self.last_time - self.first_time) / 24.0) + 1

    @property
    def converters(self) -> int:
        """Customers with at least one conversion."""
        return int(self.contacts_to_convert.sum())

    def contacts_quantile(self, q: float) -> float:
        """Contacts up to the first conversion at quantile ``q`` of the converting customers (nearest
        rank); nan when nobody converted."""
        n = self.converters
        if n == 0:
            return math.nan
        rank = max(1, math.ceil(q * n))
        return float(np.searchsorted(np.cumsum(self.contacts_to_convert), rank))

    def values(self, min_count: int = MIN_COUNT) -> dict[tuple[str, str], Figure]:
        """``(figure, channel or "") -> Figure``, in report order; nan where fewer than ``min_count``
        sends (or customers) stand behind a figure. Channels without sends and hours with fewer than
        ``min_count`` sends are left out (:func:`compare` counts a side's missing ones as no data)."""

        def rate(num: float, den: float, se: float) -> Figure:
            return Figure(float(num / den), float(se)) if den >= max(min_count, 1) else NO_DATA

        def plain(value: float, enough: bool, se: float = math.nan) -> Figure:
            return Figure(float(value), float(se)) if enough else NO_DATA

        total = int(self.sent.sum())
        out: dict[tuple[str, str], Figure] = {
            ("contact rate", ""): rate(total, self.decisions, self.contact_se),
            ("no-contact share", ""): rate(self.decisions - total, self.decisions, self.contact_se),
            ("contacts / customer-week", ""): plain(
                7.0 * total / max(self.customer_days, 1e-9), self.customers >= min_count, self.weekly_se
            ),
        }
        counts = {
            "all": np.full(len(self.channels), total),
            "sent": self.sent,
            "delivered": self.delivered,
            "opened": self.opened,
            "clicked": self.clicked,
            "converted": self.converted,
            "opted_out": self.opted_out,
        }
        for c, channel in enumerate(self.channels):
            if self.sent[c] == 0:
                continue
            for k, (name, num, den) in enumerate(FUNNEL):
                out[(name, channel)] = rate(counts[num][c], counts[den][c], self.funnel_se[k, c])
        for h in np.flatnonzero(self.sent_by_hour >= max(min_count, 1)).tolist():
            out[(f"opens / send at {h:02d}h {self.hour_basis}", "")] = rate(
                self.opened_by_hour[h], self.sent_by_hour[h], self.hour_se[h]
            )
        enough = self.converters >= min_count
        out[("contacts to 1st conversion, median", "")] = plain(self.contacts_quantile(0.5), enough)
        out[("contacts to 1st conversion, p90", "")] = plain(self.contacts_quantile(0.9), enough)
        many = self.customers >= min_count
        out[(f"revenue share of top {TOP_SHARE:.0%}", "")] = plain(self.revenue_top_share, many)
        out[("revenue Gini", "")] = plain(self.revenue_gini, many)
        return out


# ----------------------------------------------------------------------------- reading a log
@dataclass(frozen=True)
class _Chunk:
    """One page of decisions with their outcome events folded in (arrays of the page's length)."""

    customer_id: np.ndarray  # object str
    time: np.ndarray
    action: np.ndarray
    send_at: np.ndarray
    tz_offset: np.ndarray | None  # hours, from the context's tz_offset feature
    happened: dict[str, np.ndarray]  # event -> bool
    value: np.ndarray  # conversion value
    first_conversion: np.ndarray  # time of the decision's conversion, inf without one


def _chunks(
    log: DecisionLog,
    since: float | None,
    until: float | None,
    tz_feature: int | None,
    context_dim: int,
    chunk_rows: int,
):
    """Pages of ``chunk_rows`` decisions with decision time in ``[since, until)``, in insertion order.

    Keyset pagination on ``seq`` as :meth:`DecisionLog.iter_batches`, reading only the columns the
    figures need (no eligibility mask; the context only for its time-zone feature) and every
    outcome event of the page's decisions.
    """
    d, o = log.decisions.c, log.outcomes.c
    filters = []
    if since is not None:
        filters.append(d.time >= float(since))
    if until is not None:
        filters.append(d.time < float(until))
    cols = [d.seq, d.customer_id, d.time, d.action, d.send_at] + ([d.context] if tz_feature is not None else [])
    last = -1
    while True:
        with log.engine.connect() as conn:
            rows = conn.execute(sa.select(*cols).where(d.seq > last, *filters).order_by(d.seq).limit(chunk_rows)).all()
            if not rows:
                return
            seq = np.fromiter((r[0] for r in rows), np.int64, len(rows))
            hits = conn.execute(
                sa.select(d.seq, o.event, o.time, o.value)
                .select_from(log.outcomes.join(log.decisions, d.decision_id == o.decision_id))
                .where(d.seq > last, d.seq <= int(seq[-1]), o.event.in_(_EVENTS), *filters)
            ).all()
        n = len(rows)
        c = list(zip(*rows, strict=True))
        tz = None
        if tz_feature is not None:
            ctx = np.frombuffer(b"".join(c[5]), "<f4").reshape(n, context_dim)
            tz = 12.0 * ctx[:, tz_feature].astype(np.float64)  # nba.features stores tz_offset / 12
        happened = {e: np.zeros(n, bool) for e in _EVENTS}
        value = np.zeros(n)
        first = np.full(n, np.inf)
        if hits:
            h = list(zip(*hits, strict=True))
            row = np.searchsorted(seq, np.array(h[0], np.int64))
            event = np.array(h[1], dtype=object)
            for e in _EVENTS:
                happened[e][row[event == e]] = True
            conv = event == "converted"
            value = np.bincount(row[conv], weights=np.array(h[3], np.float64)[conv], minlength=n)
            np.minimum.at(first, row[conv], np.array(h[2], np.float64)[conv])
        yield _Chunk(
            customer_id=np.array(c[1], dtype=object),
            time=np.array(c[2], np.float64),
            action=np.array(c[3], np.int64),
            send_at=np.array(c[4], np.float64),
            tz_offset=tz,
            happened=happened,
            value=value,
            first_conversion=first,
        )
        last = int(seq[-1])
        if n < chunk_rows:
            return


def _send_hour(send_at: np.ndarray, tz_offset: np.ndarray | None) -> np.ndarray:
    """Hour of the day (0-23) of each send, local when the time zone is known; rounded to the minute
    first, so a send at 08:00 stored as 7.99999 hours is in hour 8."""
    t = send_at if tz_offset is None else send_at + tz_offset
    minutes = np.rint(t * 60.0).astype(np.int64)
    return (minutes // 60) % 24


def _concentration(revenue: np.ndarray, top: float = TOP_SHARE) -> tuple[float, float]:
    """(share of the total from the top ``top`` of the values, Gini coefficient); nan without revenue."""
    n, total = revenue.size, float(revenue.sum())
    if n == 0 or total <= 0:
        return math.nan, math.nan
    x = np.sort(revenue)
    k = max(1, math.ceil(top * n))
    share = float(x[-k:].sum() / total)
    gini = float(2.0 * np.dot(np.arange(1, n + 1), x) / (n * total) - (n + 1) / n)
    return share, gini


def open_log(url: str) -> DecisionLog:
    """The decision log at ``url``, to read: FileNotFoundError for a SQLite file that does not exist
    (opening a :class:`DecisionLog` creates its tables, and a mistyped path would report on an empty
    new log)."""
    u = sa.make_url(url)
    if u.get_backend_name() == "sqlite" and u.database not in (None, "", ":memory:") and not Path(u.database).exists():
        raise FileNotFoundError(f"log: no SQLite database at {u.database!r}")
    return DecisionLog(url)


def _ratio_se(y: np.ndarray, x: np.ndarray) -> float:
    """Standard error of ``sum(y) / sum(x)`` over customers (their totals ``y``, ``x``; ``y <= x``):
    the linearised variance of a ratio estimator, with the small-sample factor ``n / (n - 1)`` over
    the ``n`` customers with ``x > 0``; nan with fewer than two."""
    total = float(x.sum())
    n = int(np.count_nonzero(x))
    if n < 2 or total <= 0:
        return math.nan
    r = y - (float(y.sum()) / total) * x
    return math.sqrt(float(np.dot(r, r)) * n / (n - 1)) / total


def log_figures(
    log: DecisionLog, *, since: float | None = None, until: float | None = None, chunk_rows: int = CHUNK_ROWS
) -> LogFigures:
    """The figures of the decisions of ``log`` made in ``[since, until)`` (hours since the epoch, UTC).

    Channels come from the log's action space (its layout's ``action_space``); a log without one
    counts every contact under one channel, ``"contact"``. A log with no decisions gives
    :meth:`LogFigures.empty`.
    """
    layout = log.layout()
    if layout is None:
        return LogFigures.empty()
    if layout.action_space is not None:
        space = space_from_dict(layout.action_space)
        channels, channel_of = tuple(space.channels), np.asarray(space.channel_of, np.int64)
    else:
        channels = ("contact",)
        channel_of = np.where(np.arange(layout.n_actions) > 0, 0, -1)
    names = layout.feature_names or ()
    tz_feature = names.index("tz_offset") if "tz_offset" in names else None
    keep = ("customer", "time", "channel", "hour", "send_at", "value", "first", *_EVENTS)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in keep}
    for ch in _chunks(log, since, until, tz_feature, layout.context_dim, chunk_rows):
        chan = channel_of[ch.action]
        ev = ch.happened
        clicked = ev["clicked"] & (chan >= 0)
        opened = (ev["opened"] & (chan >= 0)) | clicked  # each event implies the ones before it
        page = {
            "customer": ch.customer_id,
            "time": ch.time,
            "channel": chan,
            "send_at": ch.send_at,
            "hour": np.where(chan >= 0, _send_hour(ch.send_at, ch.tz_offset), -1),
            "value": ch.value,
            "first": ch.first_conversion,
            "clicked": clicked,
            "opened": opened,
            "delivered": (ev["delivered"] & (chan >= 0)) | opened,
            "converted": ev["converted"] & clicked,
            "opted_out": ev["opted_out"] & (chan >= 0),
        }
        for k in keep:
            parts[k].append(page[k])
    if not parts["time"]:
        return LogFigures.empty(channels)
    d = {k: np.concatenate(v) for k, v in parts.items()}
    ids, code = np.unique(d["customer"], return_inverse=True)
    m, c = ids.size, len(channels)
    contact = d["channel"] >= 0

    def per_customer(rows: np.ndarray) -> np.ndarray:
        return np.bincount(code[rows], minlength=m).astype(np.float64)

    # counts and customer totals: per channel, per hour
    sent_all = per_customer(contact)
    stages = {"all": sent_all}
    counts = {k: np.zeros(c, np.int64) for k in ("sent", *_EVENTS)}
    funnel_se = np.full((len(FUNNEL), c), math.nan)
    for j in range(c):
        on = d["channel"] == j
        stages["sent"] = per_customer(on)
        for e in _EVENTS:
            stages[e] = per_customer(on & d[e])
        for k in counts:
            counts[k][j] = int(stages[k].sum())
        for k, (_, num, den) in enumerate(FUNNEL):
            funnel_se[k, j] = _ratio_se(stages[num], stages[den])
    hour = d["hour"]
    sent_h = np.bincount(hour[contact], minlength=24)
    opened_h = np.bincount(hour[d["opened"]], minlength=24)
    hour_se = np.full(24, math.nan)
    for h in np.flatnonzero(sent_h).tolist():
        at = hour == h
        hour_se[h] = _ratio_se(per_customer(at & d["opened"]), per_customer(at))
    # exposure, contacts up to the first conversion, revenue
    first_seen, last_seen = np.full(m, np.inf), np.full(m, -np.inf)
    np.minimum.at(first_seen, code, d["time"])
    np.maximum.at(last_seen, code, d["time"])
    days = (last_seen - first_seen) / 24.0 + 1.0
    first_conv = np.full(m, np.inf)
    np.minimum.at(first_conv, code, d["first"])
    before = per_customer(contact & (d["send_at"] <= first_conv[code])).astype(np.int64)
    converters = np.isfinite(first_conv)
    revenue = np.bincount(code, weights=d["value"], minlength=m)
    share, gini = _concentration(revenue)
    return LogFigures(
        channels=channels,
        decisions=int(code.size),
        customers=int(m),
        customer_days=float(days.sum()),
        first_time=float(d["time"].min()),
        last_time=float(d["time"].max()),
        sent=counts["sent"],
        delivered=counts["delivered"],
        opened=counts["opened"],
        clicked=counts["clicked"],
        converted=counts["converted"],
        opted_out=counts["opted_out"],
        sent_by_hour=sent_h,
        opened_by_hour=opened_h,
        hour_basis="UTC" if tz_feature is None else "local",
        contacts_to_convert=np.bincount(before[converters]) if converters.any() else np.zeros(0, np.int64),
        revenue=float(revenue.sum()),
        revenue_top_share=share,
        revenue_gini=gini,
        funnel_se=funnel_se,
        hour_se=hour_se,
        contact_se=_ratio_se(sent_all, per_customer(np.ones_like(contact))),
        weekly_se=7.0 * _ratio_se(sent_all, days),
    )


# ----------------------------------------------------------------------------- the scenario's side
def simulate_log(
    log: DecisionLog,
    scenario: Scenario,
    *,
    customers: int,
    days: int,
    seed: int,
    purpose: str,
    warmup_days: int = WARMUP_DAYS,
    policy: Policy | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write ``days`` days of ``customers`` journeys of ``(seed, purpose)`` under ``policy`` (default:
    business as usual) into ``log``, after ``warmup_days`` simulated but not logged; returns the
    decisions written.

    One decision a day per customer still present, at the scenario's journey decision hour
    (:func:`envs.rollout.journeys`); churned customers stop. Decision ids are
    ``"{purpose}/s{seed}:{day}:{row}"``, customer ids ``"{purpose}/s{seed}-{row}.0"``.
    """
    for name, v, low in (("customers", customers, 1), ("days", days, 1), ("warmup_days", warmup_days, 0)):
        if not isinstance(v, int | np.integer) or isinstance(v, bool) or v < low:
            raise ValueError(f"{name}: expected an integer >= {low}, got {v!r}")
    sim = Simulation(scenario, seed, customers, purpose=purpose, decision_hour=scenario.journey_decision_hour)
    policy = policy or BusinessAsUsual(sim.space, tuple(scenario.segments))
    log.set_layout(scenario_layout(scenario))
    ids = CustomerIds.start(customers, prefix=f"{purpose}/s{seed}-")
    rows = np.arange(customers).astype(str).astype(object)
    rng = policy_rng(seed, purpose)
    alive = np.ones(customers, bool)
    written = 0
    for day in range(warmup_days + days):
        decided = sim.decide(policy, rng)
        before = PreStep.of(sim, ids, decided.context, decided.eligible) if day >= warmup_days else None
        d = replace(decided.decisions, actions=np.where(alive, decided.action, 0))
        res = sim.step(d.actions)
        if before is not None and alive.any():
            dec, outs = step_records(
                sim, before, d, res, decision_ids=f"{purpose}/s{seed}:{day}:" + rows, policy=policy.name, rows=alive
            )
            written += log.log(dec, outs)[0]
        alive &= ~res.churned
        if progress is not None:
            progress(day)
    return written


def scenario_figures(
    scenario: Scenario,
    *,
    customers: int = CUSTOMERS,
    days: int = DAYS,
    seed: int = 0,
    purpose: str,
    warmup_days: int = WARMUP_DAYS,
    progress: Callable[[int], None] | None = None,
) -> LogFigures:
    """The figures of the log ``scenario`` writes under business as usual (:func:`simulate_log` into a
    temporary SQLite log, read back by :func:`log_figures`)."""
    with tempfile.TemporaryDirectory(prefix="nba-log-report-") as tmp:
        with DecisionLog(f"sqlite:///{Path(tmp) / 'scenario.db'}") as log:
            simulate_log(
                log,
                scenario,
                customers=customers,
                days=days,
                seed=seed,
                purpose=purpose,
                warmup_days=warmup_days,
                progress=progress,
            )
            return log_figures(log)


# ----------------------------------------------------------------------------- comparing
@dataclass(frozen=True)
class Row:
    """One figure of the log beside the scenario's."""

    figure: str
    channel: str  # "" for figures over every channel
    log: float  # nan: no data
    scenario: float
    ratio: float  # log / scenario (inf when only the log is above 0; nan when either is missing or both 0)
    verdict: str  # see VERDICTS


VERDICTS = ("close", "higher", "lower", "noisy", "no data")
Z_NOISE = 2.58  # a difference under this many standard errors (two-sided 1 %) is sampling noise


def verdict(log: Figure, scenario: Figure, tolerance: float = TOLERANCE) -> str:
    """How the log's figure stands against the scenario's.

    ``"close"``: within ``tolerance`` (relative) of the scenario's value; ``"higher"`` / ``"lower"``:
    further; ``"noisy"``: further, but within :data:`Z_NOISE` standard errors of the difference (a
    rate with its standard error on both sides: say an opt-out seen 3 times in 1,000 sends against
    6 times); ``"no data"``: either side has none.
    """
    x, y = log.value, scenario.value
    if math.isnan(x) or math.isnan(y):
        return "no data"
    if abs(x - y) <= tolerance * abs(y):
        return "close"
    se = math.hypot(0.0 if math.isnan(log.se) else log.se, 0.0 if math.isnan(scenario.se) else scenario.se)
    if not (math.isnan(log.se) and math.isnan(scenario.se)) and abs(x - y) < Z_NOISE * se:
        return "noisy"
    return "higher" if x > y else "lower"


def _ratio(log: float, scenario: float) -> float:
    if math.isnan(log) or math.isnan(scenario) or (log == 0 and scenario == 0):
        return math.nan
    return log / scenario if scenario != 0 else math.inf


def compare(
    log: LogFigures, scenario: LogFigures, *, tolerance: float = TOLERANCE, min_count: int = MIN_COUNT
) -> list[Row]:
    """Every figure of either side, the scenario's order first; a figure one side lacks (a channel it
    never sent on, an hour without sends) or bases on fewer than ``min_count`` sends is "no data"."""
    a, b = log.values(min_count), scenario.values(min_count)
    rows = []
    for key in [*b, *(k for k in a if k not in b)]:
        x, y = a.get(key, NO_DATA), b.get(key, NO_DATA)
        rows.append(Row(key[0], key[1], x.value, y.value, _ratio(x.value, y.value), verdict(x, y, tolerance)))
    return rows


def _fmt(x: float) -> str:
    if math.isnan(x):
        return "-"
    if math.isinf(x):
        return "inf"
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def render(rows: list[Row], title: str | None = None, width: int = 100) -> str:
    """A plain-text table of ``rows`` under ``title`` (lines of it), at most ``width`` characters wide
    (long names are cut)."""
    head = ("figure", "channel", "log", "scenario", "ratio", "verdict")
    cells = [(r.figure, r.channel, _fmt(r.log), _fmt(r.scenario), _fmt(r.ratio), r.verdict) for r in rows]
    widths = [max(len(head[j]), *(len(c[j]) for c in cells)) if cells else len(head[j]) for j in range(6)]
    fixed = sum(widths[1:]) + 2 * 5
    widths[0] = max(len(head[0]), min(widths[0], width - fixed))
    right = (False, False, True, True, True, False)

    def line(values) -> str:
        out = []
        for v, w, r in zip(values, widths, right, strict=True):
            v = v if len(v) <= w else v[: w - 1] + "~"
            out.append(v.rjust(w) if r else v.ljust(w))
        return "  ".join(out).rstrip()

    lines = [] if title is None else [t[:width] for t in title.splitlines()]
    lines += [line(head), line(["-" * w for w in widths])]
    lines += [line(c) for c in cells]
    return "\n".join(lines)


def parse_time(text: str) -> float:
    """Hours since the Unix epoch (UTC) of an ISO 8601 date or date-time (``2026-05-01``,
    ``2026-05-01T08:00``, ``2026-05-01T08:00+02:00``; without an offset, UTC) or of a number of hours;
    ValueError otherwise."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"expected an ISO 8601 date or date-time (2026-05-01T08:00) or hours since the epoch, got {text!r}"
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.timestamp() / 3600.0
