"""Contact policy: the mask never admits an action that breaks a rule, checked against a slow reference."""

from __future__ import annotations

import math
import tomllib

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from nba.actions import CHANNELS, NO_CONTACT, ActionSpace
from nba.eligibility import (
    DEFAULT_CAPS,
    DEFAULT_QUIET_HOURS,
    Cap,
    ContactRules,
    OfferCap,
    Reason,
    RecentContacts,
    channel_slot_reasons,
    eligibility,
    explain,
    limit_to_remaining,
    reason_names,
    send_time,
)
from nba.features import NEVER

T0 = 493_536.0  # 2026-04-20 00:00 UTC in hours since the epoch
K = 8  # latest contacts kept per channel and overall
SPACE = ActionSpace()
ALL_IN = np.ones((1, SPACE.n_channels), bool)
PROPERTY = settings(max_examples=120, deadline=None)


# ---------------------------------------------------------------------------- slow reference
def reference_reasons(space, rules, contacts, now, tz, consent, allowed=None, budget_left=None, cost=None):
    """(N, A) reason bits, one customer and one action at a time, straight from the rules' wording.

    ``contacts[i]`` is customer i's full list of (send time, channel index), nothing forgotten.
    """
    n = len(contacts)
    c_n = space.n_channels
    if budget_left is not None:
        budget_left = np.broadcast_to(budget_left, (n, c_n))
        cost = np.broadcast_to(cost, (n, c_n))
    actions = [space.decode(a) for a in range(space.n_actions)]
    out = np.zeros((n, space.n_actions), np.uint8)
    for i in range(n):
        local = (now[i] + tz[i]) % 24.0
        for a in range(1, space.n_actions):
            act = actions[a]
            c = space.channels.index(act.channel)
            send = now[i] if act.send_hour is None else now[i] + (act.send_hour - local) % 24.0

            def near(window, channel=None, send=send, i=i):
                return sum(1 for t, ch in contacts[i] if abs(t - send) < window and channel in (None, ch))

            bits = 0
            if not consent[i][c]:
                bits |= Reason.CONSENT
            if allowed is not None and not allowed[i][c]:
                bits |= Reason.RESTRICTED
            if act.channel in rules.quiet_hours:
                start, end = rules.quiet_hours[act.channel]
                hour = local if act.send_hour is None else act.send_hour
                if (start <= hour < end) if start < end else (hour >= start or hour < end):
                    bits |= Reason.QUIET_HOURS
            for cap in rules.caps:
                if cap.channel is None and near(cap.window_h) >= cap.max_count:
                    bits |= Reason.TOTAL_CAP
                if cap.channel == act.channel and near(cap.window_h, c) >= cap.max_count:
                    bits |= Reason.CHANNEL_CAP
            if rules.min_gap_h > 0 and near(rules.min_gap_h) >= 1:
                bits |= Reason.MIN_GAP
            if budget_left is not None and cost[i][c] > budget_left[i][c]:
                bits |= Reason.BUDGET
            out[i, a] = bits
    return out


# ---------------------------------------------------------------------------- strategies
def hours(lo: float, hi: float) -> st.SearchStrategy[float]:
    """Whole hours (so that contacts often sit exactly on a window's edge) or quarter hours.

    On this grid every sum, difference and ``mod 24`` is exact in float64, so the reference and
    the vectorised code agree to the last bit.
    """
    whole = st.integers(math.ceil(lo), math.floor(hi)).map(float)
    return st.one_of(whole, st.integers(math.ceil(4 * lo), math.floor(4 * hi)).map(lambda q: q / 4))


@st.composite
def spaces(draw) -> ActionSpace:
    channels = draw(st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=7, unique=True))
    contents = draw(st.sampled_from([("promo",), ("promo", "welcome")]))
    # 1, 2 and 4 slots take the word-copy path of the expansion, 3 and 5 the general one
    slots = draw(st.lists(st.one_of(st.none(), st.integers(0, 23)), min_size=1, max_size=5, unique=True))
    return ActionSpace(tuple(channels), contents, tuple(slots))


QUIET = st.dictionaries(
    st.sampled_from(CHANNELS),
    st.tuples(st.integers(0, 23), st.integers(0, 23)).filter(lambda p: p[0] != p[1]),
    max_size=7,
)
WINDOW = st.one_of(st.sampled_from([4.0, 24.0, 168.0, 720.0]), hours(0.25, 800))
GAP = st.one_of(st.just(0.0), hours(0.25, 12))
NOW = hours(0, 24 * 60)
TZ = hours(-12, 14)
# contacts mostly in the last two days (where caps bind), some up to 800 h back
OFFSETS = {ahead: st.one_of(hours(-48, ahead), hours(-800, ahead)) for ahead in (0, 30)}
MOSTLY = st.sampled_from([True, True, True, False])
MONEY = st.sampled_from([0.0, 0.05, 0.5, 1.0])


def contact_rules(space: ActionSpace) -> st.SearchStrategy[ContactRules]:
    """Rules whose caps name mostly the space's channels (caps on other channels must be ignored)."""
    channel = st.one_of(st.none(), st.sampled_from(space.channels), st.sampled_from(CHANNELS))
    caps = st.lists(st.builds(Cap, channel, st.integers(1, K), WINDOW), max_size=6).map(tuple)
    return st.builds(ContactRules, QUIET, caps, GAP)


@st.composite
def cases(draw, max_contacts: int, ahead_h: int) -> dict:
    """A space, rules, a request for n customers, and each customer's contacts within (-800 h, ahead_h] of now."""
    space = draw(spaces())
    rules = draw(contact_rules(space))
    n = draw(st.integers(1, 5))
    c = space.n_channels
    now = np.array([T0 + draw(NOW) for _ in range(n)])
    tz = np.array([draw(TZ) for _ in range(n)])
    contact = st.tuples(OFFSETS[ahead_h], st.integers(0, c - 1))
    contacts = [[(now[i] + d, ch) for d, ch in draw(st.lists(contact, max_size=max_contacts))] for i in range(n)]
    bools = st.lists(MOSTLY, min_size=n * c, max_size=n * c)
    case = dict(
        space=space, rules=rules, contacts=contacts, now=now, tz=tz, consent=np.array(draw(bools), bool).reshape(n, c)
    )
    if draw(st.booleans()):
        case["allowed"] = np.array(draw(bools), bool).reshape(n, c)
    if draw(st.booleans()):
        case["cost"] = np.array(draw(st.lists(MONEY, min_size=c, max_size=c)))
        left = np.array(draw(st.lists(st.one_of(MONEY, st.just(np.inf)), min_size=n * c, max_size=n * c)))
        case["budget_left"] = left.reshape(n, c) if draw(st.booleans()) else left[:c]
    return case


def history(case: dict, order_seed: int) -> RecentContacts:
    """Record every customer's contacts in a shuffled order, one contact per customer per call."""
    rng = np.random.default_rng(order_seed)
    recent = RecentContacts.empty(len(case["contacts"]), case["space"].n_channels, K)
    shuffled = [[lst[j] for j in rng.permutation(len(lst))] for lst in case["contacts"]]
    for j in range(max((len(lst) for lst in shuffled), default=0)):
        rows = np.array([i for i, lst in enumerate(shuffled) if len(lst) > j], np.int64)
        recent.record(rows, np.array([shuffled[i][j][1] for i in rows]), np.array([shuffled[i][j][0] for i in rows]))
    return recent


def run(case: dict, recent: RecentContacts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    kwargs = {k: case[k] for k in ("allowed", "budget_left", "cost") if k in case}
    mask, why = eligibility(
        case["space"],
        case["rules"],
        recent,
        now=case["now"],
        tz_offset=case["tz"],
        consent=case["consent"],
        reasons=True,
        **kwargs,
    )
    ref = reference_reasons(
        case["space"], case["rules"], case["contacts"], case["now"], case["tz"], case["consent"], **kwargs
    )
    assert mask.shape == why.shape == (len(case["contacts"]), case["space"].n_actions)
    assert mask.dtype == bool and why.dtype == np.uint8
    assert mask[:, NO_CONTACT].all() and (why[:, NO_CONTACT] == 0).all()
    assert np.array_equal(mask, why == 0)  # reasons are zero exactly where the mask admits
    return mask, why, ref


# ---------------------------------------------------------------------------- the mask against the reference
@PROPERTY
@given(case=cases(max_contacts=K - 1, ahead_h=30), order_seed=st.integers(0, 2**32 - 1))
def test_mask_and_reasons_equal_the_reference_while_nothing_is_forgotten(case, order_seed):
    # fewer than k contacts per customer: the kept history is the whole history, and the answer is exact
    mask, why, ref = run(case, history(case, order_seed))
    assert np.array_equal(why, ref)


@PROPERTY
@given(case=cases(max_contacts=30, ahead_h=0), order_seed=st.integers(0, 2**32 - 1))
def test_mask_and_reasons_equal_the_reference_for_long_histories_in_the_past(case, order_seed):
    # contacts the buffer forgets are older than every one it keeps, so long past histories stay exact
    mask, why, ref = run(case, history(case, order_seed))
    assert np.array_equal(why, ref)


@PROPERTY
@given(case=cases(max_contacts=30, ahead_h=30), order_seed=st.integers(0, 2**32 - 1))
def test_mask_never_admits_an_action_that_breaks_a_rule(case, order_seed):
    # with many contacts scheduled ahead the answer may be conservative, never lenient
    mask, why, ref = run(case, history(case, order_seed))
    assert not (mask & (ref != 0)).any()
    assert not (ref & ~why).any()  # every reason the rules give is reported


# ---------------------------------------------------------------------------- policies cannot get around it
def sample_from(p: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw from ``np.where(mask, p, 0)`` renormalised (uniform over the mask where p gives it no mass)."""
    q = np.where(mask, p, 0.0)
    total = q.sum(axis=1, keepdims=True)
    q = np.where(total > 0, q / np.where(total > 0, total, 1.0), mask / mask.sum(axis=1, keepdims=True))
    cdf = np.cumsum(q, axis=1)
    u = rng.random((len(q), 1)) * cdf[:, -1:]
    return np.minimum((cdf <= u).sum(axis=1), q.shape[1] - 1)


def masked_softmax(scores: np.ndarray, mask: np.ndarray, temperature: float) -> np.ndarray:
    z = np.where(mask, scores / temperature, -np.inf)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


@PROPERTY
@given(
    case=cases(max_contacts=12, ahead_h=30),
    order_seed=st.integers(0, 2**32 - 1),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
    epsilon=st.floats(0, 1),
)
def test_no_policy_exploring_or_not_gets_an_ineligible_action_through(case, order_seed, scale, epsilon):
    mask, _, _ = run(case, history(case, order_seed))
    rng = np.random.default_rng(order_seed)
    n, a = mask.shape
    rows = np.arange(n)
    for _ in range(5):
        scores = scale * rng.standard_normal((n, a))
        scores[rng.random((n, a)) < 0.2] = 1e6  # a bad model that loves some ineligible actions
        raw = np.exp((scores - scores.max(axis=1, keepdims=True)).clip(-700))
        raw /= raw.sum(axis=1, keepdims=True)
        greedy = np.where(mask, scores, -np.inf).argmax(axis=1)
        explore = sample_from(np.ones((n, a)), mask, rng)
        chosen = {
            "masked softmax": sample_from(masked_softmax(scores, mask, 0.1), mask, rng),
            "unmasked softmax, renormalised on the mask": sample_from(raw, mask, rng),
            "uniform over the mask": explore,
            "epsilon-greedy": np.where(rng.random(n) < epsilon, explore, greedy),
        }
        for name, actions in chosen.items():
            assert mask[rows, actions].all(), name


# ---------------------------------------------------------------------------- recording contacts
def test_a_recorded_contact_counts_at_once_toward_caps_and_the_gap():
    rules = ContactRules()
    recent = RecentContacts.empty(1, SPACE.n_channels)
    now = np.array([T0 + 12.0])  # noon UTC, tz 0: no quiet hours
    before = eligibility(SPACE, rules, recent, now=now, tz_offset=0.0, consent=ALL_IN)
    assert before.all()
    push_now = SPACE.index("push", "promo", None)
    recent.record_decisions(SPACE, np.array([push_now]), send_time(SPACE, now, np.zeros(1)))
    mask, why = eligibility(SPACE, rules, recent, now=now, tz_offset=0.0, consent=ALL_IN, reasons=True)
    assert not mask[0, push_now]
    assert why[0, push_now] == Reason.CHANNEL_CAP | Reason.MIN_GAP
    email_now, email_19h = SPACE.index("email", "promo", None), SPACE.index("email", "promo", 19)
    assert why[0, email_now] == Reason.MIN_GAP  # within 4 h of the push
    assert mask[0, email_19h]  # sends 7 h later
    assert why[0, SPACE.index("push", "promo", 19)] == Reason.CHANNEL_CAP  # push: 1 a day


def test_caps_hold_at_the_send_time_of_a_later_slot():
    """Daily decisions at 08:00: a push scheduled for 19:00 blocks tomorrow's 08:00 push, not its 19:00 one."""
    rules = ContactRules()
    recent = RecentContacts.empty(1, SPACE.n_channels)
    tz = np.array([0.0])
    day0 = np.array([T0 + 8.0])
    push_19h, push_now = SPACE.index("push", "promo", 19), SPACE.index("push", "promo", None)
    recent.record_decisions(SPACE, np.array([push_19h]), send_time(SPACE, day0, tz))
    assert recent.last_time(SPACE.channels.index("push"))[0] == T0 + 19.0
    day1 = day0 + 24.0
    mask, why = eligibility(SPACE, rules, recent, now=day1, tz_offset=tz, consent=ALL_IN, reasons=True)
    assert why[0, push_now] == Reason.CHANNEL_CAP  # 11 h after yesterday's push
    assert mask[0, push_19h]  # exactly 24 h after it: the window is half-open
    # a push sent "now" on day 0 leaves day 1's "now" free: exactly 24 h apart
    recent.reset_rows(np.array([0]))
    recent.record_decisions(SPACE, np.array([push_now]), send_time(SPACE, day0, tz))
    assert eligibility(SPACE, rules, recent, now=day1, tz_offset=tz, consent=ALL_IN)[0, push_now]


def test_the_buffer_keeps_the_latest_k_contacts_newest_first():
    rng = np.random.default_rng(3)
    times = T0 - rng.permutation(60).astype(float) * 5.0  # distinct, recorded out of order
    channels = rng.integers(0, 3, times.size)
    recent = RecentContacts.empty(2, 3, k=4)
    for t, c in zip(times, channels, strict=True):
        recent.record(np.array([1]), np.array([c]), np.array([t]))
    assert (recent.any_times[1] == np.sort(times)[::-1][:4]).all()
    for c in range(3):
        assert (recent.times[1, c] == np.sort(times[channels == c])[::-1][:4]).all()
        assert recent.last_time(c)[1] == times[channels == c].max()
    assert (recent.any_times[0] == NEVER).all() and recent.last_time()[0] == NEVER  # row 0 untouched
    assert recent.count_since(np.array([T0, T0]), 12.0).tolist() == [0, 3]  # 0, -5 and -10 h
    recent.reset_rows(np.array([1]))
    assert (recent.times == NEVER).all() and (recent.any_times == NEVER).all()


def test_contacts_scheduled_far_ahead_can_only_make_the_answer_stricter():
    """With k kept and contacts scheduled past the window, the oldest kept contact decides for the rest."""
    space = ActionSpace(("email",), ("promo",), (None,))
    rules = ContactRules(quiet_hours={}, caps=(Cap(None, 2, 24.0),), min_gap_h=0.0)
    now = np.array([T0, T0])
    recent = RecentContacts.empty(2, 1, k=3)
    for offsets in ([-1.0, -30.0], [-2.0, -40.0], [30.0, 30.0], [31.0, 31.0]):
        recent.record(np.array([0, 1]), np.array([0, 0]), now + offsets)
    # kept: row 0 [+31, +30, -1] (-2 dropped), row 1 [+31, +30, -30]; two within 24 h of now only in row 0
    assert eligibility(space, rules, recent, now=now, tz_offset=0.0, consent=np.array([True]))[:, 1].tolist() == [
        False,
        True,
    ]
    small = RecentContacts.empty(1, 1, k=2)
    for offset in (-30.0, -40.0, 30.0, 31.0):
        small.record(np.array([0]), np.array([0]), T0 + np.array([offset]))
    # kept [+31, +30]: the dropped -30 and -40 could have been inside, so the send is refused
    assert not eligibility(space, rules, small, now=T0, tz_offset=0.0, consent=np.array([True]))[0, 1]


def test_record_rejects_what_would_corrupt_the_history():
    recent = RecentContacts.empty(3, 2)
    with pytest.raises(ValueError, match="^rows: must be unique"):
        recent.record(np.array([1, 1]), np.array([0, 1]), np.array([T0, T0]))
    with pytest.raises(ValueError, match="^rows:"):
        recent.record(np.array([3]), np.array([0]), np.array([T0]))
    with pytest.raises(ValueError, match="^channels:"):
        recent.record(np.array([0]), np.array([2]), np.array([T0]))
    with pytest.raises(ValueError, match="^when:"):
        recent.record(np.array([0]), np.array([0]), np.array([np.nan]))
    assert (recent.any_times == NEVER).all()


def test_recent_contacts_from_arrays_are_sorted_and_checked():
    times = np.full((1, 2, 3), NEVER)
    times[0, 0] = [T0 - 5, T0, NEVER]
    recent = RecentContacts(times, np.array([[T0 - 5, NEVER, T0]]))
    assert recent.times[0, 0].tolist() == [T0, T0 - 5, NEVER]
    assert recent.any_times[0].tolist() == [T0, T0 - 5, NEVER]
    with pytest.raises(ValueError, match="^recent:"):
        RecentContacts(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="^recent:"):
        RecentContacts(np.full((1, 2, 3), np.nan), np.zeros((1, 3)))


# ---------------------------------------------------------------------------- time zones and quiet hours
@pytest.mark.parametrize(
    ("tz", "utc_hour", "channel", "slot", "quiet"),
    [
        (8.0, 14.0, "sms", None, True),  # 22:00 local
        (8.0, 14.0, "sms", 9, False),  # sends at 09:00 local tomorrow
        (8.0, 14.0, "sms", 19, False),  # 19:00 local tomorrow
        (8.0, 14.0, "email", None, False),  # email has no quiet hours
        (-5.0, 2.0, "push", None, True),  # 21:00 local: start is inclusive
        (-5.0, 1.75, "push", None, False),  # 20:45 local
        (-5.0, 12.75, "push", None, True),  # 07:45 local
        (-5.0, 13.0, "push", None, False),  # 08:00 local: end is exclusive
        (5.75, 18.0, "web_push", None, True),  # 23:45 local (Nepal)
        (5.75, 2.5, "web_push", None, False),  # 08:15 local
        (-12.0, 9.0, "in_app", None, True),  # 21:00 the previous day
        (14.0, 7.0, "in_app", None, True),  # 21:00 local
        (14.0, 18.0, "in_app", None, False),  # 08:00 the next day
    ],
)
def test_quiet_hours_wrap_past_midnight_in_every_time_zone(tz, utc_hour, channel, slot, quiet):
    rules = ContactRules(caps=(), min_gap_h=0.0)
    recent = RecentContacts.empty(1, SPACE.n_channels)
    mask, why = eligibility(
        SPACE, rules, recent, now=T0 + 24.0 * 3 + utc_hour, tz_offset=tz, consent=ALL_IN, reasons=True
    )
    a = SPACE.index(channel, "promo", slot)
    assert mask[0, a] == (not quiet)
    assert why[0, a] == (Reason.QUIET_HOURS if quiet else 0)


def test_quiet_hours_that_do_not_wrap():
    rules = ContactRules(quiet_hours={"email": (12, 14)}, caps=(), min_gap_h=0.0)
    recent = RecentContacts.empty(4, SPACE.n_channels)
    now = T0 + np.array([11.75, 12.0, 13.75, 14.0])
    mask = eligibility(SPACE, rules, recent, now=now, tz_offset=0.0, consent=ALL_IN[0])
    assert mask[:, SPACE.index("email", "promo", None)].tolist() == [True, False, False, True]
    assert mask[:, SPACE.index("email", "promo", 13)].tolist() == [False] * 4


def test_send_time_is_the_next_occurrence_of_the_local_hour():
    space = ActionSpace(("sms",), ("promo",), (None, 9, 22, 13))
    now = np.array([T0 + 14.0, T0 + 14.0, T0 + 3.5])
    tz = np.array([8.0, -5.0, 5.75])  # local 22:00, 09:00 and 09:15
    waits = send_time(space, now, tz) - now[:, None]
    assert waits.tolist() == [
        [0.0, 11.0, 0.0, 15.0],  # on the hour: 22:00 sends now
        [0.0, 0.0, 13.0, 4.0],
        [0.0, 23.75, 12.75, 3.75],
    ]


# ---------------------------------------------------------------------------- budgets and restrictions
def test_budget_and_restrictions_are_per_channel():
    space = ActionSpace(("email", "sms", "direct_mail"), ("promo",), (None,))
    rules = ContactRules(quiet_hours={}, caps=(), min_gap_h=0.0)
    recent = RecentContacts.empty(2, 3)
    mask, why = eligibility(
        space,
        rules,
        recent,
        now=T0 + 12,
        tz_offset=0.0,
        consent=np.ones((2, 3), bool),
        allowed=np.array([[True, True, True], [False, True, True]]),
        budget_left=np.array([np.inf, 0.05, 0.5]),
        cost=np.array([0.0, 0.08, 0.9]),
        reasons=True,
    )
    assert mask.tolist() == [[True, True, False, False], [True, False, False, False]]
    assert why[1].tolist() == [0, Reason.RESTRICTED, Reason.BUDGET, Reason.BUDGET]


# ---------------------------------------------------------------------------- explaining a decision
def test_explain_names_each_ineligible_action_and_its_reasons():
    space = ActionSpace(("email", "sms"), ("promo",), (None, 9))
    rules = ContactRules()
    recent = RecentContacts.empty(1, 2)
    recent.record(np.array([0]), np.array([0]), np.array([T0 + 20.0]))
    consent = np.array([[True, False]])
    _, why = eligibility(space, rules, recent, now=T0 + 22.0, tz_offset=0.0, consent=consent, reasons=True)
    assert explain(space, why[0]) == {
        "email/promo/now": ["MIN_GAP"],
        "sms/promo/now": ["CONSENT", "QUIET_HOURS", "MIN_GAP"],
        "sms/promo/09h": ["CONSENT"],
    }
    assert reason_names(Reason.CONSENT | Reason.BUDGET) == ["CONSENT", "BUDGET"]
    assert reason_names(0) == []


def test_channel_slot_reasons_is_the_mask_before_it_is_copied_to_contents():
    recent = RecentContacts.empty(2, SPACE.n_channels)
    kwargs = dict(
        now=np.array([T0 + 23, T0 + 12]), tz_offset=np.array([0.0, 0.0]), consent=np.ones((2, SPACE.n_channels), bool)
    )
    pairs = channel_slot_reasons(SPACE, ContactRules(), recent, **kwargs)
    _, why = eligibility(SPACE, ContactRules(), recent, reasons=True, **kwargs)
    assert pairs.shape == (2, SPACE.n_channels, SPACE.n_slots)
    assert np.array_equal(why[:, 1:], pairs[:, SPACE.channel_of[1:], SPACE.slot_of[1:]])


# ---------------------------------------------------------------------------- malformed requests
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"now": np.array([np.nan, T0])}, "now"),
        ({"now": np.array([T0, T0, T0])}, "now"),
        ({"tz_offset": np.array([0.0, 24.0])}, "tz_offset"),
        ({"consent": np.ones((2, 3), bool)}, "consent"),
        ({"consent": np.ones((2, 7), int)}, "consent"),
        ({"allowed": np.ones((7,), float)}, "allowed"),
        ({"budget_left": np.ones(7)}, "budget_left"),  # without cost
        ({"budget_left": np.full(7, np.nan), "cost": np.zeros(7)}, "budget_left"),
        ({"budget_left": np.ones(7), "cost": np.full(7, -1.0)}, "cost"),
        ({"budget_left": np.full(7, "1"), "cost": np.zeros(7)}, "budget_left"),
    ],
)
def test_a_malformed_request_raises_naming_the_argument(change, field):
    kwargs = dict(now=np.array([T0, T0]), tz_offset=np.zeros(2), consent=np.ones((2, 7), bool)) | change
    with pytest.raises(ValueError, match=f"^{field}:"):
        eligibility(SPACE, ContactRules(), RecentContacts.empty(2, 7), **kwargs)


def test_history_must_fit_the_space_and_the_caps():
    kwargs = dict(now=T0, tz_offset=0.0, consent=ALL_IN)
    with pytest.raises(ValueError, match="^recent:"):
        eligibility(SPACE, ContactRules(), RecentContacts.empty(1, 3), **kwargs)
    with pytest.raises(ValueError, match=r"^caps\[8\]\.max_count: 8 exceeds"):
        eligibility(SPACE, ContactRules(), RecentContacts.empty(1, 7, k=4), **kwargs)


# ---------------------------------------------------------------------------- rules: validation and loading
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"caps": (Cap("email", 3, 9.0), Cap("sms", 0, 7.0))}, "caps[1].max_count: must be a positive integer, got 0"),
        ({"caps": (Cap("sms", 2.5, 168.0),)}, "caps[0].max_count: must be a positive integer"),
        ({"caps": (Cap("sms", True, 168.0),)}, "caps[0].max_count: must be a positive integer"),
        ({"caps": (Cap("fax", 1, 24.0),)}, "caps[0].channel: unknown channel 'fax'"),
        ({"caps": (Cap("sms", 1, 0.0),)}, "caps[0].window_h: must be a positive number of hours"),
        ({"caps": (Cap("sms", 1, float("inf")),)}, "caps[0].window_h:"),
        ({"caps": ({"channel": "sms"},)}, "caps[0]: must be a Cap"),
        ({"caps": Cap("sms", 1, 24.0)}, "caps: must be a sequence"),
        ({"quiet_hours": {"fax": (21, 8)}}, "quiet_hours.fax: unknown channel"),
        ({"quiet_hours": {"sms": (21, 24)}}, "quiet_hours.sms: must be a pair (start, end) of hours in 0..23"),
        ({"quiet_hours": {"sms": (21,)}}, "quiet_hours.sms: must be a pair"),
        ({"quiet_hours": {"sms": (21.5, 8)}}, "quiet_hours.sms: must be a pair"),
        ({"quiet_hours": {"sms": (8, 8)}}, "quiet_hours.sms: start and end must differ"),
        ({"quiet_hours": [("sms", (21, 8))]}, "quiet_hours: must map channel"),
        ({"min_gap_h": -1.0}, "min_gap_h: must be a number of hours >= 0"),
        ({"min_gap_h": float("nan")}, "min_gap_h:"),
    ],
)
def test_invalid_rules_raise_naming_the_field(kwargs, message):
    with pytest.raises(ValueError) as err:
        ContactRules(**kwargs)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"quiet_hour": {}}, "quiet_hour: unknown field"),
        ({"quiet_hours": {"fax": [21, 8]}}, "quiet_hours.fax: unknown channel"),
        ({"quiet_hours": [21, 8]}, "quiet_hours: must be a table"),
        ({"caps": [{"channel": "sms", "max_count": 2, "window_h": 24, "per": "day"}]}, "caps[0].per: unknown field"),
        ({"caps": [{"channel": "sms", "max_count": 2}]}, "caps[0].window_h: missing"),
        (
            {"caps": [{"max_count": 2, "window_h": 24}, {"channel": "fax", "max_count": 1, "window_h": 1}]},
            "caps[1].channel: unknown channel 'fax'",
        ),
        ({"caps": [{"max_count": 2, "window_h": 24}, 3]}, "caps[1]: must be a table"),
        ({"caps": {"sms": 2}}, "caps: must be a list"),
        ({"min_gap_h": "4h"}, "min_gap_h: must be a number"),
        ([1, 2], "rules: must be a table"),
    ],
)
def test_from_dict_rejects_unknown_and_bad_fields_by_name(data, message):
    with pytest.raises(ValueError) as err:
        ContactRules.from_dict(data)
    assert str(err.value).startswith(message)


def test_rules_load_from_toml_and_yaml_and_round_trip():
    toml = """
min_gap_h = 6
caps = [
  { channel = "sms", max_count = 1, window_h = 168 },
  { max_count = 3, window_h = 24 },   # all channels together
]
[quiet_hours]
sms = [22, 7]
email = [0, 6]
"""
    rules = ContactRules.from_dict(tomllib.loads(toml))
    assert rules == ContactRules({"sms": (22, 7), "email": (0, 6)}, (Cap("sms", 1, 168.0), Cap(None, 3, 24.0)), 6.0)
    assert ContactRules.from_dict(yaml.safe_load(yaml.safe_dump(rules.to_dict()))) == rules
    assert ContactRules.from_dict(ContactRules().to_dict()) == ContactRules()
    assert ContactRules.from_dict({}) == ContactRules()
    yaml_null = ContactRules.from_dict({"caps": [{"channel": None, "max_count": 1, "window_h": 2}]})
    assert yaml_null.caps == (Cap(None, 1, 2.0),)


def test_default_rules_are_the_documented_ones():
    rules = ContactRules()
    assert rules.quiet_hours == DEFAULT_QUIET_HOURS == {ch: (21, 8) for ch in ("sms", "push", "in_app", "web_push")}
    caps = {(cap.channel, cap.window_h): cap.max_count for cap in rules.caps}
    assert caps == {
        ("email", 168.0): 3,
        ("sms", 168.0): 2,
        ("push", 24.0): 1,
        ("web_push", 24.0): 1,
        ("in_app", 24.0): 2,
        ("direct_mail", 720.0): 1,
        ("social_ad", 168.0): 3,
        (None, 24.0): 2,
        (None, 168.0): 8,
    }
    assert rules.caps == DEFAULT_CAPS and rules.min_gap_h == 4.0
    assert max(cap.max_count for cap in rules.caps) <= K  # the default history is long enough
    assert set(rules.quiet_hours) <= set(CHANNELS)


# ---------------------------------------------------------------------------- caps per offer
def offer_reference(space, caps, contacts, now, tz):
    """(N, A) OFFER bits, one customer, action and cap at a time; ``contacts[i]`` lists (send time, offer)."""
    out = np.zeros((len(contacts), space.n_actions), np.uint8)
    for i in range(len(contacts)):
        local = (now[i] + tz[i]) % 24.0
        for a in range(1, space.n_actions):
            act = space.decode(a)
            send = now[i] if act.send_hour is None else now[i] + (act.send_hour - local) % 24.0
            offer = space.contents.index(act.content)
            for cap in caps:
                near = sum(1 for t, o in contacts[i] if o == cap.offer and abs(t - send) < cap.window_h)
                if cap.offer == offer and near >= cap.max_count:
                    out[i, a] = Reason.OFFER
    return out


@settings(max_examples=40, deadline=None)
@given(case=cases(max_contacts=K - 1, ahead_h=30), data=st.data())
def test_offer_caps_equal_the_reference_and_leave_the_other_rules_alone(case, data):
    space, n = case["space"], len(case["contacts"])
    caps = tuple(
        data.draw(
            st.lists(
                st.builds(OfferCap, st.integers(0, space.n_contents - 1), st.integers(1, 3), WINDOW),
                min_size=1,
                max_size=3,
            )
        )
    )
    offers = [[data.draw(st.integers(0, space.n_contents - 1)) for _ in lst] for lst in case["contacts"]]
    sized = RecentContacts.for_rules(n, space.n_channels, case["rules"], caps)  # k_offer: the largest cap
    exact = RecentContacts.empty(n, space.n_channels, K, offers=sized.offers, k_offer=K)  # keeps every contact
    for recent in (sized, exact):
        recent.times, recent.any_times = np.full((n, space.n_channels, K), NEVER), np.full((n, K), NEVER)
        for j in range(max(map(len, offers), default=0)):  # one contact per customer per call, as a log replays
            rows = np.array([i for i, lst in enumerate(offers) if len(lst) > j], np.int64)
            recent.record(
                rows,
                np.array([case["contacts"][i][j][1] for i in rows]),
                np.array([case["contacts"][i][j][0] for i in rows]),
                offers=np.array([offers[i][j] for i in rows]),
            )
    kwargs = {k: case[k] for k in ("allowed", "budget_left", "cost") if k in case}
    kwargs |= dict(now=case["now"], tz_offset=case["tz"], consent=case["consent"], reasons=True)
    _, plain = eligibility(space, case["rules"], exact, **kwargs)
    pairs = [
        [(t, o) for (t, _), o in zip(lst, offs, strict=True)]
        for lst, offs in zip(case["contacts"], offers, strict=True)
    ]
    ref = plain | offer_reference(space, caps, pairs, case["now"], case["tz"])
    mask, why = eligibility(space, case["rules"], exact, offer_caps=caps, **kwargs)
    assert np.array_equal(why, ref) and np.array_equal(mask, why == 0) and mask[:, NO_CONTACT].all()
    mask, why = eligibility(space, case["rules"], sized, offer_caps=caps, **kwargs)  # fewer kept: never laxer
    assert not (mask & (ref != 0)).any() and np.array_equal(why & ~np.uint8(Reason.OFFER), plain)


def test_an_offer_cap_holds_at_its_window_edge_on_every_channel():
    space = ActionSpace(("email", "sms"), ("promo", "welcome"), (None, 19))
    caps = (OfferCap(0, 1, 720.0),)
    rules = ContactRules(quiet_hours={}, caps=(), min_gap_h=0.0)
    recent = RecentContacts.for_rules(3, 2, rules, caps)
    assert recent.offers == (0,) and recent.k_offer == 1 and recent.offer_times.shape == (3, 1, 1)
    now = np.full(3, T0 + 12.0)
    recent.record(
        np.array([0, 1, 2]), np.array([1, 1, 1]), now - np.array([720.0, 719.75, 1.0]), offers=np.array([0, 0, 1])
    )
    mask, why = eligibility(
        space, rules, recent, now=now, tz_offset=0.0, consent=np.ones(2, bool), reasons=True, offer_caps=caps
    )
    promo, at_19h = space.content_of == 0, space.slot_of == 1
    assert mask[0].all()  # exactly 720 h ago: the window is half-open
    assert (why[1, promo & ~at_19h] == Reason.OFFER).all()  # on both channels, though the contact was by sms
    assert (why[1, promo & at_19h] == 0).all()  # 19:00 sends 7 h later, 726.75 h after the contact
    assert (why[1, ~promo] == 0).all() and mask[2].all()  # welcome has no cap


def test_recording_with_offers_keeps_old_callers_working():
    rules = ContactRules()
    old = RecentContacts.for_rules(2, SPACE.n_channels, rules)
    assert old.offer_times is None and old.offers == () and old.k_offer == 0
    old.record(np.array([0]), np.array([1]), np.array([T0]))  # as before
    old.record(np.array([1]), np.array([1]), np.array([T0]), offers=np.array([3]))  # an offer it does not keep
    assert old.last_time(1).tolist() == [T0, T0]
    kwargs = dict(now=T0 + 30.0, tz_offset=0.0, consent=np.ones((2, SPACE.n_channels), bool))
    with pytest.raises(ValueError, match="^recent: keeps no contacts of offer 1"):
        eligibility(SPACE, rules, old, offer_caps=(OfferCap(1, 1, 24.0),), **kwargs)

    caps = (OfferCap(1, 2, 240.0), OfferCap(5, 1, 24.0), OfferCap(1, 1, 24.0))
    recent = RecentContacts.for_rules(2, SPACE.n_channels, rules, caps)
    assert recent.offers == (1, 5) and recent.k_offer == 2
    with pytest.raises(ValueError, match="^offers: needed"):
        recent.record(np.array([0]), np.array([1]), np.array([T0]))
    with pytest.raises(ValueError, match="^offers:"):
        recent.record(np.array([0]), np.array([1]), np.array([T0]), offers=np.array([-1]))
    recent.record(np.array([0, 1]), np.array([1, 1]), np.array([T0, T0]), offers=np.array([1, 2]))
    recent.record_decisions(
        SPACE, np.array([SPACE.index("email", "promo", None), 0]), send_time(SPACE, np.full(2, T0 + 1.0), np.zeros(2))
    )
    assert recent.offer_times[:, 0].tolist() == [[T0 + 1.0, T0], [NEVER, NEVER]]  # offer 2 is not kept
    part = recent.take(np.array([0]))
    assert part.offers == recent.offers and part.offer_times.tolist() == recent.offer_times[:1].tolist()
    bits = eligibility(
        SPACE,
        rules,
        part,
        offer_caps=caps,
        reasons=True,
        now=T0 + 30.0,
        tz_offset=0.0,
        consent=np.ones((1, SPACE.n_channels), bool),
    )[1]
    assert (bits[0, SPACE.content_of == 1] & Reason.OFFER).all()  # two promo within 240 h
    with pytest.raises(ValueError, match=r"^offer_caps\[0\].max_count: 3 exceeds the 2"):
        eligibility(SPACE, rules, recent, offer_caps=(OfferCap(1, 3, 24.0),), **kwargs)
    with pytest.raises(ValueError, match=r"^offer_caps\[0\].offer: 8 is not a content index"):
        eligibility(SPACE, rules, recent, offer_caps=(OfferCap(8, 1, 24.0),), **kwargs)
    recent.reset_rows(np.array([0]))
    assert (recent.offer_times[0] == NEVER).all()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(offer=-1, max_count=1, window_h=1.0), "offer"),
        (dict(offer=0, max_count=0, window_h=1.0), "max_count"),
        (dict(offer=0, max_count=1, window_h=float("inf")), "window_h"),
        (dict(offer=1.5, max_count=1, window_h=1.0), "offer"),
    ],
)
def test_an_invalid_offer_cap_raises_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        OfferCap(**kwargs)


def test_recent_contacts_with_offers_from_arrays_are_checked():
    times, any_times = np.full((2, 1, 1), NEVER), np.full((2, 1), NEVER)
    recent = RecentContacts(times, any_times, np.array([[[T0, T0 + 1.0]], [[NEVER, NEVER]]]), (3,))
    assert recent.offer_times[0, 0].tolist() == [T0 + 1.0, T0] and recent.k_offer == 2
    with pytest.raises(ValueError, match="^offer_times: expected shape"):
        RecentContacts(times, any_times, np.zeros((2, 2, 1)), (3,))
    with pytest.raises(ValueError, match="^offer_times: missing"):
        RecentContacts(times, any_times, None, (3,))
    with pytest.raises(ValueError, match="^offers:"):
        RecentContacts(times, any_times, np.zeros((2, 2, 1)), (3, 3))


# ---------------------------------------------------------------------------- counts across customers
DAY_SPACE = ActionSpace(("email", "sms"), ("promo", "welcome"), (None, 6))  # at 12:00 UTC, 06:00 is tomorrow


def day_batch(n: int, eligible: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Reasons of ``n`` customers (0 where ``eligible``) and their send times at 12:00 UTC, tz 0."""
    bits = np.zeros((n, DAY_SPACE.n_actions), np.uint8)
    if eligible is not None:
        bits[~eligible] = Reason.CONSENT
        bits[:, NO_CONTACT] = 0
    return bits, send_time(DAY_SPACE, np.full(n, T0 + 12.0), np.zeros(n))


def test_an_offer_budget_goes_to_the_first_rows_that_can_take_it():
    able = np.ones((5, DAY_SPACE.n_actions), bool)
    able[1, DAY_SPACE.content_of == 0] = False  # row 1 cannot take promo anyway: it uses none of the budget
    bits, send = day_batch(5, able)
    limit_to_remaining(DAY_SPACE, bits, send, offer_left=np.array([2.0, np.inf]))
    promo = DAY_SPACE.content_of == 0
    assert (bits[[0, 2]][:, promo] == 0).all()
    assert (bits[[3, 4]][:, promo] == Reason.BUDGET).all()
    assert (bits[1, promo] == Reason.CONSENT).all()  # takes none of the budget: row 2 gets the second
    assert (bits[:, DAY_SPACE.content_of == 1] == 0).all() and (bits[:, NO_CONTACT] == 0).all()
    for left in (0.0, -3.0):  # spent, or overspent before the budget was lowered
        bits, send = day_batch(3)
        limit_to_remaining(DAY_SPACE, bits, send, offer_left=np.array([left, 1.0]))
        assert (bits[:, promo] == Reason.BUDGET).all() and (bits[1:, DAY_SPACE.content_of == 1] == Reason.BUDGET).all()
        assert (bits[0, DAY_SPACE.content_of == 1] == 0).all()


def test_a_channels_capacity_counts_each_send_day_apart():
    bits, send = day_batch(4)
    left = np.array([[np.inf, np.inf], [1.0, 2.0]])  # sms: one left today, two tomorrow
    limit_to_remaining(DAY_SPACE, bits, send, channel_left=left, first_day=int(T0 // 24))
    sms = DAY_SPACE.channel_of == 1
    today, tomorrow = sms & (DAY_SPACE.slot_of == 0), sms & (DAY_SPACE.slot_of == 1)
    assert (bits[0, sms] == 0).all() and (bits[1:, today] == Reason.BUDGET).all()
    assert (bits[1, tomorrow] == 0).all() and (bits[2:, tomorrow] == Reason.BUDGET).all()
    assert (bits[:, DAY_SPACE.channel_of == 0] == 0).all()
    with pytest.raises(ValueError, match="^channel_left: counts sends on UTC days"):
        limit_to_remaining(DAY_SPACE, *day_batch(1), channel_left=left[:, :1], first_day=int(T0 // 24))


def test_whatever_a_policy_chooses_a_batch_takes_no_more_than_is_left():
    rng = np.random.default_rng(7)
    day0 = int(T0 // 24)
    for _ in range(20):
        n = int(rng.integers(1, 40))
        bits, send = day_batch(n, rng.random((n, DAY_SPACE.n_actions)) < 0.6)
        offer_left = rng.choice([0.0, 1.0, 3.0, np.inf], DAY_SPACE.n_contents)
        channel_left = rng.choice([0.0, 2.0, 5.0, np.inf], (DAY_SPACE.n_channels, 2))
        limit_to_remaining(DAY_SPACE, bits, send, offer_left=offer_left, channel_left=channel_left, first_day=day0)
        assert (bits[:, NO_CONTACT] == 0).all()
        for _ in range(5):  # any choice among the eligible actions
            chosen = np.array([rng.choice(np.flatnonzero(row == 0)) for row in bits])
            contact = chosen != NO_CONTACT
            a, rows = chosen[contact], np.flatnonzero(contact)
            assert (np.bincount(DAY_SPACE.content_of[a], minlength=2) <= offer_left).all()
            day = np.floor(send[rows, DAY_SPACE.slot_of[a]] / 24).astype(int) - day0
            per_day = np.zeros((2, 2))
            np.add.at(per_day, (DAY_SPACE.channel_of[a], day), 1)
            assert (per_day <= channel_left).all()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(offer_left=np.ones(3)), "offer_left"),
        (dict(offer_left=np.array([1.0, np.nan])), "offer_left"),
        (dict(channel_left=np.ones(2)), "channel_left"),
        (dict(channel_left=np.ones((3, 2))), "channel_left"),
        (dict(channel_left=np.full((2, 2), -np.inf)), "channel_left"),
    ],
)
def test_remaining_counts_of_the_wrong_shape_raise_naming_the_argument(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        limit_to_remaining(DAY_SPACE, *day_batch(2), **kwargs)
    with pytest.raises(ValueError, match="^send:"):
        limit_to_remaining(DAY_SPACE, day_batch(2)[0], np.zeros((3, 2)), offer_left=np.ones(2))
