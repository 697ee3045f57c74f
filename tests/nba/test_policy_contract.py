"""The policy contract: one battery of checks run on every policy in :data:`nba.policies.POLICIES`.

Like scikit-learn's ``check_estimator``, every check is parametrised over the registry, so a policy
added later is checked without touching this file. Each policy is checked untrained and, if it is
a learner (:data:`nba.policies.LEARNERS`), trained as well: fed logged batches drawn from the
bandit simulator under uniform-random logging (``update``), or, for an offline learner (one with a
``fit`` method), fitted on the transitions of those batches. :data:`SMALL_PARAMS` keeps the models
small; a policy that needs other settings to be tested quickly gets an entry there.

The contract (:mod:`nba.policies.base`):

1. ``probabilities`` is a distribution over actions, zero off the mask;
2. the propensity ``act`` reports is the probability the chosen action was drawn with;
3. the same seed gives the same decisions;
4. save / load (JSON, NumPy, LightGBM text, never pickle) gives back the same policy;
5. a batch of 10,000 decides exactly as 10,000 batches of one, from the same generator;
6. bad input raises ``ValueError`` whose message starts with the field's name;
7. ``update`` returns the policy, and learners learn.

The learners that score actions by their features (:data:`nba.policies.CATALOGUE`, :mod:`nba.catalogue`)
are checked twice more on the structured space: trained on a catalogue (state ``catalogue``), and the
same moved to a changed catalogue, an offer retired and a new one added (``catalogue_moved``); and on a
plain K-action catalogue space (kind ``catalogue``, no no-contact action).
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pytest

from envs.scenario import Scenario
from envs.simulation import Simulation
from nba import serialization
from nba.actions import ActionSpace
from nba.catalogue import Catalogue
from nba.policies import (
    CATALOGUE,
    LEARNERS,
    PLAIN,
    POLICIES,
    SEGMENTED,
    Decisions,
    Explore,
    FunnelEvents,
    Policy,
    act,
    create,
)
from nba.policies.base import uniform

PURPOSE = "test/nba/policy_contract"  # this module's customers (envs.random)

SCENARIO = Scenario.default()
SPACE = SCENARIO.action_space
SEGMENTS = tuple(SCENARIO.segments)
DIM = SCENARIO.feature_spec.dim
A = SPACE.n_actions

# Small settings that keep the battery fast but still fit the models for real: with batches of
# 2,000 the LightGBM bandits fit after the first batch and refit after the second; fitted-Q keeps
# the actions logged 10 times or more as candidates. One LightGBM thread: no OpenMP team to
# wait on when the test machine is busy.
_LGBM = {"min_samples": 1000, "num_boost_round": 20, "min_data_in_leaf": 20, "threads": 1}
SMALL_PARAMS: dict[str, dict] = {
    "lgbm_egreedy": _LGBM,
    "lgbm_squarecb": _LGBM,
    "lgbm_funnel": _LGBM,
    "fqi": {"iterations": 2, "num_boost_round": 10, "min_data_in_leaf": 20, "min_support": 10, "threads": 1},
    "two_stage": {
        "num_boost_round": 10,
        "value_rounds": 10,
        "change_rounds": 10,
        "min_data_in_leaf": 20,
        "min_support": 10,
        "threads": 1,
    },
    # 2,000 uniform rows leave ~2 per (bucket, channel x content): n_min 2 keeps some actions supported
    "spibb": {"learner_params": _LGBM, "n_min": 2},
}
BATCH = 2000  # rows per logged batch
N_TRAIN = 2  # logged batches a trained learner has seen
N_CONTEXTS = 10_000  # real contexts for acting
N_SMALL = 200  # contexts for the checks that need no large batch
N_ONE_BY_ONE = 100  # rows of the 10,000 also decided one at a time


# ----------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Batch:
    """A logged batch: contexts, the logger's actions, realised rewards and the logger's propensities,
    and what came next (for offline learners): the next contexts and masks, and which rows ended."""

    X: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    propensities: np.ndarray
    X_next: np.ndarray
    mask_next: np.ndarray
    terminated: np.ndarray
    opened: np.ndarray  # the funnel's events, for the learners that take them (FunnelEvents)
    clicked: np.ndarray
    converted: np.ndarray
    value: np.ndarray

    def args(self) -> tuple[np.ndarray, ...]:
        """The positional arguments of ``Policy.update``."""
        return self.X, self.actions, self.rewards, self.propensities

    def extra(self, policy: Policy) -> dict:
        """The keyword arguments of ``Policy.update``: the funnel's events for learners that take them."""
        if not getattr(policy, "learns_from_events", False):
            return {}
        return {"events": FunnelEvents(self.opened, self.clicked, self.converted, self.value)}

    def head(self, n: int) -> Batch:
        return Batch(*(getattr(self, f.name)[:n] for f in fields(self)))


def _read_only(*arrays: np.ndarray) -> None:
    # policies must not write into the caller's arrays: a write raises instead of passing silently
    for a in arrays:
        a.setflags(write=False)


@functools.cache
def logged_batches() -> tuple[Batch, ...]:
    """Batches logged under uniform-random exploration on the bandit view of the simulator."""
    sim = Simulation(SCENARIO, 11, BATCH, decision_hour=None, replace_rate=1 / 30, penalties=True, purpose=PURPOSE)
    logger = create("uniform_random", SPACE)
    rng = np.random.default_rng(12)
    out = []
    X, mask = np.ascontiguousarray(sim.observe()), sim.action_mask()
    for _ in range(N_TRAIN + 2):  # two spare batches for the update checks
        d = act(logger, X, mask, rng)
        res = sim.step(d.actions)
        X_next, mask_next = np.ascontiguousarray(sim.observe()), sim.action_mask()
        # a replaced row's next context is another customer's: no future value to bootstrap from
        o = res.outcome
        batch = Batch(
            X,
            d.actions,
            np.asarray(res.reward, np.float64),
            d.propensities,
            X_next,
            mask_next,
            res.replaced.copy(),
            o.seen.copy(),
            o.clicked.copy(),
            o.converted.copy(),
            np.where(o.converted, o.revenue, 0.0),
        )
        _read_only(*(getattr(batch, f.name) for f in fields(batch)))
        out.append(batch)
        X, mask = X_next, mask_next
    return tuple(out)


@functools.cache
def contexts() -> tuple[np.ndarray, np.ndarray]:
    """(N_CONTEXTS, d) real observations and their (N_CONTEXTS, A) eligibility masks.

    A stream of customers a few decisions in, so histories, carts and consents vary.
    """
    sim = Simulation(SCENARIO, 21, N_CONTEXTS, decision_hour=None, replace_rate=1 / 30, penalties=True, purpose=PURPOSE)
    logger = create("uniform_random", SPACE)
    rng = np.random.default_rng(22)
    for _ in range(3):
        sim.step(act(logger, np.ascontiguousarray(sim.observe()), sim.action_mask(), rng).actions)
    X, mask = np.ascontiguousarray(sim.observe()), sim.action_mask()
    _read_only(X, mask)
    return X, mask


def thinned(mask: np.ndarray, seed: int, keep: float = 0.3) -> np.ndarray:
    """``mask`` with extra random False entries; no contact stays eligible, and every 7th row keeps
    nothing else (a customer who may only be left alone)."""
    out = mask & (np.random.default_rng(seed).random(mask.shape) < keep)
    out[:, 0] = True
    out[::7, 1:] = False
    _read_only(out)
    return out


def small_contexts(masks: str = "real") -> tuple[np.ndarray, np.ndarray]:
    X, mask = contexts()
    X, mask = X[:N_SMALL], mask[:N_SMALL]
    return X, (mask if masks == "real" else thinned(mask, 31))


# ----------------------------------------------------------------------------- policies
# The scenario's contents as a catalogue: each described by its discount and a goal; the changed
# catalogue retires "promo" and adds an offer whose goal no offer had (it encodes as no goal).
GOALS = {
    "welcome": "grow",
    "promo": "sell",
    "product_reco": "sell",
    "cart_reminder": "sell",
    "educational": "grow",
    "loyalty": "keep",
    "winback": "keep",
    "cross_sell": "sell",
}
OFFER_FEATURES = {
    name: {"discount": c.discount, "goal": GOALS.get(name, "grow")} for name, c in SCENARIO.contents.items()
}
STRUCTURED_CATALOGUE = Catalogue(SPACE, OFFER_FEATURES)
MOVED_CATALOGUE = Catalogue(
    ActionSpace(SPACE.channels, tuple(c for c in SPACE.contents if c != "promo") + ("flash_sale",), SPACE.send_slots),
    {**{k: v for k, v in OFFER_FEATURES.items() if k != "promo"}, "flash_sale": {"discount": 0.3, "goal": "flash"}},
)


def new_policy(name: str, catalogue: Catalogue | None = None) -> Policy:
    extra = {} if catalogue is None else {"catalogue": catalogue}
    return create(name, SPACE, SEGMENTS, dim=DIM, **SMALL_PARAMS.get(name, {}), **extra)


def is_offline(name: str) -> bool:
    """Offline learners learn with ``fit(X, actions, rewards, X_next, mask_next, terminated)`` on
    logged transitions, and their ``update`` ignores logged batches by design."""
    return callable(getattr(POLICIES[name], "fit", None))


ONLINE_LEARNERS = tuple(name for name in LEARNERS if not is_offline(name))


def train(policy: Policy, batches: tuple[Batch, ...]) -> None:
    """Feed ``batches`` to ``policy``: one ``update`` each, or one ``fit`` on them all (offline)."""
    if is_offline(policy.name):
        joined = [np.concatenate([getattr(b, f.name) for b in batches]) for f in fields(Batch)]
        X, actions, rewards, _, X_next, mask_next, terminated = joined[:7]
        policy.fit(X, actions, rewards, X_next, mask_next, terminated)
    else:
        for batch in batches:
            policy.update(*batch.args(), **batch.extra(policy))


@functools.cache
def pristine(name: str, state: str) -> Policy:
    """The policy new, or (learners) trained on N_TRAIN logged batches: built once, never mutated.
    ``catalogue``: trained on :data:`STRUCTURED_CATALOGUE`; ``catalogue_moved``: then moved to
    :data:`MOVED_CATALOGUE` (the same number of actions, so the contexts' masks still fit)."""
    policy = new_policy(name, STRUCTURED_CATALOGUE if state.startswith("catalogue") else None)
    if state != "untrained":
        train(policy, logged_batches()[:N_TRAIN])
    if state == "catalogue_moved":
        policy = policy.with_catalogue(MOVED_CATALOGUE)
    return policy


def make(name: str, state: str) -> Policy:
    """A policy of its own for one test (a deep copy: cheaper than building a linear learner anew)."""
    return copy.deepcopy(pristine(name, state))


STATES = ("untrained", "trained")
CATALOGUE_STATES = ("catalogue", "catalogue_moved")  # the policies of CATALOGUE only


def cases(names=None) -> list:
    """(name, state) for every policy untrained and every learner trained, and the catalogue policies on a
    catalogue before and after it changes, as pytest params."""
    out = []
    for name in POLICIES if names is None else names:
        for state in STATES + CATALOGUE_STATES:
            if state == "trained" and name not in LEARNERS or state in CATALOGUE_STATES and name not in CATALOGUE:
                continue
            out.append(pytest.param(name, state, id=f"{name}-{state}"))
    return out


def assert_same_decisions(a: Decisions, b: Decisions) -> None:
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_array_equal(a.propensities, b.propensities)
    np.testing.assert_array_equal(a.probabilities, b.probabilities)


def assert_same_state(a: tuple, b: tuple) -> None:
    """Two ``get_state()`` results are equal: parameters, arrays (exactly) and model texts."""
    (params_a, arrays_a, models_a), (params_b, arrays_b, models_b) = a, b
    assert params_a == params_b
    assert models_a == models_b
    assert arrays_a.keys() == arrays_b.keys()
    for key, value in arrays_a.items():
        np.testing.assert_array_equal(arrays_b[key], value, err_msg=key)


# ----------------------------------------------------------------------------- registry
def test_registry_names_are_unique_and_match_their_keys():
    names = [cls.name for cls in POLICIES.values()]
    assert len(set(names)) == len(names)
    for key, cls in POLICIES.items():
        assert cls.name == key
        policy = pristine(key, "untrained")
        assert isinstance(policy, Policy)
        assert type(policy) is cls and policy.name == key and policy.space == SPACE
    assert set(LEARNERS) <= set(POLICIES)


def test_create_with_an_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="^policy: ") as info:
        create("no_such_policy", SPACE, SEGMENTS, dim=DIM)
    message = str(info.value)
    assert "no_such_policy" in message
    for name in POLICIES:
        assert repr(name) in message


# ----------------------------------------------------------------------------- 1. distributions
@pytest.mark.parametrize("masks", ["real", "thinned"])
@pytest.mark.parametrize(("name", "state"), cases())
def test_probabilities_are_distributions_on_the_mask(name, state, masks):
    policy = make(name, state)
    X, mask = small_contexts(masks)
    p = policy.probabilities(X, mask)
    assert p.shape == (len(X), A)
    assert np.all(np.isfinite(p))
    assert np.all(p >= 0.0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-9)
    assert np.all(p[~mask] == 0.0), "probability on an ineligible action"


# ----------------------------------------------------------------------------- 2. propensities
class Repeated:
    """``policy`` on a batch that repeats a few contexts, scored once per distinct context.

    A policy's distribution is a function of each row alone (checked on 10,000 rows by
    :func:`test_a_batch_of_10000_decides_as_10000_batches_of_one`), so a batch that repeats five
    contexts 20,000 times can be scored on those five; ``act`` still validates, samples and reports
    on all 100,000 rows. Scoring every row would cost the linear learners most of a minute.
    """

    def __init__(self, policy: Policy, X: np.ndarray, mask: np.ndarray, which: np.ndarray) -> None:
        self.policy, self.space, self.name = policy, policy.space, policy.name
        self.X, self.mask, self.which = X, mask, which

    def probabilities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        assert np.array_equal(X, self.X[self.which]) and np.array_equal(mask, self.mask[self.which])
        return self.policy.probabilities(self.X, self.mask)[self.which]


@pytest.mark.parametrize(("name", "state"), cases())
def test_reported_propensity_is_the_empirical_frequency(name, state):
    policy = make(name, state)
    X, mask = contexts()
    rows = np.array([0, 1, 2, 3, 4]) * 997  # five customers, fixed
    X5 = X[rows]
    # two with their real masks, three with extra ineligible actions (larger uniform shares)
    M5 = np.vstack([mask[rows[:2]], thinned(mask[rows[2:]], 41, keep=0.1)])
    M5[4, 1:] = False
    M5[4, np.flatnonzero(mask[rows[4]])[1:4]] = True  # no contact and three contacts
    p5 = policy.probabilities(X5, M5)

    reps = 20_000
    which = np.repeat(np.arange(5), reps)
    d = act(Repeated(policy, X5, M5, which), X5[which], M5[which], np.random.default_rng(42))
    # the reported propensity is exactly the policy's probability of the chosen action
    np.testing.assert_array_equal(d.propensities, d.probabilities[np.arange(len(which)), d.actions])
    np.testing.assert_array_equal(d.propensities, p5[which, d.actions])

    for c in range(5):
        counts = np.bincount(d.actions[which == c], minlength=A)
        freq = counts / reps
        p = p5[c]
        assert np.all(counts[p == 0] == 0), "an action with probability 0 was drawn"
        # The count of action a is Binomial(reps, p_a) if the propensity is right, so its frequency
        # has standard error sqrt(p_a (1 - p_a) / reps) (at most 0.0035 here). Five standard errors
        # is a two-sided tail of 6e-7 per action; over the ~1,000 (context, action) pairs a policy
        # is checked on, a correct policy fails for about one seed in a thousand, and the seed is
        # fixed. The 1e-3 floor covers p_a near 0 and 1, where the normal approximation is poor.
        # A propensity that is wrong by more than ~0.02 (or by ~1e-3 for rare actions) fails.
        se = np.sqrt(p * (1.0 - p) / reps)
        bad = np.abs(freq - p) > 5.0 * se + 1e-3
        assert not bad.any(), f"context {c}: actions {np.flatnonzero(bad)} p={p[bad]} freq={freq[bad]}"


# ----------------------------------------------------------------------------- 3. seeding
@pytest.mark.parametrize(("name", "state"), cases())
def test_same_seed_same_decisions(name, state):
    policy = make(name, state)
    X, mask = small_contexts("thinned")
    first = act(policy, X, mask, np.random.default_rng(7))
    again = act(policy, X, mask, np.random.default_rng(7))
    assert_same_decisions(first, again)
    # deciding does not change the policy: a third run still agrees
    assert_same_decisions(first, act(policy, X, mask, np.random.default_rng(7)))


# ----------------------------------------------------------------------------- 4. serialization
def _assert_no_pickle(folder: Path) -> None:
    files = [f for f in folder.rglob("*") if f.is_file()]
    assert (folder / "policy.json").is_file()
    for f in files:
        assert f.suffix not in (".pkl", ".pickle"), f"pickle file {f.name}"
        # every pickle protocol >= 2 starts with the PROTO opcode b"\x80"
        assert not f.read_bytes()[:1] == b"\x80", f"{f.name} looks like a pickle"
        if f.suffix in (".npz", ".npy"):
            with np.load(f, allow_pickle=False) as npz:  # raises on object arrays (pickled)
                for key in getattr(npz, "files", []):
                    assert npz[key].dtype != object


@pytest.mark.parametrize(("name", "state"), cases())
def test_save_load_gives_the_same_policy_without_pickle(name, state, tmp_path):
    policy = pristine(name, state)
    folder = serialization.save(policy, tmp_path / "policy")
    _assert_no_pickle(folder)
    meta = json.loads((folder / "policy.json").read_text())
    assert meta["policy"] == name

    loaded = serialization.load(folder)
    assert type(loaded) is type(policy) and loaded.name == name and loaded.space == policy.space
    X, mask = small_contexts("real")
    assert np.array_equal(loaded.probabilities(X, mask), policy.probabilities(X, mask))
    X, mask = small_contexts("thinned")  # decisions carry the probabilities too
    assert_same_decisions(
        act(loaded, X, mask, np.random.default_rng(3)), act(policy, X, mask, np.random.default_rng(3))
    )
    # saving the loaded policy writes the same state
    again = serialization.save(loaded, tmp_path / "again")
    assert json.loads((again / "policy.json").read_text()) == meta


@pytest.mark.parametrize(("name", "state"), cases(names=LEARNERS))
def test_a_loaded_learner_keeps_learning_as_the_original(name, state, tmp_path):
    # The saved state is the whole state: sufficient statistics, kept data, the model, and the
    # generator a Thompson sampler draws its next posterior samples from.
    original = make(name, state)
    loaded = serialization.load(serialization.save(original, tmp_path / "policy"))
    # one more batch triggers the LightGBM bandits' next (re)fit in both states
    batch = logged_batches()[N_TRAIN : N_TRAIN + 1]
    train(original, batch)
    train(loaded, batch)
    # the same state, exactly (cheaper than comparing decisions, and it implies them)
    assert_same_state(loaded.get_state(), original.get_state())


@pytest.mark.parametrize("name", list(POLICIES))
def test_loading_an_unknown_policy_raises_naming_it(name, tmp_path):
    folder = serialization.save(pristine(name, "untrained"), tmp_path / "policy")
    meta = json.loads((folder / "policy.json").read_text())
    meta["policy"] = "no_such_policy"
    (folder / "policy.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="no_such_policy"):
        serialization.load(folder)


# ----------------------------------------------------------------------------- 5. batch size


@pytest.mark.parametrize(("name", "state"), cases())
def test_a_batch_of_10000_decides_as_10000_batches_of_one(name, state):
    policy = make(name, state)
    X, mask = contexts()
    n, k, seed = len(X), N_ONE_BY_ONE, 5
    big_rng = np.random.default_rng(seed)
    big = act(policy, X, mask, big_rng)

    # Why the first k rows suffice: act draws exactly one uniform per row, rng.random(N), so after
    # the big batch the generator is exactly where N single draws leave it, and Generator.random(N)
    # yields the same numbers as N successive calls of random(1). Row i of the big batch therefore
    # used the same uniform as the i-th one-row batch; rows past k change nothing for the first k.
    ref = np.random.default_rng(seed)
    ref.random(n)
    assert big_rng.bit_generator.state == ref.bit_generator.state, "act must draw one uniform per row"
    prefix = np.random.default_rng(seed).random(n)[:k]
    one_by_one = np.random.default_rng(seed)
    np.testing.assert_array_equal(prefix, np.concatenate([one_by_one.random(1) for _ in range(k)]))

    rng = np.random.default_rng(seed)
    singles = [act(policy, X[i : i + 1], mask[i : i + 1], rng) for i in range(k)]
    np.testing.assert_array_equal(np.concatenate([s.actions for s in singles]), big.actions[:k])
    np.testing.assert_array_equal(np.concatenate([s.propensities for s in singles]), big.propensities[:k])
    np.testing.assert_array_equal(np.vstack([s.probabilities for s in singles]), big.probabilities[:k])


# ----------------------------------------------------------------------------- 6. bad input
def _bad_X_nan(X, mask):
    X = X.copy()
    X[3, 5] = np.nan
    return X, mask


def _bad_X_inf(X, mask):
    X = X.copy()
    X[0, 0] = np.inf
    return X, mask


def _bad_mask_shape(X, mask):
    return X, mask[:, :-1]


def _bad_mask_rows(X, mask):
    return X, mask[:-1]


def _bad_mask_dtype(X, mask):
    return X, mask.astype(np.int64)


def _bad_mask_empty_row(X, mask):
    mask = mask.copy()
    mask[2] = False
    return X, mask


BAD_INPUTS = {
    "X-nan": (_bad_X_nan, "X"),
    "X-inf": (_bad_X_inf, "X"),
    "X-1d": (lambda X, mask: (X[0], mask), "X"),
    "mask-shape": (_bad_mask_shape, "mask"),
    "mask-rows": (_bad_mask_rows, "mask"),
    "mask-dtype": (_bad_mask_dtype, "mask"),
    "mask-no-eligible-action": (_bad_mask_empty_row, "mask"),
}


@pytest.mark.parametrize("bad", list(BAD_INPUTS))
@pytest.mark.parametrize(("name", "state"), cases())
def test_act_and_probabilities_reject_bad_input_naming_the_field(name, state, bad):
    policy = make(name, state)
    X, mask = contexts()
    corrupt, field = BAD_INPUTS[bad]
    X, mask = corrupt(X[:20], mask[:20])
    with pytest.raises(ValueError, match=f"^{field}: "):
        act(policy, X, mask, np.random.default_rng(0))
    with pytest.raises(ValueError, match=f"^{field}: "):  # a direct call checks its batch too
        policy.probabilities(X, mask)


class Unchecked:
    """A policy written elsewhere, whose ``probabilities`` checks nothing: ``act`` checks its batch for it."""

    name = "unchecked"

    def __init__(self) -> None:
        self.space, self.dim, self.calls = SPACE, DIM, 0

    def probabilities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        self.calls += 1
        return uniform(mask)


@pytest.mark.parametrize("bad", list(BAD_INPUTS))
def test_act_checks_the_batch_of_a_policy_that_does_not(bad):
    policy = Unchecked()
    X, mask = contexts()
    corrupt, field = BAD_INPUTS[bad]
    with pytest.raises(ValueError, match=f"^{field}: "):
        act(policy, *corrupt(X[:20], mask[:20]), np.random.default_rng(0))
    assert policy.calls == 0  # refused before the policy is asked
    act(policy, X[:20], mask[:20], np.random.default_rng(0))
    assert policy.calls == 1


@pytest.mark.parametrize("width", ["fewer", "more"])
@pytest.mark.parametrize(("name", "state"), cases())
def test_act_rejects_the_wrong_number_of_features(name, state, width):
    # A policy that reads the context must refuse an X of another width (ValueError naming X). One
    # that ignores it (no contact, uniform, an unfitted reward model) may decide anyway, but then
    # exactly as it does on the real contexts. The extra or missing column is the first one, so
    # a policy that reads features by position sees every feature move.
    policy = make(name, state)
    X, mask = contexts()
    X, mask = X[:50], mask[:50]
    wrong = X[:, 1:] if width == "fewer" else np.hstack([X[:, :1], X])
    try:
        p = act(policy, wrong, mask, np.random.default_rng(0)).probabilities
    except ValueError as e:
        assert str(e).startswith("X: "), str(e)
        return
    np.testing.assert_array_equal(p, policy.probabilities(X, mask))


@pytest.mark.parametrize(("name", "state"), cases())
def test_a_mask_without_no_contact_is_rejected_or_honoured(name, state):
    # Either answer keeps exploration on the mask: refuse the mask (ValueError naming it), or put
    # no probability on no contact.
    policy = make(name, state)
    X, mask = small_contexts("real")
    mask = mask.copy()
    mask[:, 0] = False
    mask[np.arange(len(mask)), 1] = True  # something else stays eligible on every row
    try:
        d = act(policy, X, mask, np.random.default_rng(0))
    except ValueError as e:
        assert str(e).startswith("mask: ")
        return
    assert np.all(d.probabilities[~mask] == 0.0)
    assert np.all(mask[np.arange(len(X)), d.actions])


def _short_actions(b: Batch) -> tuple:
    return b.X, b.actions[:-1], b.rewards, b.propensities


def _short_rewards(b: Batch) -> tuple:
    return b.X, b.actions, b.rewards[:-1], b.propensities


def _nan_reward(b: Batch) -> tuple:
    r = b.rewards.copy()
    r[4] = np.nan
    return b.X, b.actions, r, b.propensities


def _inf_reward(b: Batch) -> tuple:
    r = b.rewards.copy()
    r[0] = -np.inf
    return b.X, b.actions, r, b.propensities


def _nan_X(b: Batch) -> tuple:
    X = b.X.copy()
    X[1, 1] = np.nan
    return X, b.actions, b.rewards, b.propensities


def _action_out_of_range(b: Batch) -> tuple:
    a = b.actions.copy()
    a[0] = A
    return b.X, a, b.rewards, b.propensities


def _short_propensities(b: Batch) -> tuple:
    return b.X, b.actions, b.rewards, b.propensities[:-1]


def _nan_propensity(b: Batch) -> tuple:
    p = b.propensities.copy()
    p[0] = np.nan
    return b.X, b.actions, b.rewards, p


BAD_UPDATES = {
    "actions-length": _short_actions,
    "rewards-length": _short_rewards,
    "rewards-nan": _nan_reward,
    "rewards-inf": _inf_reward,
    "X-nan": _nan_X,
    "action-out-of-range": _action_out_of_range,
    "propensities-length": _short_propensities,
    "propensities-nan": _nan_propensity,
}


@pytest.mark.parametrize("bad", list(BAD_UPDATES))
@pytest.mark.parametrize(("name", "state"), cases())
def test_update_rejects_bad_batches_and_learns_nothing(name, state, bad):
    # every policy, those that ignore logged batches too: a bad batch is refused, naming its field
    policy = make(name, state)
    before = policy.get_state()
    batch = logged_batches()[N_TRAIN].head(50)
    with pytest.raises(ValueError, match=r"^(X|actions|rewards|propensities)\b[/a-z]*: "):
        policy.update(*BAD_UPDATES[bad](batch), **batch.extra(policy))
    assert_same_state(policy.get_state(), before)  # a rejected batch leaves no trace


# ----------------------------------------------------------------------------- 7. update


@pytest.mark.parametrize(("name", "state"), cases())
def test_update_returns_the_policy(name, state):
    policy = make(name, state)
    X, mask = small_contexts()
    X, mask = X[:50], mask[:50]
    learns = name in ONLINE_LEARNERS
    before = None if learns else policy.probabilities(X, mask)
    batch = logged_batches()[N_TRAIN].head(200)
    assert policy.update(*batch.args(), **batch.extra(policy)) is policy
    if not learns:  # policies that do not learn from logged batches ignore them
        np.testing.assert_array_equal(policy.probabilities(X, mask), before)


@pytest.mark.parametrize("name", LEARNERS)
def test_a_learner_changes_its_distribution_after_enough_data(name):
    # One batch of 2,000 is enough for the linear learners, past min_samples (1,000) for the
    # LightGBM bandits, and gives fitted-Q candidates besides no contact.
    policy = make(name, "untrained")
    X, mask = small_contexts()
    X, mask = X[:50], mask[:50]
    before = policy.probabilities(X, mask)
    train(policy, logged_batches()[:1])
    after = policy.probabilities(X, mask)
    assert not np.array_equal(after, before)


# ----------------------------------------------------------------------------- plain K-action spaces
# The same contract on a plain contextual bandit (nba.actions.ActionSpace.plain): K actions, no
# channels, contents or send slots, and, in "plain" (and "catalogue"), no no-contact action, so masks may exclude
# action 0. "plain_nc" is the same with action 0 as no contact (eligible in every row). Data are
# synthetic: Gaussian contexts, rewards linear in the context per action plus noise, uniform logging.
# "catalogue" is a plain space whose actions are described by features (nba.catalogue), for the
# policies of CATALOGUE, without a no-contact action.
K_PLAIN, DIM_PLAIN = 10, 20
PLAIN_CATALOGUE = Catalogue.plain(
    [f"arm{a}" for a in range(K_PLAIN)],
    {f"arm{a}": {"size": float(a % 4), "colour": ("red", "blue", "green")[a % 3]} for a in range(K_PLAIN)},
)
PLAIN_SPACES = {
    "plain": ActionSpace.plain(K_PLAIN),
    "plain_nc": ActionSpace.plain(K_PLAIN, no_contact=True),
    "catalogue": PLAIN_CATALOGUE.space,
}
PLAIN_THETA = np.random.default_rng(51).standard_normal((K_PLAIN, DIM_PLAIN)) / np.sqrt(DIM_PLAIN)


def plain_mask(space: ActionSpace, n: int, rng: np.random.Generator, keep: float = 0.6) -> np.ndarray:
    """Random eligibility: each action eligible with probability ``keep``, at least one per row, every
    11th row a single action (3); no contact, where the space has it, always."""
    mask = rng.random((n, K_PLAIN)) < keep
    mask[::11] = False
    mask[::11, 3] = True
    empty = np.flatnonzero(~mask.any(axis=1))
    mask[empty, rng.integers(0, K_PLAIN, len(empty))] = True
    if space.has_no_contact:
        mask[:, 0] = True
    return mask


def plain_rewards(space: ActionSpace, X: np.ndarray, actions: np.ndarray, rng: np.random.Generator):
    """Rewards ``x . theta_a + noise`` (0 + noise for no contact) and funnel events that follow them."""
    mean = np.einsum("nd,nd->n", X, PLAIN_THETA[actions]) * space.is_contact[actions]
    rewards = mean + 0.5 * rng.standard_normal(len(actions))
    opened = space.is_contact[actions] & (rng.random(len(actions)) < 1.0 / (1.0 + np.exp(-2.0 * mean)))
    clicked = opened & (rng.random(len(actions)) < 0.5)
    converted = clicked & (rng.random(len(actions)) < 0.4)
    return rewards, opened, clicked, converted, np.where(converted, 1.0 + np.abs(mean), 0.0)


@functools.cache
def plain_contexts(kind: str, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(61)
    X = rng.standard_normal((n, DIM_PLAIN))
    mask = plain_mask(PLAIN_SPACES[kind], n, rng)
    _read_only(X, mask)
    return X, mask


@functools.cache
def plain_batches(kind: str) -> tuple[Batch, ...]:
    space = PLAIN_SPACES[kind]
    rng = np.random.default_rng(62)
    logger = create("uniform_random", space)
    X, mask = rng.standard_normal((BATCH, DIM_PLAIN)), plain_mask(space, BATCH, rng)
    out = []
    for _ in range(N_TRAIN + 2):
        d = act(logger, X, mask, rng)
        rewards, opened, clicked, converted, value = plain_rewards(space, X, d.actions, rng)
        X_next, mask_next = rng.standard_normal((BATCH, DIM_PLAIN)), plain_mask(space, BATCH, rng)
        batch = Batch(
            X,
            d.actions,
            rewards,
            d.propensities,
            X_next,
            mask_next,
            rng.random(BATCH) < 0.05,
            opened,
            clicked,
            converted,
            value,
        )
        _read_only(*(getattr(batch, f.name) for f in fields(batch)))
        out.append(batch)
        X, mask = X_next, mask_next
    return tuple(out)


@functools.cache
def plain_pristine(kind: str, name: str, state: str) -> Policy:
    # "plain" is built from the number of actions alone: create's plain K-action form
    space = K_PLAIN if kind == "plain" else PLAIN_SPACES[kind]
    extra = {"catalogue": PLAIN_CATALOGUE} if kind == "catalogue" else {}
    policy = create(name, space, dim=DIM_PLAIN, **SMALL_PARAMS.get(name, {}), **extra)
    if state == "trained":
        train(policy, plain_batches(kind)[:N_TRAIN])
    return policy


def plain_make(kind: str, name: str, state: str) -> Policy:
    return copy.deepcopy(plain_pristine(kind, name, state))


def plain_cases(names=None) -> list:
    """(kind, name, state) of every policy that runs on each plain space, learners also trained."""
    out = []
    for kind, space in PLAIN_SPACES.items():
        for name in PLAIN if names is None else names:
            if name == "no_contact" and not space.has_no_contact or kind == "catalogue" and name not in CATALOGUE:
                continue
            for state in STATES:
                if state == "trained" and name not in LEARNERS:
                    continue
                out.append(pytest.param(kind, name, state, id=f"{kind}-{name}-{state}"))
    return out


def test_every_learner_that_needs_no_scenario_runs_on_a_plain_space():
    # the learners that do not read a scenario's named features (send_time and spibb do) are all checked
    assert {n for n in LEARNERS if n not in SEGMENTED} <= set(PLAIN)
    for name in PLAIN:
        policy = plain_pristine("plain_nc", name, "untrained")
        assert policy.space == PLAIN_SPACES["plain_nc"] and policy.space.is_plain


@pytest.mark.parametrize("name", [n for n in POLICIES if n not in PLAIN])
def test_a_policy_that_needs_a_structured_space_refuses_a_plain_one_naming_space(name):
    for space in (K_PLAIN, PLAIN_SPACES["plain_nc"]):
        with pytest.raises(ValueError, match="^space: .*plain action space"):
            create(name, space, SEGMENTS, dim=DIM)


def test_create_takes_a_number_of_actions_or_their_names():
    policy = create("linucb", 10, dim=20)
    assert policy.space == ActionSpace.plain(10) and policy.space.n_actions == 10
    assert not policy.space.has_no_contact
    assert create("lints", ["a", "b", "c"], dim=4).space.names() == ["a", "b", "c"]
    with pytest.raises(ValueError, match="^space: "):
        create("linucb", 0, dim=20)
    with pytest.raises(ValueError, match="^space: "):
        create("linucb", "ten", dim=20)
    with pytest.raises(ValueError, match="^space: .*no-contact"):
        create("no_contact", 10)
    with pytest.raises(ValueError, match="^space: .*no-contact"):
        Explore(create("uniform_random", 10), epsilon=0.1, holdout=0.1)
    Explore(create("uniform_random", 10), epsilon=0.1)  # exploration alone needs no no-contact action


def test_message_exploration_keeps_whom_to_contact_and_covers_every_message():
    X, mask = small_contexts()
    bau = create("business_as_usual", SPACE, SEGMENTS)
    base = bau.probabilities(X, mask)
    p = Explore(bau, 0.0, messages=0.6).probabilities(X, mask)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert np.all(p[~mask] == 0.0) and np.all(p >= 0.0)
    np.testing.assert_allclose(p[:, 0], base[:, 0], rtol=0, atol=1e-15)  # whom to contact: unchanged
    k = mask[:, 1:].sum(axis=1)
    floor = 0.6 * (1.0 - base[:, 0]) / np.maximum(k, 1)
    assert np.all(p[:, 1:][mask[:, 1:]] >= np.repeat(floor, k) - 1e-15)  # every eligible message explored
    np.testing.assert_allclose(p[:, 1:], 0.4 * base[:, 1:] + np.where(mask[:, 1:], floor[:, None], 0.0), atol=1e-15)
    # with uniform exploration and a holdout on top, as the quickstart logs
    full = Explore(bau, 0.2, 0.05, messages=0.6)
    np.testing.assert_allclose(
        full.probabilities(X, mask), 0.75 * p + 0.2 * uniform(mask) + 0.05 * np.eye(A)[0], rtol=0, atol=1e-12
    )
    assert full.name == "business_as_usual+explore0.2+messages0.6+holdout0.05"
    # no message exploration: the plain mixture, and the wrapped policy's array left as it was
    plain = Explore(bau, 0.2, 0.05)
    np.testing.assert_allclose(plain.probabilities(X, mask), 0.75 * base + 0.2 * uniform(mask) + 0.05 * np.eye(A)[0])
    np.testing.assert_array_equal(bau.probabilities(X, mask), base)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"^messages: the share of message exploration must be in \[0, 1\]"):
            Explore(bau, 0.1, messages=bad)
    with pytest.raises(ValueError, match="^space: message exploration needs a no-contact action"):
        Explore(create("uniform_random", 10), 0.1, messages=0.5)


@pytest.mark.parametrize(("kind", "name", "state"), plain_cases())
def test_plain_probabilities_are_distributions_on_the_mask(kind, name, state):
    policy = plain_make(kind, name, state)
    X, mask = plain_contexts(kind)
    p = policy.probabilities(X[:N_SMALL], mask[:N_SMALL])
    assert p.shape == (N_SMALL, K_PLAIN)
    assert np.all(np.isfinite(p)) and np.all(p >= 0.0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-9)
    assert np.all(p[~mask[:N_SMALL]] == 0.0), "probability on an ineligible action"


@pytest.mark.parametrize(("kind", "name", "state"), plain_cases())
def test_plain_reported_propensity_is_the_empirical_frequency(kind, name, state):
    policy = plain_make(kind, name, state)
    X, mask = plain_contexts(kind)
    rows = np.array([0, 1, 2, 5, 11])  # row 11: action 3 alone
    X5, M5 = X[rows], mask[rows].copy()
    if not PLAIN_SPACES[kind].has_no_contact:
        M5[0] = True
        M5[0, 0] = False  # all but action 0
    p5 = policy.probabilities(X5, M5)
    reps = 20_000
    which = np.repeat(np.arange(5), reps)
    d = act(Repeated(policy, X5, M5, which), X5[which], M5[which], np.random.default_rng(42))
    np.testing.assert_array_equal(d.propensities, p5[which, d.actions])
    for c in range(5):
        counts = np.bincount(d.actions[which == c], minlength=K_PLAIN)
        p = p5[c]
        assert np.all(counts[p == 0] == 0), "an action with probability 0 was drawn"
        se = np.sqrt(p * (1.0 - p) / reps)  # five standard errors, as in the structured check above
        bad = np.abs(counts / reps - p) > 5.0 * se + 1e-3
        assert not bad.any(), f"context {c}: actions {np.flatnonzero(bad)} p={p[bad]} freq={counts[bad] / reps}"


@pytest.mark.parametrize(("kind", "name", "state"), plain_cases())
def test_plain_same_seed_same_decisions_and_a_batch_decides_as_single_rows(kind, name, state):
    policy = plain_make(kind, name, state)
    X, mask = plain_contexts(kind)
    first = act(policy, X, mask, np.random.default_rng(7))
    assert_same_decisions(first, act(policy, X, mask, np.random.default_rng(7)))
    rng = np.random.default_rng(7)
    singles = [act(policy, X[i : i + 1], mask[i : i + 1], rng) for i in range(50)]
    np.testing.assert_array_equal(np.concatenate([s.actions for s in singles]), first.actions[:50])
    np.testing.assert_array_equal(np.vstack([s.probabilities for s in singles]), first.probabilities[:50])


@pytest.mark.parametrize(("kind", "name", "state"), plain_cases())
def test_plain_save_load_gives_the_same_policy_that_learns_the_same(kind, name, state, tmp_path):
    policy = plain_make(kind, name, state)
    folder = serialization.save(policy, tmp_path / "policy")
    _assert_no_pickle(folder)
    loaded = serialization.load(folder)
    assert type(loaded) is type(policy) and loaded.space == PLAIN_SPACES[kind] and loaded.space.is_plain
    X, mask = plain_contexts(kind)
    assert_same_decisions(
        act(loaded, X[:N_SMALL], mask[:N_SMALL], np.random.default_rng(3)),
        act(policy, X[:N_SMALL], mask[:N_SMALL], np.random.default_rng(3)),
    )
    if name in LEARNERS:
        batch = plain_batches(kind)[N_TRAIN : N_TRAIN + 1]
        train(policy, batch)
        train(loaded, batch)
        assert_same_state(loaded.get_state(), policy.get_state())


@pytest.mark.parametrize(("kind", "name", "state"), plain_cases(names=[n for n in PLAIN if n in LEARNERS]))
def test_plain_learners_learn(kind, name, state):
    policy = plain_make(kind, name, state)
    X, mask = plain_contexts(kind)
    X, mask = X[:50], mask[:50]
    before = policy.probabilities(X, mask)
    batch = plain_batches(kind)[N_TRAIN if state == "trained" else 0]
    if is_offline(name):
        train(policy, (batch,))
    else:
        assert policy.update(*batch.args(), **batch.extra(policy)) is policy
    assert not np.array_equal(policy.probabilities(X, mask), before)


@pytest.mark.parametrize("kind", list(PLAIN_SPACES))
def test_plain_act_checks_the_mask(kind):
    policy = plain_make(kind, "linucb", "trained")
    X, mask = plain_contexts(kind)
    X, mask = X[:20], mask[:20].copy()
    mask[:, 1] = True  # something besides action 0 in every row
    mask[5] = False
    with pytest.raises(ValueError, match="^mask: row 5 has no eligible action"):
        act(policy, X, mask, np.random.default_rng(0))
    mask[5, 2] = True
    mask[:, 0] = False
    if not PLAIN_SPACES[kind].has_no_contact:  # excluding action 0 is a mask like any other
        d = act(policy, X, mask, np.random.default_rng(0))
        assert np.all(d.actions != 0) and np.all(d.probabilities[:, 0] == 0.0)
    else:
        with pytest.raises(ValueError, match="^mask: no contact .*row 0"):
            act(policy, X, mask, np.random.default_rng(0))
