"""nba.surrogate: a change of send slot read through the opens, against the simulator's exact lifts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from envs.rollout import funnel_events
from envs.scenario import Scenario
from envs.simulation import Simulation
from nba import surrogate
from nba.log.records import FunnelEvents
from nba.policies import Explore, create

ROUNDS, CUSTOMERS = 5, 4000  # an evaluation log of 20,000 decisions, as the quickstart's


def _log(scenario: Scenario, purpose: str, decision_hour: int | None = None, epsilon: float = 0.2) -> dict:
    """An exploring business-as-usual log with its funnel events, the base's distribution and the exact
    expected reward of every action."""
    sp, seg = scenario.action_space, tuple(scenario.segments)
    bau = create("business_as_usual", sp, seg)
    logger = Explore(bau, epsilon, 0.0) if epsilon else bau
    sim = Simulation(scenario, seed=0, n=CUSTOMERS, purpose=purpose, decision_hour=decision_hour, penalties=True)
    rng = np.random.default_rng(0)
    cols: dict[str, list] = {k: [] for k in ("context", "eligible", "action", "er", "base", "customer", "events")}
    for _ in range(ROUNDS):
        d = sim.decide(logger, rng)
        cols["er"].append(sim.expected_rewards())
        cols["base"].append(bau.probabilities(d.context, d.eligible))
        res = sim.step(d.action)
        for k, v in (("context", d.context), ("eligible", d.eligible), ("action", d.action)):
            cols[k].append(np.asarray(v))
        cols["customer"].append(np.arange(CUSTOMERS))  # the same customers each round
        cols["events"].append(funnel_events(res))
    out = {k: np.concatenate(v) for k, v in cols.items() if k != "events"}
    out["events"] = FunnelEvents(
        **{
            f.name: np.concatenate([getattr(e, f.name) for e in cols["events"]])
            for f in dataclasses.fields(FunnelEvents)
        }
    )
    return out


def _move(base: np.ndarray, er: np.ndarray, eligible: np.ndarray, space, pick) -> np.ndarray:
    """``base``'s messages, each moved to the eligible slot ``pick`` (np.argmax / np.argmin) finds in the exact
    expected rewards: the same customers, channels and contents, another send slot."""
    n, c, k, s = len(base), space.n_channels, space.n_contents, space.n_slots
    score = np.where(eligible[:, 1:], er[:, 1:], np.nan).reshape(n, c, k, s)
    score = np.where(np.isnan(score), -np.inf if pick is np.argmax else np.inf, score)
    best = pick(score, axis=3)
    out = np.zeros((n, c, k, s))
    np.put_along_axis(out, best[..., None], base[:, 1:].reshape(n, c, k, s).sum(axis=3)[..., None], axis=3)
    return np.hstack([base[:, :1], out.reshape(n, -1)])


@pytest.fixture(scope="module")
def log() -> dict:
    return _log(Scenario.default(), "tests/surrogate/eval-log")


def _lift(log: dict, target: np.ndarray, space, spec, **kw):
    return surrogate.slot_lift(
        target, log["base"], log["context"], log["action"], log["events"], space, spec, clusters=log["customer"], **kw
    )


def test_it_sees_the_sign_of_a_change_of_slot_and_errs_towards_zero(log):
    """A better slot for every message and a worse one: the exact lifts are far from 0 either way; the
    surrogate's interval lies on the right side of 0, and reads less than the whole lift (module docstring)."""
    sc = Scenario.default()
    sp = sc.action_space
    for pick, sign in ((np.argmax, 1.0), (np.argmin, -1.0)):
        target = _move(log["base"], log["er"], log["eligible"], sp, pick)
        exact = float(np.einsum("ij,ij->i", target - log["base"], log["er"]).mean())
        up = _lift(log, target, sp, sc.feature_spec, n_bootstrap=40)
        assert sign * exact > 0.1  # the truth: a tenth of the value per decision, either way
        assert sign * up.ci_low > 0 if sign > 0 else up.ci_high < 0  # the interval on the right side of 0
        assert 0 < sign * up.value < sign * exact  # of the right sign, and short of the whole lift
        assert up.estimator == surrogate.ESTIMATOR and not up.unsupported
        assert up.ci_low <= up.value <= up.ci_high


def test_a_target_that_moves_nothing_has_no_lift(log):
    sc = Scenario.default()
    up = _lift(log, log["base"], sc.action_space, sc.feature_spec, n_bootstrap=5)
    assert (up.value, up.ci_low, up.ci_high) == (0.0, 0.0, 0.0)


def test_a_change_of_message_is_refused_naming_the_target(log):
    sc = Scenario.default()
    sp = sc.action_space
    other = np.zeros_like(log["base"])
    other[:, 0] = 1.0  # no contact for everyone: whom changes, not when
    assert not surrogate.slot_only(other, log["base"], sp)
    with pytest.raises(ValueError, match="^target: .*send slot"):
        _lift(log, other, sp, sc.feature_spec, n_bootstrap=0)


def test_on_other_send_slots_and_a_fixed_decision_hour_it_flags_hours_the_log_never_sent_at():
    """Another scenario (other send slots) whose decisions all fall at 10:00 local, logged by business as usual
    without exploration: every send goes out "now", at 10:00. Moving messages to the evening slot is an hour
    the log never sent at: unsupported; the sign is still read where the hours were sent at (exploring)."""
    base = Scenario.default()
    sc = dataclasses.replace(base, send_slots=[8, 12, 21])
    sp = sc.action_space
    thin = _log(sc, "tests/surrogate/fixed-hour", decision_hour=10, epsilon=0.0)
    target = _move(thin["base"], thin["er"], thin["eligible"], sp, np.argmax)
    up = _lift(thin, target, sp, sc.feature_spec, n_bootstrap=5)
    assert up.unsupported
    explored = _log(sc, "tests/surrogate/fixed-hour-explored", decision_hour=10)
    target = _move(explored["base"], explored["er"], explored["eligible"], sp, np.argmax)
    exact = float(np.einsum("ij,ij->i", target - explored["base"], explored["er"]).mean())
    up = _lift(explored, target, sp, sc.feature_spec, n_bootstrap=40)
    assert exact > 0.03 and up.ci_low > 0 and not up.unsupported


def _events(events: FunnelEvents, opened: np.ndarray | None) -> FunnelEvents:
    if opened is not None:
        return dataclasses.replace(events, opened=opened)
    none = np.zeros_like(events.opened)
    return FunnelEvents(opened=none, clicked=none, converted=none, value=np.zeros_like(events.value))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda kw: kw.update(target=kw["target"][:, :-1]), "target"),
        (lambda kw: kw.update(base=kw["base"] * 2), "base"),
        (lambda kw: kw.update(actions=kw["actions"][:-1]), "actions"),
        (lambda kw: kw.update(context=kw["context"][:, :-1]), "context"),
        (lambda kw: kw.update(events=_events(kw["events"], opened=kw["events"].opened[:-1])), "events.opened"),
        (lambda kw: kw.update(events=_events(kw["events"], opened=None)), "events.opened"),  # nothing opened
        (lambda kw: kw.update(n_bootstrap=-1), "n_bootstrap"),
        (lambda kw: kw.update(level=1.0), "level"),
        (lambda kw: kw.update(ridge=float("nan")), "ridge"),
        (lambda kw: kw.update(clusters=kw["clusters"][:-1]), "clusters"),
    ],
)  # fmt: skip
def test_bad_input_names_the_field(log, change, field):
    sc = Scenario.default()
    kw = {
        "target": log["base"], "base": log["base"], "context": log["context"], "actions": log["action"],
        "events": log["events"], "space": sc.action_space, "spec": sc.feature_spec, "clusters": log["customer"],
        "n_bootstrap": 0,
    }  # fmt: skip
    change(kw)
    with pytest.raises(ValueError, match=f"^{field}"):
        surrogate.slot_lift(**kw)


def test_messages_sums_each_channel_and_content_over_its_slots():
    sp = Scenario.default().action_space
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(sp.n_actions), size=3)
    m = surrogate.messages(p, sp)
    k = sp.n_contents
    for a in range(1, sp.n_actions):
        assert sp.channel_of[a] * k + sp.content_of[a] + 1 < m.shape[1]
    expect = np.zeros_like(m)
    expect[:, 0] = p[:, 0]
    for a in range(1, sp.n_actions):
        expect[:, 1 + sp.channel_of[a] * k + sp.content_of[a]] += p[:, a]
    assert np.allclose(m, expect) and np.allclose(m.sum(axis=1), 1.0)
