"""Parity of the decide path with the decision log: every logged decision's context and eligibility mask,
rebuilt from the log alone as the decision service rebuilds them (:meth:`DecisionLog.contact_history`,
:func:`nba.decide.history_from_log`, then :func:`nba.decide.decide_profiles` or :func:`nba.decide.decide`),
equals what the log holds: the simulator's own observation and mask for a simulated log, the import's
replay for the telecom operator's log.

The simulated population is contacted often (uniform over the eligible actions, mostly contacts), so the
caps, the minimum gap, the quiet hours and every history feature are exercised. What the caller sends
(the profile: segment, time zone, consent, stage, cart, tenure, and the purchases and visits it knows of)
is recorded while simulating: it is not in the log.

The masks agree everywhere. The features differ where the simulator's history (``envs/dynamics.py``,
``apply_outcome``) records a step's contacts and outcomes at that step, whatever their times, where the log
(and :func:`history_from_log`, and the import's replay) knows them once they happened:

* a contact counts from its decision, even while its send is still scheduled after the next decision
  (``log_contacts``, ``contact_recency``, ``contact_load``, ``hour_pref_*``);
* an open or click counts from its message's decision, even when it comes after the next decision (direct
  mail is read days later: ``log_engaged``, ``engaged_recency``, ``hour_pref_*``);
* contacts and opens are recorded in the order of their decisions: a newer decision's message sent (or
  opened) before an older one's moves ``last_contact`` (``last_engaged``) back in time;
* a purchase the message caused is recorded at the send, where the log (``envs/decision_log.py``) has it
  at the open (``purchase_recency``, ``post_purchase_window``).

:func:`test_the_simulated_log_rebuilds_every_context_and_mask` rebuilds with the simulator's timing of those
events and finds every feature and mask exactly equal; :func:`test_as_the_service_sees_the_log_only_those_events_differ`
rebuilds from the log as it stood at each decision and finds the differences confined to exactly those.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from envs.decision_log import CustomerIds, PreStep, scenario_layout, step_records
from envs.scenario import Scenario
from envs.simulation import Simulation
from nba.decide import decide, decide_profiles, history_from_log
from nba.deployment import Deployment
from nba.eligibility import Reason, RecentContacts
from nba.features import NEVER, FeatureSpec, Profile
from nba.log import DecisionLog
from nba.log.importer import DeploymentMapping, import_onto
from nba.log.records import ContactHistory
from nba.policies import act, create

ROOT = Path(__file__).resolve().parents[2]
CUSTOMERS, STEPS = 300, 14
DECISION_EVERY_H = 6.0  # the bandit view decides every 6 to 30 hours (the default scenario's 24 to 48, shortened)
HISTORY_DAYS = 90  # what the service reads back


@dataclass(frozen=True)
class Asked:
    """One simulated step's requests, as the service would get them (the log does not hold these)."""

    customer_id: np.ndarray  # (N,) object str
    decision_id: np.ndarray  # (N,) object str
    now: np.ndarray  # (N,) float64 hours
    profile: Profile  # as the simulator had it (stage, cart, consent: what the caller knows)
    n_purchases: np.ndarray  # (N,) purchases the caller knows of, those before the log included
    last_purchase: np.ndarray  # (N,)
    last_visit: np.ndarray  # (N,)


@dataclass(frozen=True)
class Simulated:
    scenario: Scenario
    log: DecisionLog
    asked: list[Asked]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> Simulated:
    """The default scenario's bandit view, a uniform policy over the eligible actions, every step and its
    outcomes (opens, clicks, conversions, opt-outs) written to a SQLite decision log."""
    sc = dataclasses.replace(Scenario.default(), decision_window_h=DECISION_EVERY_H)
    sim = Simulation(sc, 7, CUSTOMERS, purpose="parity", decision_hour=None, replace_rate=1 / 30, penalties=True)
    log = DecisionLog(f"sqlite:///{tmp_path_factory.mktemp('parity') / 'log.db'}")
    log.set_layout(scenario_layout(sc))
    policy, rng = create("uniform_random", sim.space), np.random.default_rng(7)
    customers = CustomerIds.start(CUSTOMERS, "p")
    asked = []
    for step in range(STEPS):
        before = PreStep.of(sim, customers)
        p = sim.profile()
        profile = Profile(*(np.array(getattr(p, f.name)) for f in dataclasses.fields(Profile)))
        h = sim.history
        ids = np.array([f"s{step}:{r}" for r in range(CUSTOMERS)], dtype=object)
        asked.append(Asked(before.customer_id, ids, before.now, profile, h.n_purchases.copy(),
                           h.last_purchase.copy(), h.last_visit.copy()))
        d = act(policy, before.context, before.eligible, rng)
        result = sim.step(d.actions)
        log.log(*step_records(sim, before, d, result, decision_ids=ids, policy=policy.name))
        customers.advance(result.replaced)
    yield Simulated(sc, log, asked)
    log.close()


def _as_of(h: ContactHistory, customer: np.ndarray, now: np.ndarray, decided_at: dict[str, float], *,
           events_by_now: bool = True) -> ContactHistory:
    """The contact history of decisions ``i`` (of customer ``h.customer_ids[customer[i]]`` at ``now[i]``),
    one history row each, as the log held it then: the contacts and the events of earlier decisions
    (``decided_at``: each decision's time), the events only once they happened unless not ``events_by_now``."""
    p, i = np.nonzero((h.contact_customer[:, None] == customer) & (h.contact_time[:, None] < now))
    earlier = np.array([decided_at[x] for x in h.event_decision.tolist()]).reshape(-1, 1) < now
    happened = h.event_time[:, None] <= now if events_by_now else True
    q, j = np.nonzero((h.event_customer[:, None] == customer) & earlier & happened)
    return ContactHistory(
        customer_ids=np.arange(len(now)).astype(str).astype(object), contact_customer=i,
        contact_time=h.contact_time[p], contact_send_at=h.contact_send_at[p], contact_action=h.contact_action[p],
        event_customer=j, event=h.event[q], event_time=h.event_time[q], event_value=h.event_value[q],
        event_action=h.event_action[q], event_send_at=h.event_send_at[q], event_decision=h.event_decision[q])


def _as_the_simulator_records(h: ContactHistory) -> ContactHistory:
    """``h`` as the simulator records a step's contacts and outcomes: at that step, in the order of the
    decisions (not of the send or event times), every conversion at its decision's send time."""
    bought = h.event == "converted"
    h = dataclasses.replace(h, event_time=np.where(bought, h.event_send_at, h.event_time))
    by_contact = np.argsort(h.contact_time, kind="stable")
    by_event = np.lexsort((h.event_time, h.event_send_at))
    order = lambda name: by_contact if name.startswith("contact") else by_event  # noqa: E731
    return dataclasses.replace(h, **{f.name: getattr(h, f.name)[order(f.name)] for f in dataclasses.fields(h)
                                     if f.name != "customer_ids"})


def _rebuild_step(sim: Simulated, a: Asked, decided_at: dict[str, float], *, simulator_timing: bool,
                  derive_stage: bool = False):
    """One step's decisions through the service's path, from the log and what the caller sends; with
    ``simulator_timing``, every contact and event of an earlier decision counts, as the simulator counts them."""
    sc, space = sim.scenario, sim.scenario.action_space
    n = len(a.now)
    h = sim.log.contact_history(a.customer_id, since=float(a.now.min()) - 24.0 * HISTORY_DAYS)
    h = _as_of(h, np.arange(n), a.now, decided_at, events_by_now=not simulator_timing)
    sent_by = a.now
    if simulator_timing:
        h, sent_by = _as_the_simulator_records(h), np.full(n, np.inf)  # history_from_log's now: what was sent by then
    recent = RecentContacts.for_rules(n, space.n_channels, sc.contact)
    history = history_from_log(h, np.arange(n), space, recent, now=sent_by, tz_offset=a.profile.tz_offset)
    # what the caller knows of purchases and visits completes what the log holds (serving.decisions)
    np.maximum(history.last_purchase, a.last_purchase, out=history.last_purchase)
    np.maximum(history.n_purchases, a.n_purchases, out=history.n_purchases)
    history.last_visit[:] = a.last_visit
    profile = a.profile
    if derive_stage:
        profile = dataclasses.replace(profile, stage=np.full(n, -1, np.int8))
    policy = create("uniform_random", space)
    return decide_profiles(policy, sc.feature_spec, sc.contact, sc.lifecycle, profile, history, recent, now=a.now,
                           rng=np.random.default_rng(0))


def _logged(log: DecisionLog) -> tuple[dict[str, int], object]:
    b = log.read()
    return {d: j for j, d in enumerate(b.decision_id.tolist())}, b


def test_the_simulated_log_rebuilds_every_context_and_mask(simulated):
    """With the simulator's timing of contacts, opens and purchases, every decision's features (float32,
    exactly) and mask rebuilt from the log equal those it logged; with the stage derived from the rebuilt
    history too (every other step)."""
    row, b = _logged(simulated.log)
    decided_at = dict(zip(b.decision_id.tolist(), b.time.tolist(), strict=True))
    bits = 0
    for k, a in enumerate(simulated.asked):
        j = [row[d] for d in a.decision_id.tolist()]
        out = _rebuild_step(simulated, a, decided_at, simulator_timing=True, derive_stage=k % 2 == 1)
        np.testing.assert_array_equal(out.context, b.context[j], err_msg=f"step {k}")
        np.testing.assert_array_equal(out.eligible, b.eligible[j], err_msg=f"step {k}")
        bits |= int(np.bitwise_or.reduce(out.reasons, axis=None))
    assert len(b) == CUSTOMERS * STEPS and (b.action > 0).mean() > 0.7
    # the contact policy was exercised in every way a scenario knows
    for reason in (Reason.CONSENT, Reason.QUIET_HOURS, Reason.CHANNEL_CAP, Reason.TOTAL_CAP, Reason.MIN_GAP):
        assert bits & reason, reason.name
    names = simulated.scenario.feature_spec.names
    last = b.context[[row[d] for d in simulated.asked[-1].decision_id.tolist()]]
    for stat in ("log_contacts=", "contact_load=", "log_engaged=", "hour_pref_cos=", "log_purchases"):
        assert (last[:, [n.startswith(stat) for n in names]] != 0).any(), stat


def _divergent(spec: FeatureSpec, h: ContactHistory, now: np.ndarray, space) -> np.ndarray:
    """(N, d) bool: the features that the differences named in the module's docstring may move, from the
    contact history ``h`` of each row's earlier decisions (all of their events)."""
    names, c = spec.names, space.channel_of
    out = np.zeros((len(now), spec.dim), bool)

    def mark(rows: np.ndarray, channels: np.ndarray | None, stats: tuple[str, ...]) -> None:
        for stat in stats:
            if channels is None:
                out[rows, names.index(stat)] = True
            else:
                out[rows, [names.index(f"{stat}={spec.channels[k]}") for k in channels.tolist()]] = True

    later = h.contact_send_at > now[h.contact_customer]
    mark(h.contact_customer[later], c[h.contact_action[later]],
         ("log_contacts", "contact_recency", "contact_load", "hour_pref_cos", "hour_pref_sin"))
    seen = np.flatnonzero((h.event != "converted") & (h.event_action > 0))
    late = seen[h.event_time[seen] > now[h.event_customer[seen]]]
    mark(h.event_customer[late], c[h.event_action[late]],
         ("log_engaged", "engaged_recency", "hour_pref_cos", "hour_pref_sin"))
    # a newer decision's message sent before an older one's, or opened before an older one's (the float32
    # sums of the send hours then add up in another order, too)
    for rows, channels, decided, when, stats in (
            (h.contact_customer, c[h.contact_action], h.contact_time, h.contact_send_at,
             ("contact_recency", "contact_load", "hour_pref_cos", "hour_pref_sin")),
            (h.event_customer[seen], c[h.event_action[seen]], h.event_send_at[seen], h.event_time[seen],
             ("engaged_recency", "hour_pref_cos", "hour_pref_sin"))):
        times: dict[tuple[int, int], list[tuple[float, float]]] = {}
        for key, pair in zip(zip(rows.tolist(), channels.tolist(), strict=True),
                             zip(decided.tolist(), when.tolist(), strict=True), strict=True):
            times.setdefault(key, []).append(pair)
        for (r, k), pairs in times.items():
            if sorted(pairs) != sorted(pairs, key=lambda x: x[1]):
                mark(np.array([r]), np.array([k]), stats)
    caused = (h.event == "converted") & (h.event_time != h.event_send_at)
    mark(h.event_customer[caused], None, ("purchase_recency", "post_purchase_window"))
    return out


def test_as_the_service_sees_the_log_only_those_events_differ(simulated):
    """With the log as it stood at each decision (contacts once sent, events once they happened, purchases
    when logged): every mask equal, every feature equal but those the simulator's timing moves (the
    module's docstring), which happen in this log."""
    row, b = _logged(simulated.log)
    decided_at = dict(zip(b.decision_id.tolist(), b.time.tolist(), strict=True))
    spec, space = simulated.scenario.feature_spec, simulated.scenario.action_space
    moved = explained = 0
    for k, a in enumerate(simulated.asked):
        j = [row[d] for d in a.decision_id.tolist()]
        out = _rebuild_step(simulated, a, decided_at, simulator_timing=False)
        np.testing.assert_array_equal(out.eligible, b.eligible[j], err_msg=f"step {k}")
        h = simulated.log.contact_history(a.customer_id, since=NEVER)
        may = _divergent(spec, _as_of(h, np.arange(len(a.now)), a.now, decided_at, events_by_now=False), a.now, space)
        differ = out.context != b.context[j]
        bad = np.argwhere(differ & ~may)
        assert bad.size == 0, f"step {k}, row {bad[0][0]}: {spec.names[bad[0][1]]} differs"
        moved, explained = moved + int(differ.sum()), explained + int(may.sum())
    assert moved > 0 and explained > 0  # the differences are real, in this log


# ----------------------------------------------------------------------------- the telecom deployment
TELECOM_MAPPING = DeploymentMapping(customer_id="customer_id", time="time", channel="channel", offer="offer",
                                    send_hour="send_hour", propensity="propensity", reward="reward",
                                    opted_out="opted_out", decision_id="decision_id")
CELL = {"number": float, "boolean": "true".__eq__}  # other attribute types are passed as their text


def _request(d: Deployment, cells: dict[str, str]) -> tuple[dict, float]:
    """A CSV row as the caller's request: its attributes (empty cells not sent) and its UTC offset."""
    sent = {a.name: CELL.get(a.type, str)(cells[a.name]) for a in d.attributes if cells[a.name]}
    return d.check_attributes(sent), datetime.fromisoformat(cells["time"]).utcoffset().total_seconds() / 3600.0


def test_the_telecom_import_equals_the_decide_path_for_every_decision(tmp_path):
    """The operator's log (300 customers, 8 days across the switch to summer time) imported onto the
    deployment; every decision's context and mask, rebuilt through history_from_log and decide from the
    log's contact history up to that decision, equal what the import stored."""
    spec = importlib.util.spec_from_file_location("telecom_gen", ROOT / "examples" / "telecom" / "generate.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    d = Deployment.load(ROOT / "examples" / "telecom" / "deployment.toml")
    path = gen.write_csv(gen.generate(d, 300, 8, seed=3), tmp_path / "log.csv")
    with DecisionLog(f"sqlite:///{tmp_path / 'log.db'}") as log:
        assert import_onto(log, path, d, TELECOM_MAPPING).ineligible == 0
        row, b = _logged(log)
        with path.open(newline="") as f:
            requests = {r["decision_id"]: _request(d, r) for r in csv.DictReader(f)}
        ids = np.array(sorted(set(b.customer_id.tolist())), dtype=object)
        h = log.contact_history(ids, since=float(b.time.min()) - 24.0 * HISTORY_DAYS)
    n, space = len(b), d.action_space()
    customer = np.searchsorted(ids.astype(str), b.customer_id.astype(str))
    as_of = _as_of(h, customer, b.time, dict(zip(b.decision_id.tolist(), b.time.tolist(), strict=True)))
    tz = np.array([requests[x][1] for x in b.decision_id.tolist()])
    recent = RecentContacts.for_rules(n, space.n_channels, d.contact_rules())
    history = history_from_log(as_of, np.arange(n), space, recent, now=b.time, tz_offset=tz)
    out = decide(d, create("uniform_random", space), [requests[x][0] for x in b.decision_id.tolist()], now=b.time,
                 tz_offset=tz, rng=np.random.default_rng(0), history=history, recent=recent)
    np.testing.assert_array_equal(out.context, b.context)
    np.testing.assert_array_equal(out.eligible, b.eligible)
    assert len(set(tz.tolist())) > 3  # three zones, before and after the switch
    bits = int(np.bitwise_or.reduce(out.reasons, axis=None))
    for reason in (Reason.CONSENT, Reason.QUIET_HOURS, Reason.CHANNEL_CAP, Reason.MIN_GAP, Reason.OFFER):
        assert bits & reason, reason.name
    names = d.features().names
    for stat in ("log_contacts=", "contact_recency=", "log_purchases"):
        assert (out.context[:, [x.startswith(stat) for x in names]] != 0).any(), stat
