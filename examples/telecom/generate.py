"""A mobile operator's decision log, as its own systems would export it (CSV), for the telecom deployment.

    python examples/telecom/generate.py --out log.csv --customers 2000 --days 14 --seed 0

and into a decision log, onto the deployment (:func:`nba.log.importer.import_onto`)::

    d = Deployment.load("examples/telecom/deployment.toml")
    m = DeploymentMapping(customer_id="customer_id", time="time", channel="channel", offer="offer",
                          send_hour="send_hour", propensity="propensity", reward="reward", opted_out="opted_out",
                          decision_id="decision_id")
    with DecisionLog("sqlite:///telco.db") as log:
        import_onto(log, "log.csv", d, m)

**The customers** have the deployment's attributes, drawn plausibly: a plan mix (45 % prepaid, 45 %
postpaid, 10 % business), monthly revenue by plan (log-normal around 12, 35 and 60 euros), tenure,
data usage, the days to the contract's end for postpaid and business lines (none for prepaid),
a loyalty tier that comes with tenure, the app and the opt-ins, and a complaint now and then. They
live in three European time zones (offsets of Paris, London and Helsinki, with the EU's summer time
from the last Sunday of March).

**Every day** each customer gets one decision at a local hour between 08:00 and 20:59 (when they open
the app, say). The **logging policy** is epsilon-greedy over business rules: the rules score every
action the deployment allows right now (:meth:`nba.deployment.Deployment.eligibility`, with the
customer's recent contacts: consent, quiet hours, caps, minimum gap, the offers' own rules) and pick
the best, or no contact when nothing beats the rules' bar; with probability ``EPSILON`` the choice is
uniform over the eligible actions instead. So the propensity of the logged action is known exactly:
``(1 - EPSILON) [a = rule's choice] + EPSILON / |eligible|``.

**The responses** follow a hidden model: the probability of a conversion within the deployment's
window depends on the offer's category, price and discount crossed with the customer's attributes,
on the channel and send slot, and falls with the contacts of the past week; a conversion earns the
offer's margin over about three months. Opt-outs rise with the contacts on the channel; an opt-out
turns the channel's consent attribute off from the next day. Renewals reset the contract, an upgrade
to postpaid changes the plan, tenure grows and contracts run down day by day.

**Columns**: decision_id, customer_id, time (ISO 8601 with the customer's UTC offset), the
attributes named as the deployment's, channel, offer, send_hour (empty for "now"; channel and offer
empty for no contact), propensity, reward (the revenue of a conversion, empty if none) and
opted_out (0 or 1). Rows come day by day, customer by customer (not sorted by time).

Randomness: one ``np.random.default_rng([seed, PURPOSES[purpose]])`` stream per purpose (the
customers, the decision times, the policy's exploration, the responses, life events), so the
decisions of a seed do not move when the response model changes, until a response changes a customer.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time as clock
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np

from nba.actions import NO_CONTACT
from nba.deployment import Deployment
from nba.eligibility import RecentContacts, send_time

HERE = Path(__file__).resolve().parent
DEPLOYMENT = HERE / "deployment.toml"
PURPOSES = {"customers": 1, "timing": 2, "policy": 3, "response": 4, "life": 5}
START = date(2027, 3, 22)  # a Monday: the first week crosses the switch to summer time, cruise_pack opens 1 April
EPSILON = 0.1  # the logging policy's share of uniform exploration over the eligible actions
ZONES = (("paris", 1, 0.7), ("london", 0, 0.2), ("helsinki", 2, 0.1))  # (name, standard UTC offset, share)
PLANS = ("prepaid", "postpaid", "business")
COLUMNS = ("decision_id", "customer_id", "time")
TAIL = ("channel", "offer", "send_hour", "propensity", "reward", "opted_out")
MONTHS_OF_MARGIN = 3.0  # a conversion earns about three months of the offer's margin


def rng_for(seed: int, purpose: str) -> np.random.Generator:
    """The stream of one purpose (never ``seed + k``: a child keyed by the seed and the purpose's code)."""
    return np.random.default_rng([seed, PURPOSES[purpose]])


# ----------------------------------------------------------------------------- time zones
def _last_sunday(year: int, month: int) -> date:
    end = date(year, month, 31)  # March and October both have 31 days
    return end - timedelta(days=(end.weekday() - 6) % 7)


def summer_time(day: date) -> bool:
    """EU summer time on ``day`` (from the last Sunday of March to the last Sunday of October; the switch
    is at 01:00 UTC, before any decision of the day)."""
    return _last_sunday(day.year, 3) <= day < _last_sunday(day.year, 10)


# ----------------------------------------------------------------------------- customers
@dataclass
class Customers:
    """Attribute values of N customers, as the operator's systems hold them (NaN: none)."""

    zone_offset: np.ndarray  # (N,) standard UTC offset, hours
    plan: np.ndarray  # (N,) int index into PLANS
    revenue: np.ndarray  # (N,) euros a month, 2 decimals
    tenure: np.ndarray  # (N,) int days
    usage: np.ndarray  # (N,) GB a month, 1 decimal
    contract_end: np.ndarray  # (N,) float days, NaN for prepaid
    tier: np.ndarray  # (N,) str
    app: np.ndarray  # (N,) bool
    whatsapp: np.ndarray
    sms: np.ndarray
    email: np.ndarray
    complaint_min: np.ndarray  # (N,) float minutes since the epoch of the last complaint, NaN for none

    def rows(self) -> list[dict]:
        """Each customer's attributes as the deployment checks them (names as declared)."""
        plan = np.array(PLANS, dtype=object)[self.plan].tolist()
        end = [None if np.isnan(v) else float(v) for v in self.contract_end]
        complaint = [None if np.isnan(v) else _iso(int(v), 0) for v in self.complaint_min]
        cols = zip(
            plan,
            self.revenue.tolist(),
            self.tenure.astype(float).tolist(),
            self.usage.tolist(),
            end,
            self.tier.tolist(),
            self.app.tolist(),
            self.whatsapp.tolist(),
            self.sms.tolist(),
            self.email.tolist(),
            complaint,
            strict=True,
        )
        names = (
            "plan_type",
            "monthly_revenue",
            "tenure_days",
            "data_usage_gb",
            "days_to_contract_end",
            "loyalty_tier",
            "app_user",
            "whatsapp_opt_in",
            "sms_opt_in",
            "email_opt_in",
            "last_complaint_at",
        )
        return [{k: v for k, v in zip(names, row, strict=True) if v is not None} for row in cols]


def draw_customers(n: int, start_min: int, rng: np.random.Generator) -> Customers:
    zone = rng.choice(len(ZONES), n, p=[z[2] for z in ZONES])
    plan = rng.choice(3, n, p=[0.45, 0.45, 0.10])
    revenue = np.round(np.exp(rng.normal(np.log([12.0, 35.0, 60.0])[plan], 0.35)), 2)
    tenure = np.floor(rng.exponential(np.array([500.0, 1200.0, 1500.0])[plan])).astype(np.int64)
    usage = np.round(np.exp(rng.normal(np.log([6.0, 15.0, 12.0])[plan], 0.6)), 1)
    contract_end = np.where(plan == 0, np.nan, rng.integers(0, 731, n).astype(float))
    r = rng.random(n)
    tier = np.where((tenure > 1500) & (r < 0.6), "gold", np.where((tenure > 730) & (r < 0.7), "silver", "none"))
    app = rng.random(n) < np.array([0.45, 0.65, 0.55])[plan]
    whatsapp = rng.random(n) < 0.4
    sms = rng.random(n) < 0.85
    email = rng.random(n) < 0.7
    recent = rng.random(n) < 0.08  # a complaint in the 60 days before the log starts
    when = start_min - rng.integers(60, 60 * 24 * 60, n)
    complaint = np.where(recent, when.astype(float), np.nan)
    return Customers(
        np.array([z[1] for z in ZONES], float)[zone],
        plan,
        revenue,
        tenure,
        usage,
        contract_end,
        np.array(tier.tolist(), dtype=object),
        app,
        whatsapp,
        sms,
        email,
        complaint,
    )


def _iso(minutes: int, offset_h: float) -> str:
    """ISO 8601 of a UTC instant (minutes since the epoch) in the local time of ``offset_h``."""
    t = datetime.fromtimestamp(minutes * 60, UTC) + timedelta(hours=offset_h)
    if offset_h == 0:
        return t.strftime("%Y-%m-%dT%H:%M:%SZ")
    sign = "+" if offset_h > 0 else "-"
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f"{sign}{int(abs(offset_h)):02d}:00"


# ----------------------------------------------------------------------------- the logging policy
def rule_scores(
    d: Deployment, c: Customers, recent: RecentContacts, now: np.ndarray, now_min: np.ndarray
) -> np.ndarray:
    """(N, A) the business rules' score of every action (no contact at 0): offer + channel + slot.

    Deterministic in the attributes and the recent contacts, so the rules' choice is a function of
    what the log holds.
    """
    space = d.action_space()
    offers = [o.name for o in d.offers]
    n = c.plan.size
    margin = np.array([float(o.features["margin"]) for o in d.offers])
    offer = np.tile(0.5 + 0.03 * margin, (n, 1))  # otherwise: the margin's pull alone

    def bump(name: str, score: float, who: np.ndarray) -> None:
        j = offers.index(name)
        offer[:, j] = np.where(who, score, offer[:, j])

    plan = c.plan
    end = np.nan_to_num(c.contract_end, nan=1e9)
    complained = (now_min - np.nan_to_num(c.complaint_min, nan=-1e12)) < 14 * 24 * 60
    bump("complaint_followup", 6.0, complained)
    bump("retention_call", 5.0, end <= 30)
    bump("contract_renewal_discount", 4.5, end <= 60)
    bump("upgrade_to_postpaid", 3.5, (plan == 0) & (c.tenure >= 90) & (c.revenue >= 15))
    bump("phone_upgrade", 3.3, (plan > 0) & (c.tenure >= 730) & (end <= 120))
    bump("data_boost_20gb", 3.2, (plan < 2) & (c.usage >= 25))
    bump("data_boost_10gb", 3.0, (plan < 2) & (c.usage >= 15) & (c.usage < 25))
    bump("data_boost_5gb", 2.8, (plan < 2) & (c.usage >= 8) & (c.usage < 15))
    bump("business_line_discount", 3.0, plan == 2)
    bump("anniversary_gift", 2.7, (c.tenure >= 365) & (c.tenure % 365 < 7))
    bump("loyalty_points_x2", 2.6, c.tier == "gold")
    bump("video_streaming", 2.5, c.app & (c.usage >= 10))
    channel = np.zeros((n, len(d.channels)))
    names = [ch.name for ch in d.channels]
    channel[:, names.index("app_push")] = 0.6
    channel[:, names.index("whatsapp")] = 0.5
    channel[:, names.index("email")] = 0.3
    channel[:, names.index("sms")] = 0.2
    channel[:, names.index("call_centre")] = -1.5
    slot = np.array([{None: 0.3, 18: 0.2, 10: 0.1}.get(h, 0.0) for h in space.send_slots])
    scores = np.empty((n, space.n_actions))
    a = np.arange(1, space.n_actions)
    ch, co, sl = space.channel_of[a], space.content_of[a], space.slot_of[a]
    scores[:, 1:] = offer[:, co] + channel[:, ch] + slot[sl]
    calls = ch == names.index("call_centre")
    for name in ("retention_call", "complaint_followup"):  # worth an agent's call
        scores[:, 1:][:, calls & (co == offers.index(name))] += 3.0
    scores[:, NO_CONTACT] = 3.0 + 0.5 * recent.count_since(now, 168.0)  # the bar: higher after each contact
    return scores


def logging_policy(scores: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Epsilon-greedy over the rules' best eligible action: (action, its exact probability)."""
    n = mask.shape[0]
    best = np.where(mask, scores, -np.inf).argmax(axis=1)
    k = mask.sum(axis=1)
    explore = rng.random(n) < EPSILON
    pick = np.minimum((rng.random(n) * k).astype(np.int64), k - 1)  # the pick-th eligible action
    uniform = (np.cumsum(mask, axis=1) > pick[:, None]).argmax(axis=1)
    action = np.where(explore, uniform, best)
    return action, (1.0 - EPSILON) * (action == best) + EPSILON / k


# ----------------------------------------------------------------------------- the hidden response
def conversion_logit(
    d: Deployment, c: Customers, action: np.ndarray, week_contacts: np.ndarray, now_min: np.ndarray
) -> np.ndarray:
    """(N,) log-odds of a conversion within the window for contacts ``action`` (> 0)."""
    space = d.action_space()
    o = space.content_of[action]
    offer = [d.offers[j] for j in o.tolist()]
    category = np.array([x.features["category"] for x in offer], dtype=object)
    name = np.array([x.name for x in offer], dtype=object)
    price = np.array([float(x.features["monthly_price"]) for x in offer])
    discount = np.array([float(x.features["discount"]) for x in offer])
    plan, end = c.plan, np.nan_to_num(c.contract_end, nan=1e9)
    z = np.full(action.size, -3.2)
    z += np.where(category == "data", 0.06 * (c.usage - 10.0) + 1.5 * discount, 0.0)
    z += np.where(category == "voice", np.where(plan == 2, 0.4, np.where(plan == 0, -0.3, 0.0)), 0.0)
    z += np.where(category == "roaming", 0.6 * (plan == 2) + 0.3 * (c.revenue > 40), 0.0)
    z += np.where(category == "device", np.where((c.tenure > 730) & (end < 120), 0.8, -0.5), 0.0)
    z += np.where(category == "content", 0.6 * c.app + 0.6 * discount, 0.0)
    z += np.where(name == "contract_renewal_discount", 1.5 * (end <= 60), 0.0)
    z += np.where(name == "retention_call", 1.8 * (end <= 30), 0.0)
    z += np.where(name == "upgrade_to_postpaid", 0.8 * (c.revenue >= 20), 0.0)
    complained = (now_min - np.nan_to_num(c.complaint_min, nan=-1e12)) < 14 * 24 * 60
    z += np.where(name == "complaint_followup", np.where(complained, 1.0, -1.0), 0.0)
    z -= 0.04 * price * (1.0 - discount) * 30.0 / (c.revenue + 10.0)
    z += 0.2 * (c.tier == "gold")
    channel_effect = {"whatsapp": 0.3, "app_push": 0.1, "sms": 0.0, "email": -0.4, "call_centre": 1.0}
    z += np.array([channel_effect.get(ch.name, 0.0) for ch in d.channels])[space.channel_of[action]]
    z += np.array([{18: 0.2, 10: -0.1}.get(h, 0.0) for h in space.send_slots])[space.slot_of[action]]
    return z - 0.35 * week_contacts


OPT_OUT_BASE = {"whatsapp": 0.004, "sms": 0.006, "email": 0.002, "app_push": 0.003, "call_centre": 0.01}


# ----------------------------------------------------------------------------- the log
def generate(
    deployment: Deployment, customers: int = 2000, days: int = 14, seed: int = 0, start: date = START
) -> list[list[str]]:
    """The log's rows (header first), as CSV cells."""
    d = deployment
    space = d.action_space()
    names = [ch.name for ch in d.channels]
    consent = {ch.name: ch.consent for ch in d.channels}
    start_min = int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp()) // 60
    c = draw_customers(customers, start_min, rng_for(seed, "customers"))
    timing, policy, response, life = (rng_for(seed, p) for p in ("timing", "policy", "response", "life"))
    recent = RecentContacts.for_rules(customers, len(names), d.contact_rules())
    slot_label = ["" if h is None else str(h) for h in space.send_slots]
    margin = np.array([float(o.features["margin"]) for o in d.offers])
    header = [*COLUMNS, *(a.name for a in d.attributes), *TAIL]
    out = [header]
    ids = [f"C{i:05d}" for i in range(customers)]
    rows = np.arange(customers)
    for day in range(days):
        today = start + timedelta(days=day)
        offset = c.zone_offset + (1.0 if summer_time(today) else 0.0)
        local = timing.integers(8 * 60, 21 * 60, customers)  # minutes after local midnight
        midnight = int(datetime(today.year, today.month, today.day, tzinfo=UTC).timestamp()) // 60
        now_min = midnight + local - (offset * 60).astype(np.int64)
        complaint = life.random(customers) < 0.002  # a complaint this morning, before the decision
        c.complaint_min = np.where(
            complaint, (now_min - life.integers(30, 240, customers)).astype(float), c.complaint_min
        )
        people = [d.check_attributes(p) for p in c.rows()]
        now = now_min / 60.0
        mask = d.eligibility(people, recent, now=now, tz_offset=offset)
        scores = rule_scores(d, c, recent, now, now_min)
        action, propensity = logging_policy(scores, mask, policy)
        contact = action != NO_CONTACT
        send = send_time(space, now, offset)[rows, np.maximum(space.slot_of[action], 0)]
        ch = space.channel_of[action].astype(np.intp)
        week = recent.count_since(now, 168.0)
        week_channel = np.array([recent.count_since(now, 168.0, j) for j in range(len(names))]).T
        recent.record(rows[contact], ch[contact], send[contact])
        p = 1.0 / (1.0 + np.exp(-conversion_logit(d, c, np.where(contact, action, 1), week, now_min)))
        u = response.random(customers)
        converted = contact & (u < p)
        value = np.round(
            margin[space.content_of[action]] * MONTHS_OF_MARGIN * response.lognormal(0.0, 0.25, customers), 2
        )
        p_out = np.array([OPT_OUT_BASE[x] for x in names])[ch] + 0.012 * week_channel[rows, ch]
        opted_out = contact & ~converted & (response.random(customers) < p_out)
        for i in range(customers):
            a = int(action[i])
            if a == NO_CONTACT:
                channel = offer = slot = ""
            else:
                channel, offer, slot = names[ch[i]], d.offers[space.content_of[a]].name, slot_label[space.slot_of[a]]
            out.append(
                [
                    f"D{day * customers + i:07d}",
                    ids[i],
                    _iso(int(now_min[i]), float(offset[i])),
                    *_cells(d, people[i]),
                    channel,
                    offer,
                    slot,
                    repr(float(propensity[i])),
                    repr(float(value[i])) if converted[i] else "",
                    "1" if opted_out[i] else "0",
                ]
            )
        _live_on(d, c, action, converted, opted_out, names, consent)
    return out


def _cells(d: Deployment, person: dict) -> list[str]:
    out = []
    for a in d.attributes:
        v = person.get(a.name)
        if v is None:
            out.append("")
        elif a.type == "boolean":
            out.append("true" if v else "false")
        elif a.type == "time":
            out.append(_iso(round(v * 60), 0))
        elif a.type == "number":
            out.append(repr(int(v)) if v == int(v) else repr(v))
        else:
            out.append(v)
    return out


def _live_on(
    d: Deployment,
    c: Customers,
    action: np.ndarray,
    converted: np.ndarray,
    opted_out: np.ndarray,
    names: list[str],
    consent: dict[str, str | None],
) -> None:
    """A day passes: opt-outs switch consent off, renewals and upgrades change the contract, time moves on."""
    space = d.action_space()
    ch = space.channel_of[action]
    attribute = {"whatsapp_opt_in": c.whatsapp, "sms_opt_in": c.sms, "email_opt_in": c.email, "app_user": c.app}
    for j, name in enumerate(names):
        key = consent[name]
        if key in attribute:
            attribute[key][opted_out & (ch == j)] = False
    offers = [o.name for o in d.offers]
    got = np.where(converted, space.content_of[action], -1)
    renewed = np.isin(got, [offers.index(x) for x in ("contract_renewal_discount", "retention_call", "phone_upgrade")])
    upgraded = got == offers.index("upgrade_to_postpaid")
    c.plan[upgraded] = 1
    c.contract_end = np.where(renewed | upgraded, 731.0, c.contract_end)
    c.contract_end = np.maximum(c.contract_end - 1.0, 0.0)
    c.tenure += 1


def write_csv(rows: list[list[str]], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="CSV file to write")
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=date.fromisoformat, default=START, help="first day (ISO date)")
    parser.add_argument("--deployment", type=Path, default=DEPLOYMENT)
    args = parser.parse_args(argv)
    if args.customers < 1 or args.days < 1:
        parser.error("--customers and --days must be at least 1")
    t0 = clock.perf_counter()
    rows = generate(Deployment.load(args.deployment), args.customers, args.days, args.seed, args.start)
    write_csv(rows, args.out)
    print(
        f"{len(rows) - 1:,} decisions of {args.customers:,} customers over {args.days} days -> {args.out} "
        f"({clock.perf_counter() - t0:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
