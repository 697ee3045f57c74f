"""The one policy interface, and the distributions policies are built from.

Every policy maps a batch of contexts ``X`` (N, d) and an eligibility mask (N, A) to a probability
distribution over actions that is **deterministic given the policy's state**; acting draws one
uniform per row from the caller's ``numpy.random.Generator`` and inverts that row's cumulative
distribution. Hence:

* the logged propensity is the exact probability of the chosen action (no estimate),
* the same seed gives the same decisions, and a batch of 10,000 decides exactly as 10,000 batches
  of one drawn from the same generator,
* exploration never leaves the mask: probabilities are zero on ineligible actions.

Every row of a mask has an eligible action; where the space has a no-contact action (always in a
structured space, in a plain one if asked for: :mod:`nba.actions`), that one is eligible in every row.

Randomised learners that sample parameters (Thompson sampling) move their posterior samples when
they *update*, with normals from their own seeded generator, and keep them as state; their
distribution is then the exact share of samples under which each action is best.

A policy implements :class:`Policy`; :func:`act` does the rest. The built-in policies check every batch
they are given, by a direct call too: ``probabilities`` through :func:`checked`, ``update`` through
:func:`check_update` (those that learn nothing from logged batches check them before ignoring them).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from nba.actions import ActionSpace


@dataclass(frozen=True)
class Decisions:
    """What a policy decided for a batch."""

    actions: np.ndarray  # (N,) int64
    propensities: np.ndarray  # (N,) float64: P(action | context) under the policy
    probabilities: np.ndarray  # (N, A) float64: the full distribution (0 off the mask)


@runtime_checkable
class Policy(Protocol):
    """Interface of every policy. State is saved by :mod:`nba.serialization` (never pickled)."""

    name: ClassVar[str]
    space: ActionSpace

    def probabilities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(N, A) action distribution for contexts ``X`` (N, d) under ``mask`` (N, A); a bad batch raises
        ValueError naming ``X`` or ``mask`` (the built-in policies check it with :func:`checked`)."""
        ...

    def update(self, X: np.ndarray, actions: np.ndarray, rewards: np.ndarray, propensities: np.ndarray) -> Policy:
        """Learn from a logged batch; returns self. Policies that do not learn ignore it.

        A learner whose ``learns_from_events`` is true (a class attribute, or a property of a wrapper
        such as ``send_time`` over ``lgbm_funnel``) also takes the batch's funnel events as ``events=``
        (:class:`nba.log.FunnelEvents`), and refuses a batch without them."""
        ...

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, str]]:
        """(JSON parameters, NumPy arrays, LightGBM model texts) that rebuild the policy."""
        ...

    @classmethod
    def from_state(
        cls, space: ActionSpace, params: dict[str, Any], arrays: dict[str, np.ndarray], models: dict[str, str]
    ) -> Policy:
        """The policy on ``space`` that :meth:`get_state` described (its parameters, arrays and model texts)."""
        ...


def check_batch(
    space: ActionSpace, X: np.ndarray, mask: np.ndarray, dim: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a batch of contexts and its mask; raise ValueError naming the field."""
    X = np.asarray(X)
    mask = np.asarray(mask)
    if X.ndim != 2:
        raise ValueError(f"X: expected a 2-D array (N, d), got shape {X.shape}")
    if dim is not None and X.shape[1] != dim:
        raise ValueError(f"X: expected {dim} features, got {X.shape[1]}")
    if not np.all(np.isfinite(X)):
        raise ValueError("X: contains NaN or infinite values")
    if mask.shape != (X.shape[0], space.n_actions):
        raise ValueError(f"mask: expected shape ({X.shape[0]}, {space.n_actions}), got {mask.shape}")
    if mask.dtype != bool:
        raise ValueError(f"mask: expected a boolean array, got dtype {mask.dtype}")
    if X.shape[0]:
        empty = ~mask.any(axis=1)
        if empty.any():
            raise ValueError(f"mask: row {int(np.argmax(empty))} has no eligible action")
        if space.has_no_contact and not mask[:, 0].all():
            raise ValueError(
                f"mask: no contact (action 0) must be eligible in every row; row "
                f"{int(np.argmin(mask[:, 0]))} excludes it"
            )
    return X, mask


def require_structured(space: ActionSpace, policy: str) -> None:
    """Raise ValueError naming ``space`` unless it has channels, contents and send slots."""
    if space.is_plain:
        raise ValueError(
            f"space: policy {policy!r} decides channels, contents and send slots, and a plain "
            f"action space ({space.n_actions} named actions) has none; use a structured ActionSpace, "
            "or a policy of nba.policies.PLAIN"
        )


def require_no_contact(space: ActionSpace, what: str) -> None:
    """Raise ValueError naming ``space`` unless action 0 is no contact."""
    if not space.has_no_contact:
        raise ValueError(
            f"space: {what} needs a no-contact action, and this plain action space has none "
            "(ActionSpace.plain(..., no_contact=True) has one)"
        )


def check_propensities(propensities: Any, n: int) -> np.ndarray:
    """Validate ``n`` logged propensities (probabilities in (0, 1]); raise ValueError naming the field."""
    p = np.asarray(propensities, np.float64)
    if p.shape != (n,):
        raise ValueError(f"propensities: expected shape ({n},), got {p.shape}")
    if not (np.all(np.isfinite(p)) and np.all(p > 0) and np.all(p <= 1)):
        raise ValueError("propensities: must be probabilities in (0, 1]")
    return p


def check_update(
    space: ActionSpace, dim: int | None, X: Any, actions: Any, rewards: Any, propensities: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate a logged batch (``dim`` features, or any number if None); raise ValueError naming the field."""
    X = np.asarray(X, np.float64)
    if X.ndim != 2 or (dim is not None and X.shape[1] != dim):
        raise ValueError(f"X: expected shape (N, {'d' if dim is None else dim}), got {X.shape}")
    actions = space.check(np.asarray(actions), "actions")
    rewards = np.asarray(rewards, np.float64)
    if actions.shape != (X.shape[0],) or rewards.shape != (X.shape[0],):
        raise ValueError(f"actions/rewards: expected shape ({X.shape[0]},), got {actions.shape} and {rewards.shape}")
    if not (np.isfinite(X).all() and np.isfinite(rewards).all()):
        raise ValueError("X/rewards: contain NaN or infinite values")
    if propensities is not None:
        check_propensities(propensities, X.shape[0])
    return X, actions, rewards


Probabilities = Callable[[Any, np.ndarray, np.ndarray], np.ndarray]
CHECKS_BATCH = "checks_batch"  # set on a :func:`checked` method: :func:`distribution` leaves the check to it


def checked(probabilities: Probabilities) -> Probabilities:
    """Decorate a policy's ``probabilities`` so that it checks its batch first (:func:`check_batch`, against
    the policy's ``dim`` if it has one): a direct call with a bad ``X`` or ``mask`` raises ValueError naming
    it, as :func:`act` does, instead of a distribution of garbage."""

    @functools.wraps(probabilities)
    def checked_probabilities(self: Any, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        X, mask = check_batch(self.space, X, mask, getattr(self, "dim", None))
        return probabilities(self, X, mask)

    setattr(checked_probabilities, CHECKS_BATCH, True)
    return checked_probabilities


BLOCKS_FROM = 128  # actions from which :func:`sample` inverts a row block by block (faster from about 100)


def sample(probabilities: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Invert each row's cumulative distribution at ``u`` (N,) in [0, 1): the action ``a`` of the row
    whose interval ``[cdf[a - 1], cdf[a])`` of the actions in their order holds ``u`` times the row's sum.

    From ``BLOCKS_FROM`` actions on, in two steps (:func:`_sample_blocks`): the sums of blocks of consecutive
    actions locate the block, a cumulative sum within it the action. The same inversion, summed in
    another order: a ``u`` within rounding (about 1e-16) of an interval's end may pick its neighbour.
    """
    if probabilities.shape[1] >= BLOCKS_FROM:
        actions = _sample_blocks(probabilities, u)
    else:
        cdf = np.cumsum(probabilities, axis=1)
        target = u * cdf[:, -1]
        actions = np.minimum((cdf <= target[:, None]).sum(axis=1), probabilities.shape[1] - 1)
    # guard against rounding: never land on a zero-probability action
    bad = probabilities[np.arange(len(actions)), actions] <= 0
    if bad.any():
        actions[bad] = np.argmax(probabilities[bad] > 0, axis=1)
    return actions.astype(np.int64)


def _sample_blocks(p: np.ndarray, u: np.ndarray) -> np.ndarray:
    """:func:`sample` over blocks of ``w`` consecutive actions (a power of two near the square root of the
    number of actions ``A``: 32 of 801): each row's ``A / w`` block sums and their cumulative sum locate
    the block holding the row's target, then ``w`` cumulative sums within that block its action. A row
    costs one read of its probabilities and ``A / w + w`` additions in order, where the full cumulative
    sum costs ``A`` additions in order (the cost of the draw over 801 actions: 4.5 of its 6 ms)."""
    n, a = p.shape
    w = 1 << max(1, round(np.log2(a) / 2))
    full = a // w
    # a row's block sums depend on that row alone (a batch decides as batches of one)
    sums = np.einsum("ijk->ij", p[:, : full * w].reshape(n, full, w))
    if full * w < a:
        sums = np.concatenate([sums, p[:, full * w :].sum(axis=1, keepdims=True)], axis=1)
    cdf = np.cumsum(sums, axis=1)
    target = u * cdf[:, -1]
    block = np.minimum((cdf <= target[:, None]).sum(axis=1), cdf.shape[1] - 1)
    rows = np.arange(n)
    cols = block[:, None] * w + np.arange(w)
    within = p[rows[:, None], np.minimum(cols, a - 1)]
    within[cols >= a] = 0.0  # past the last action (a last block narrower than w)
    positive = within > 0
    within[:, 0] += np.where(block > 0, cdf[rows, block - 1], 0.0)  # the mass of the blocks before
    k = (np.cumsum(within, axis=1) <= target[:, None]).sum(axis=1)
    # past the block's last action with mass only through rounding (its sum and its additions differ)
    last = w - 1 - np.argmax(positive[:, ::-1], axis=1)
    return block * w + np.minimum(k, last)


def distribution(policy: Policy, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(N, A) ``policy``'s distribution for a batch checked once (:func:`check_batch`): by the policy's own
    ``probabilities`` where it is :func:`checked`, else here."""
    if not getattr(policy.probabilities, CHECKS_BATCH, False):
        X, mask = check_batch(policy.space, X, mask, getattr(policy, "dim", None))
    return policy.probabilities(X, mask)


def act(policy: Policy, X: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> Decisions:
    """Decide for a batch: the policy's distribution (:func:`distribution`), then one uniform per row from ``rng``."""
    probs = distribution(policy, X, mask)
    actions = sample(probs, rng.random(len(probs)))
    return Decisions(actions, probs[np.arange(len(actions)), actions], probs)


# ----------------------------------------------------------------------------- distributions
def uniform(mask: np.ndarray) -> np.ndarray:
    """(N, A) the same probability on every eligible action of each row, 0 off the mask."""
    # the flags times 1 / k, k counted over them as floats (exact): the numbers of mask / k, in 70 % of its time
    out = mask.astype(np.float64)
    with np.errstate(divide="ignore"):  # a row without eligible action: NaN, as 0 / 0
        out *= 1.0 / out.sum(axis=1, keepdims=True)
    return out


TIE_RTOL = 1e-9  # scores this close count as ties


def masked_argmax(scores: np.ndarray, mask: np.ndarray, axis: int = -1) -> np.ndarray:
    """Best eligible action along ``axis``, the lowest index among ties.

    Scores within ``TIE_RTOL`` (relative) of the best are ties: the last bits of a matrix product
    differ with the batch's size, and a decision must not.
    """
    s = np.where(mask, scores, -np.inf)
    best = s.max(axis=axis, keepdims=True)
    tol = TIE_RTOL * np.maximum(np.abs(np.where(np.isfinite(best), best, 0.0)), 1.0)
    return np.argmax(s >= best - tol, axis=axis)


def greedy(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(N, A) probability 1 on each row's best eligible action (:func:`masked_argmax`), 0 elsewhere."""
    out = np.zeros(mask.shape)
    out[np.arange(len(out)), masked_argmax(scores, mask)] = 1.0
    return out


def epsilon_greedy(scores: np.ndarray, mask: np.ndarray, epsilon: float) -> np.ndarray:
    """Best eligible action with probability 1 - epsilon, uniform over eligible ones otherwise."""
    return (1.0 - epsilon) * greedy(scores, mask) + epsilon * uniform(mask)


def inverse_gap(scores: np.ndarray, mask: np.ndarray, gamma: float) -> np.ndarray:
    """SquareCB's inverse-gap weighting (Foster & Rakhlin, 2020), for rewards to maximise.

    ``p(a) = 1 / (K + gamma * (best - score(a)))`` for every eligible ``a`` but the best, which
    takes the remaining mass; ``K`` is the number of eligible actions.
    """
    k = mask.sum(axis=1, keepdims=True)
    s = np.where(mask, scores, -np.inf)
    best = masked_argmax(scores, mask)
    top = s[np.arange(len(s)), best][:, None]
    p = np.where(mask, 1.0 / (k + gamma * np.maximum(top - np.where(mask, scores, top), 0.0)), 0.0)
    p[np.arange(len(p)), best] = 0.0
    p[np.arange(len(p)), best] = 1.0 - p.sum(axis=1)
    return p


def share_of_argmax(samples: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(N, A) share of ``samples`` (M, N, A) under which each eligible action is best."""
    m, (n, a) = samples.shape[0], mask.shape
    best = masked_argmax(samples, mask[None], axis=2)  # (M, N); the mask broadcasts over samples
    best += np.arange(n) * a  # each (row, action) its own bin
    counts = np.bincount(best.ravel(), minlength=n * a)
    return (counts / m).reshape(n, a)


@runtime_checkable
class OfflineLearner(Protocol):
    """A policy fitted at once on logged transitions (offline reinforcement learning) instead of updated
    batch by batch. Its ``fit`` names what it learns from beyond the transitions (``returns``, each
    transition's discounted return-to-go; ``day``, ``propensities``, ``mask``, ``state_rewards``) and
    reports ``progress(iteration, value)``; the class's ``fit_progress`` names that value."""

    def fit(
        self,
        X: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        X_next: np.ndarray,
        mask_next: np.ndarray,
        terminated: np.ndarray,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """Fit on the transitions (``x``, ``a``, ``r``, ``x'``, the mask at ``x'``, whether ``x'`` ends the
        journey); returns the policy."""
        ...


class Explore:
    """A logging policy: ``policy`` mixed with message exploration, uniform exploration and a no-contact
    holdout.

    ``(1 - epsilon - holdout) * ((1 - messages) * policy + messages * policy's contacts with random
    messages) + epsilon * uniform + holdout * no contact``: gives the support offline learners and
    off-policy estimators need, with exact propensities (a holdout needs a space with a no-contact
    action). ``messages`` explores *which message* without changing *whom* to contact: that share of
    the policy's contact probability is spread evenly over the row's eligible contact actions (channel,
    content and send time), so a log of business as usual's contacts covers every message at the
    contact rate the brand already runs (``bench/learnability.py``). Not saved: rebuild it around the
    saved policy.
    """

    def __init__(self, policy: Policy, epsilon: float, holdout: float = 0.0, messages: float = 0.0) -> None:
        if not (0.0 <= epsilon <= 1.0 and 0.0 <= holdout <= 1.0 and epsilon + holdout <= 1.0):
            raise ValueError(
                f"epsilon: epsilon and holdout must be in [0, 1] with a sum <= 1, got {epsilon!r} and {holdout!r}"
            )
        if not 0.0 <= messages <= 1.0:
            raise ValueError(f"messages: the share of message exploration must be in [0, 1], got {messages!r}")
        if holdout or messages:
            require_no_contact(policy.space, "a no-contact holdout" if holdout else "message exploration")
        self.policy, self.epsilon, self.holdout, self.messages = policy, epsilon, holdout, messages
        self.space = policy.space
        self.name = (
            f"{policy.name}+explore{epsilon:g}"
            + (f"+messages{messages:g}" if messages else "")
            + (f"+holdout{holdout:g}" if holdout else "")
        )

    @checked
    def probabilities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(N, A) the wrapped policy's distribution, its messages explored, mixed with uniform over the mask
        and the no-contact holdout."""
        out = np.array(self.policy.probabilities(X, mask), dtype=np.float64)  # a copy: scaled in place below
        if self.messages:
            # the share ``messages`` of each row's contact probability, spread over its eligible contacts
            contacts = mask[:, 1:].sum(axis=1)
            move = self.messages * (1.0 - out[:, 0]) * (contacts > 0)
            out[:, 1:] *= 1.0 - self.messages * (contacts > 0)[:, None]
            out[:, 1:] += np.where(mask[:, 1:], (move / np.maximum(contacts, 1))[:, None], 0.0)
        out *= 1.0 - self.epsilon - self.holdout
        out += self.epsilon * uniform(mask)
        out[:, 0] += self.holdout
        return out

    @property
    def learns_from_events(self) -> bool:
        """Whether the wrapped policy takes funnel events with its updates."""
        return getattr(self.policy, "learns_from_events", False)

    def update(self, X, actions, rewards, propensities, **extra):
        """Update the wrapped policy with the batch (``extra``: its funnel events, if it learns from them)."""
        self.policy.update(X, actions, rewards, propensities, **extra)
        return self
