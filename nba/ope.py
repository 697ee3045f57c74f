"""Off-policy evaluation: the value of a target policy estimated from a decision log.

The estimand of every estimator is the **policy value**

    V(pi) = E_x [ sum_a pi(a | x) r(x, a) ],

the expected reward per decision if the target policy ``pi`` had decided for the logged population
of contexts, where ``r(x, a)`` is the expected reward of action ``a`` in context ``x``. The log holds,
per row ``i``: the reward ``r_i`` of the action ``a_i`` the logging policy ``mu`` chose, and its
propensity ``p_i = mu(a_i | x_i)``. The target is given as its distribution ``pi(. | x_i)`` (n, A)
on the logged contexts; a reward model as its predictions ``q_hat(x_i, a)`` (n, A).

With the importance weight ``w_i = pi(a_i | x_i) / p_i``:

================  ==============================================================  =====================
estimator         per-row term (the estimate is their mean)                       assumptions
================  ==============================================================  =====================
``ips``           ``w_i r_i``                                                     exact propensities;
                                                                                  support: ``mu > 0``
                                                                                  wherever ``pi > 0``
``snips``         ``w_i r_i / mean(w)`` (ratio of sums)                           as IPS; consistent,
                                                                                  bias O(1/n), always
                                                                                  within the reward
                                                                                  range
``dm``            ``sum_a pi(a|x_i) q_hat(x_i, a)``                               ``q_hat`` correct
                                                                                  (no support needed)
``dr``            ``dm_i + w_i (r_i - q_hat(x_i, a_i))``                          propensities exact
                                                                                  with support, **or**
                                                                                  ``q_hat`` correct
``switch_dr``     ``dm_i + 1{w_i <= tau} w_i (r_i - q_hat(x_i, a_i))``           ``q_hat`` correct
                                                                                  where ``w > tau``;
                                                                                  ``tau = inf`` is DR,
                                                                                  ``tau = 0`` is DM
``mips``          ``w^e_i r_i``, ``w^e_i = pi(e_i|x_i) / mu(e_i|x_i)``            the reward depends
                                                                                  on the group ``e``
                                                                                  only (or ``pi``
                                                                                  picks within a
                                                                                  group as ``mu``);
                                                                                  support on groups
``mdr``           ``dm_i + w^e_i (r_i - q_hat(x_i, a_i))``                        group propensities
                                                                                  exact and the
                                                                                  model's error the
                                                                                  same within a
                                                                                  group, **or**
                                                                                  ``q_hat`` correct
================  ==============================================================  =====================

**Marginal estimators** (Saito & Joachims 2022, "Off-policy evaluation for large action spaces
via embeddings"; the DR form is that of OffCEM, Saito et al. 2023) weight on the action's group
``e`` (its embedding: the channel, or the channel and content; :func:`action_groups`) rather than
its index: a group's probability is the sum of its actions', so the weights stay small on a
catalogue of hundreds of actions (on the quickstart's 225 actions with 20% uniform exploration,
about 40 at most by channel against about 600 by action). The logger's group probabilities come
from its distribution ``logging`` (n, A) when known, else from ``logging_groups`` (n, G), which
:func:`evaluate` estimates from the log (:func:`fit_group_propensities`) when it has the contexts.

``switch_dr`` is the variant of Open Bandit Pipeline's ``SwitchDoublyRobust`` (the DM term on every
row, the importance-weighted correction only on rows whose weight is at most ``tau``): it trades
the variance of large weights for the reward model's bias on those rows.

**Confidence intervals** are bootstrap intervals (percentile by default): they target the population value
``V(pi)`` above, not its value on the logged contexts only. By default the rows are the units
resampled (taken as independent draws of context, logged action and reward). Rows of a real
decision log are not independent, though: a customer recurs in many rows, and their contexts (so
their direct-method terms) are alike, so a bootstrap over rows underestimates the variance of the
context-driven terms (DM above all, and switch-DR where it is mostly DM). Pass ``clusters`` (n,)
(customer ids, say; any hashable ids) for a **cluster bootstrap**: the customers are resampled with
replacement, and a replicate is the sum of the terms of the drawn customers' rows over the number
of those rows (a ratio of sums; SNIPS: the resampled sum of ``w r`` over the resampled sum of
``w``). With one row per cluster it is exactly the row bootstrap. :func:`evaluate` clusters a
:class:`nba.log.LoggedBatch` by its ``customer_id`` unless told not to.

Every estimator resamples the same units (row or cluster indices) for a given ``seed`` and
number of units, so estimates from one seed are comparable (and :func:`evaluate` gives the same
numbers as the single estimators). The per-row terms are computed once (and summed per cluster);
the resampled means are sums of gathered terms, ``CHUNK`` indices at a time, so memory stays
bounded (about 80 MB on top of the inputs, whatever n). When the percentile interval misses the point estimate
(a badly skewed bootstrap distribution), it is widened to contain it. ``n_bootstrap=0`` skips the
bootstrap: the interval and standard error are then NaN.

**Paired lift.** Two policies' estimates from one log with one seed resample the same units, and each
:class:`Estimate` keeps its replicates: :func:`lift` gives ``V(target) - V(base)`` with the interval of the
replicates' differences. The rows where the two policies agree cancel in every replicate, so when a
candidate departs from the champion on a fifth of the rows its lift is known far better than the two
intervals side by side say (on the quickstart's log, IPS's half-width on ``lgbm_funnel`` over business as
usual was 0.148 paired against 0.245 combined). The lift is no less biased than its estimator, and the
narrower interval shows the bias more: with marginal DR, two policies that weigh every group alike and
differ only within groups are compared through the reward model alone (``bench/RESULTS.md``). The
interval's method is the estimates': studentized estimates keep each unit's sums of their terms, and their
lift is the bootstrap-t interval of the difference. Estimates of two seeds, or of none (fresh entropy), do
not share their resamples and are refused.

**How many rows.** Percentile intervals lean on the mean of the per-row terms being close to
normal. Marketing rewards are rare, large purchases (a heavily skewed distribution), so small logs
give intervals that fall short of the truth more often than their level says: on the simulator,
95% intervals of IPS, SNIPS and DR covered about 85% of the time at 5,000 rows per log, about 91%
at 20,000 and 93-96% at 50,000 (``tests/nba/test_ope.py``).

``interval="studentized"`` (:data:`INTERVALS`) gives the **bootstrap-t** interval instead, from the
same resamples: each resample's estimate minus the log's, over that resample's own standard error
(the linearised variance of its ratio of sums over the resampled units), and the log's standard
error times those quantiles. It corrects for the skew to second order, reaching further above the
estimate on right-skewed terms. Where the log lacks the rare large rewards altogether, no interval
built from that log can know of them. On the quickstart's setting, over 50 logs, it raised marginal
DR's coverage little, at 1.5-1.7 times the width (``bench/ope_coverage.py``, ``bench/RESULTS.md``).
So the percentile interval stays the default.

**Support diagnostics**, on every :class:`Estimate`:

* ``ess``: effective sample size of the importance weights, ``(sum_i w_i)^2 / sum_i w_i^2``
  (``n`` when the target is the logging policy; small when a few rows carry the estimate);
* ``max_weight``: the largest ``w_i``;
* ``unsupported_mass``: the average over rows of the target's probability on actions the logger
  could not have taken. When the logging distribution ``logging`` (n, A) is given, that is the
  target's mass where ``logging == 0`` in that row; otherwise, the target's mass on actions that
  never appear in the log's ``actions`` at all (a lower bound on the true unsupported mass). IPS,
  SNIPS and DR are biased by the reward of that mass; only a correct reward model covers it.

**The support check**, on every :class:`Estimate`: ``support_gap`` is the target's mass on
*thinly supported* units, averaged over the rows, where a unit is an action (IPS, SNIPS, DM, DR,
switch-DR) or a group (MIPS, MDR) and it is thinly supported in a context when the target gives it
more than ``support_weight`` (:data:`SUPPORT_WEIGHT`, 100) times the logger's probability there
(so any unit the logger could not take). Without the logging distribution it is read from the log
alone: the units whose share of the logged rows is below ``1 / support_weight`` of the target's
mean probability of them (those never logged included). ``unsupported`` is ``support_gap >
support_share`` (:data:`SUPPORT_SHARE`, 5%): such an estimate rests on a few rows (or on the model
alone where the logger never acted), its interval is not to be trusted, and it must not be ranked
on or promote a policy. A deterministic target that departs from a logger exploring 20% of the
time over about 110 eligible actions has weights near 550 on actions, near 40 on channels.

**The reward model's uncertainty.** The bootstrap above holds the reward model fixed, so DM's
interval leaves the model's error out (tight, and wrong wherever the model is). With a
:class:`RewardModel` (:func:`fit_reward_models`: the cross-fitted model plus refits on bootstrap
resamples of the customers), the intervals of DM, DR, switch-DR and MDR also carry the spread of
what the estimate would be with each refit in place of the model; ``model_se`` reports that share.
It is the model's variance, not its bias.

All functions take NumPy arrays and are vectorised; bad input raises ``ValueError`` naming the
field, e.g. ``propensities: row 5 is 0``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from nba.actions import ActionSpace

CHUNK = 1 << 22  # bootstrap indices drawn and gathered at a time (32 MB of int64)
_ROWS = 1 << 16  # rows at a time in the unsupported-mass diagnostic (bounds its (n, A) temporaries)
_SUM_TOL = 1e-6  # tolerance on the target's row sums

# The support check (module docstring): a unit (an action, or an action group for the marginal
# estimators) is *thinly supported* in a context when the target gives it more than SUPPORT_WEIGHT
# times the logger's probability there (the logger never took it: any weight); an estimate whose
# target puts more than SUPPORT_SHARE of its mass on such units is flagged ``unsupported``.
# (bench/ope_coverage.py: with a 10% share the action-level IPS of the rule-based journey, 8.6% of
# its mass thinly supported, was not flagged and covered 65% of the time; at 5% it is flagged.)
SUPPORT_WEIGHT = 100.0
SUPPORT_SHARE = 0.05

# How the bootstrap's replicates become an interval (module docstring): their percentiles, or the
# bootstrap-t ("studentized") interval, each replicate studentized by its own standard error.
INTERVALS: tuple[str, ...] = ("percentile", "studentized")
INTERVAL = "percentile"


@dataclass(frozen=True)
class Estimate:
    """One estimator's estimate of a policy value, its bootstrap interval and support diagnostics."""

    estimator: str  # a name of ESTIMATORS: "ips", "snips", "dm", "dr", "switch_dr", "mips", "mdr"
    value: float  # the point estimate of V(pi)
    ci_low: float  # lower end of the bootstrap interval (percentile, or studentized: INTERVALS)
    ci_high: float  # upper end
    level: float  # the interval's nominal coverage, e.g. 0.95
    n: int  # logged rows
    std_error: float  # standard deviation of the bootstrap replicates
    ess: float  # effective sample size of the importance weights, (sum w)^2 / sum w^2
    max_weight: float  # largest importance weight pi(a_i|x_i) / p_i
    unsupported_mass: float  # mean target mass on actions the logger could not take (module docstring)
    n_clusters: int | None = None  # clusters the bootstrap resampled (None: the rows were the units)
    support_gap: float = 0.0  # target mass on units (actions or groups) the log does not support (support check)
    unsupported: bool = False  # support_gap > the support threshold: never rank or promote on this estimate
    model_se: float = 0.0  # the reward model's share of std_error (refit spread, see RewardModel); 0: none
    interval: str = "percentile"  # how the replicates became the interval (INTERVALS)
    # the bootstrap's replicates (the refits' shifts included): two estimates of one log resample the same
    # units, so their replicates pair up row for row (lift); None where not kept
    replicates: np.ndarray | None = field(default=None, compare=False, repr=False)
    seed: int | None = field(default=None, compare=False)  # the resampling's seed (None: fresh entropy)
    # each resampled unit's sum of the terms and of the denominator (its rows, or SNIPS's weights): what a
    # studentized lift needs (lift); kept by studentized estimates only
    units: tuple[np.ndarray, np.ndarray] | None = field(default=None, compare=False, repr=False)

    def covers(self, truth: float) -> bool:
        """Whether the interval contains ``truth``."""
        return bool(self.ci_low <= truth <= self.ci_high)


# ----------------------------------------------------------------------------- validation
def _first_bad(bad: np.ndarray) -> int:
    return int(np.flatnonzero(bad)[0])


def _check_logged(
    rewards: Any, actions: Any, propensities: Any, target: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate the common inputs; raise ValueError naming the field."""
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.ndim != 1:
        raise ValueError(f"rewards: expected a 1-D array (n,), got shape {rewards.shape}")
    n = rewards.shape[0]
    if n == 0:
        raise ValueError("rewards: the log is empty")
    if not np.isfinite(rewards).all():
        raise ValueError(f"rewards: row {_first_bad(~np.isfinite(rewards))} is not finite")
    actions = np.asarray(actions)
    if actions.shape != (n,):
        raise ValueError(f"actions: expected shape ({n},), got {actions.shape}")
    if actions.dtype.kind not in "iu":
        raise ValueError(f"actions: expected integer action indices, got dtype {actions.dtype}")
    actions = actions.astype(np.int64, copy=False)
    propensities = np.asarray(propensities, dtype=np.float64)
    if propensities.shape != (n,):
        raise ValueError(f"propensities: expected shape ({n},), got {propensities.shape}")
    bad = ~(np.isfinite(propensities) & (propensities > 0) & (propensities <= 1))
    if bad.any():
        i = _first_bad(bad)
        raise ValueError(f"propensities: row {i} is {propensities[i]:g}, must be in (0, 1]")
    target = np.asarray(target)
    if target.ndim != 2 or target.shape[0] != n:
        raise ValueError(f"target: expected shape ({n}, A), got {target.shape}")
    n_actions = target.shape[1]
    if actions.min() < 0 or actions.max() >= n_actions:
        i = _first_bad((actions < 0) | (actions >= n_actions))
        raise ValueError(f"actions: row {i} is {actions[i]}, outside the target's actions [0, {n_actions})")
    return rewards, actions, propensities, check_distribution(target, "target", (n, n_actions))


def check_distribution(probs: Any, name: str, shape: tuple[int, int]) -> np.ndarray:
    """``probs`` as float64 (n, A) of ``shape``, each row a distribution over the actions; ValueError naming
    ``name`` (a wrong shape, a row not finite, a negative probability, a row that does not sum to 1)."""
    probs = np.asarray(probs)
    if probs.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {probs.shape}")
    probs = probs.astype(np.float64, copy=False)
    # two passes over (n, A) with (n,) results: a NaN or infinity makes its row's sum non-finite
    s = probs.sum(axis=1)
    if not np.isfinite(s).all():
        raise ValueError(f"{name}: row {_first_bad(~np.isfinite(s))} is not finite")
    neg = probs.min(axis=1) < 0
    if neg.any():
        raise ValueError(f"{name}: row {_first_bad(neg)} has a negative probability")
    off = np.abs(s - 1.0) > _SUM_TOL
    if off.any():
        i = _first_bad(off)
        raise ValueError(f"{name}: rows must sum to 1 (row {i} sums to {s[i]:.6g})")
    return probs


def _check_model(q_hat: Any, shape: tuple[int, int]) -> tuple[RewardModel | None, np.ndarray]:
    """The reward model, a :class:`RewardModel` or (n, A) predictions: (the RewardModel or None, the predictions)."""
    model = q_hat if isinstance(q_hat, RewardModel) else None
    if q_hat is None:
        raise ValueError("q_hat: a reward model's predictions (n, A) are required")
    q_hat = np.asarray(q_hat if model is None else model.q_hat)
    if q_hat.shape != shape:
        raise ValueError(f"q_hat: expected shape {shape}, got {q_hat.shape}")
    q_hat = q_hat.astype(np.float64, copy=False)
    s = q_hat.sum(axis=1)  # a NaN or infinity makes its row's sum non-finite
    if not np.isfinite(s).all():
        raise ValueError(f"q_hat: row {_first_bad(~np.isfinite(s))} is not finite")
    return model, q_hat


def _check_options(
    n: int, level: float, n_bootstrap: int, support_weight: float, support_share: float, clusters: Any, tau: float
) -> tuple[np.ndarray | None, float, float]:
    """The options every estimator shares: (the clusters' codes or None, the support weight, tau)."""
    if not (isinstance(level, (float, int)) and 0.0 < level < 1.0):
        raise ValueError(f"level: must be in (0, 1), got {level!r}")
    if not (isinstance(n_bootstrap, (int, np.integer)) and n_bootstrap >= 0):
        raise ValueError(f"n_bootstrap: must be an integer >= 0, got {n_bootstrap!r}")
    if n_bootstrap == 1:
        raise ValueError("n_bootstrap: one resample gives no interval; use 0 (none) or >= 2")
    if not (isinstance(support_weight, (float, int)) and support_weight >= 1):
        raise ValueError(f"support_weight: must be a number >= 1, got {support_weight!r}")
    if not (isinstance(support_share, (float, int)) and 0 <= support_share <= 1):
        raise ValueError(f"support_share: must be in [0, 1], got {support_share!r}")
    codes = None if clusters is None else cluster_codes(clusters, n)
    tau = float(tau)
    if not tau >= 0:
        raise ValueError(f"tau: must be >= 0, got {tau!r}")
    return codes, float(support_weight), tau


def _check_interval(interval: Any) -> str:
    if interval not in INTERVALS:
        raise ValueError(f"interval: unknown method {interval!r}; valid: {', '.join(INTERVALS)}")
    return str(interval)


def _check_logging(logging: Any, shape: tuple[int, int]) -> np.ndarray | None:
    if logging is None:
        return None
    logging = np.asarray(logging, dtype=np.float64)
    if logging.shape != shape:
        raise ValueError(f"logging: expected shape {shape}, got {logging.shape}")
    return logging


# ----------------------------------------------------------------------------- diagnostics
def _unsupported_mass(actions: np.ndarray, target: np.ndarray, logging: np.ndarray | None) -> float:
    if logging is not None:
        total = 0.0
        for start in range(0, target.shape[0], _ROWS):
            t, m = target[start : start + _ROWS], logging[start : start + _ROWS]
            total += float(np.where(m <= 0, t, 0.0).sum())
        return total / target.shape[0]
    never = (np.bincount(actions, minlength=target.shape[1]) == 0).astype(np.float64)
    return float((target @ never).mean())


def _unit_gap(units: np.ndarray, target_u: np.ndarray, logging_u: np.ndarray | None, weight: float) -> float:
    """The target's mass on thinly supported units (actions or groups), averaged over the rows.

    ``units`` (n,): the logged unit of each row; ``target_u`` (n, U): the target's probability of
    each unit. With the logger's ``logging_u`` (n, U): the mass where ``target > weight * logging``
    row by row. Without it, from the log alone: the mean mass of the units whose logged share of
    rows is below ``1 / weight`` of the target's mean probability of them (the never-logged ones
    included), a context-free reading of the same rule.
    """
    n = target_u.shape[0]
    if logging_u is not None:
        total = 0.0
        for start in range(0, n, _ROWS):
            t, m = target_u[start : start + _ROWS], logging_u[start : start + _ROWS]
            total += float(np.where(t > weight * m, t, 0.0).sum())
        return total / n
    mean = target_u.mean(axis=0)
    counts = np.bincount(units, minlength=target_u.shape[1])[: target_u.shape[1]]
    return float(mean[counts * weight < n * mean].sum())


# ----------------------------------------------------------------------------- resampling
def _resampled_sums(units: np.ndarray, n_bootstrap: int, seed: int | None) -> np.ndarray:
    """(n_bootstrap, k) sums of ``units`` (k, m) over resamples of its m columns, ``CHUNK`` indices at a time."""
    k, m = units.shape
    rng = np.random.default_rng(seed)
    sums = np.zeros((n_bootstrap, k))
    if m <= CHUNK:
        per = max(1, CHUNK // m)
        for b0 in range(0, n_bootstrap, per):
            idx = rng.integers(0, m, size=(min(per, n_bootstrap - b0), m))
            for j in range(k):
                sums[b0 : b0 + idx.shape[0], j] = units[j][idx].sum(axis=1)
    else:
        for b in range(n_bootstrap):
            for start in range(0, m, CHUNK):
                idx = rng.integers(0, m, size=min(CHUNK, m - start))
                for j in range(k):
                    sums[b, j] += units[j][idx].sum()
    return sums


def cluster_codes(clusters: Any, n: int) -> np.ndarray:
    """(n,) int64 codes ``0 .. G-1`` of the cluster ids, numbered in order of first appearance.

    Object arrays (string ids, say) are coded through a dict (hash-based: 1,000,000 ids in about
    0.5 s, where sorting Python objects takes several seconds); other dtypes through ``np.unique``.
    Raises ValueError naming ``clusters`` on a wrong shape or unhashable ids.
    """
    clusters = np.asarray(clusters)
    if clusters.shape != (n,):
        raise ValueError(f"clusters: expected shape ({n},), got {clusters.shape}")
    if clusters.dtype == object:
        seen: dict[Any, int] = {}
        try:
            return np.fromiter((seen.setdefault(c, len(seen)) for c in clusters.tolist()), np.int64, n)
        except TypeError as err:
            raise ValueError(f"clusters: ids must be hashable ({err})") from None
    _, first, inverse = np.unique(clusters, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.reshape(n)]


def resample_means(columns: np.ndarray, n_bootstrap: int, seed: int | None, clusters: Any = None) -> np.ndarray:
    """(n_bootstrap, k) means of ``columns`` (k, n) over bootstrap resamples.

    Without ``clusters`` the n rows are resampled. With ``clusters`` (n,) ids, the clusters are
    resampled with replacement and each replicate is the sum of the drawn clusters' terms over
    their number of rows (per-cluster sums by ``bincount``, then resampled like rows). Every column
    is resampled with the same indices (drawn from ``default_rng(seed)``), so the replicates depend
    on ``seed``, the number of units and ``n_bootstrap`` only, not on which columns are asked for.
    Clusters are numbered in order of first appearance (:func:`cluster_codes`), so with one row per
    cluster (whatever the ids) the replicates are exactly the row bootstrap's.
    """
    columns = np.atleast_2d(np.asarray(columns, dtype=np.float64))
    n = columns.shape[1]
    return _means(columns, n_bootstrap, seed, None if clusters is None else cluster_codes(clusters, n))


def _means(columns: np.ndarray, n_bootstrap: int, seed: int | None, codes: np.ndarray | None) -> np.ndarray:
    """:func:`resample_means` on (k, n) float columns, the clusters given by their codes."""
    columns = np.atleast_2d(columns)
    k, n = columns.shape
    if n_bootstrap == 0:
        return np.zeros((0, k))
    if codes is None:
        return _resampled_sums(columns, n_bootstrap, seed) / n
    g = int(codes.max()) + 1
    units = np.empty((k + 1, g))
    for j in range(k):
        units[j] = np.bincount(codes, weights=columns[j], minlength=g)
    units[k] = np.bincount(codes, minlength=g)
    sums = _resampled_sums(units, n_bootstrap, seed)
    return sums[:, :k] / sums[:, k:]


def _unit_sums(
    ratios: Sequence[tuple[np.ndarray, np.ndarray | None]], codes: np.ndarray | None
) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """Each estimate of ``ratios`` ((num (n,), den (n,) or None for the rows' count) each) as the sums of its
    ``num`` and ``den`` over each resampled unit (the rows, or the clusters of ``codes``), and each unit's
    rows: ``[(A (g,), B (g,)), ...], rows (g,)``. A ``den`` of None is the rows array itself, and arrays
    that several estimates share are summed once (shared by identity)."""
    n = len(ratios[0][0])
    codes = np.arange(n) if codes is None else codes
    g = int(codes.max()) + 1
    count = np.bincount(codes, minlength=g).astype(np.float64)
    sums: dict[int, np.ndarray] = {}

    def unit(v: np.ndarray | None) -> np.ndarray:
        if v is None:
            return count
        if id(v) not in sums:
            sums[id(v)] = np.bincount(codes, weights=v, minlength=g)
        return sums[id(v)]

    return [(unit(num), unit(den)) for num, den in ratios], count


def _pivots(
    combos: Sequence[Sequence[tuple[float, tuple[np.ndarray, np.ndarray]]]],
    count: np.ndarray | None,
    n_bootstrap: int,
    seed: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """(n_bootstrap, k) bootstrap replicates of k estimates, and their studentized ones (bootstrap-t).

    Estimate j is ``sum_i s_i A_i / B_i`` over its terms ``(s_i, (A_i, B_i))`` in ``combos[j]``: one ratio
    of sums (an estimate), or the difference of two (a lift), ``A_i`` and ``B_i`` (g,) each unit's sums of
    the numerator and the denominator (:func:`_unit_sums`), ``count`` (g,) each unit's rows (None: not
    known; a replicate is then ``A / B`` over the resample). A resample's estimate m_b and its own standard
    error s_b (the linearised variance over the resampled units, sum_c n_c u_c^2 x G / (G - 1) with
    u_c = sum_i s_i (a_ic - m_ib b_ic) / B_ib) give t_b = (m_b - m) / s_b, and the studentized replicate
    is ``m - s t_b`` (m, s: the log's estimate and standard error): the quantiles of these are the
    bootstrap-t interval. The units are resampled with the same indices as :func:`_means` (same seed, same
    number of units), and a ratio's replicates are the ones :func:`_means` (and :func:`_ratio` for a
    denominator other than the rows) gives. A resample whose standard error is 0 gives a NaN studentized
    replicate (left out of the quantiles), or the estimate itself where it equals it (terms all alike).
    """
    vectors: dict[int, np.ndarray] = {} if count is None else {id(count): count}  # distinct arrays, by identity
    for combo in combos:
        for _, (a, b) in combo:
            vectors.setdefault(id(a), a)
            vectors.setdefault(id(b), b)
    keys = list(vectors)
    g = len(vectors[keys[0]])
    # the products each estimate's standard error reads: those of its own arrays, not every pair of the keys
    own = [list(dict.fromkeys(id(v) for _, ab in combo for v in ab)) for combo in combos]
    within = [[(i, j) for k, i in enumerate(ids) for j in ids[k:]] for ids in own]
    pairs = list(dict.fromkeys(p for ps in within for p in ps))
    resampled = _resampled_sums(
        np.vstack([vectors[k] for k in keys] + [vectors[i] * vectors[j] for i, j in pairs]), n_bootstrap, seed
    )
    col = {k: resampled[:, c] for c, k in enumerate(keys)}
    prod = {p: resampled[:, len(keys) + c] for c, p in enumerate(pairs)}
    scale = g / (g - 1) if g > 1 else np.nan
    means, out = np.empty((n_bootstrap, len(combos))), np.empty((n_bootstrap, len(combos)))
    with np.errstate(invalid="ignore", divide="ignore"):
        for j, combo in enumerate(combos):
            m, u = 0.0, np.zeros(g)
            mean, mb = np.zeros(n_bootstrap), np.zeros(n_bootstrap)
            coef = {k: np.zeros(n_bootstrap) for k in own[j]}
            for sign, (a, b) in combo:
                m_i = a.sum() / b.sum()
                m, u = m + sign * m_i, u + sign * (a - m_i * b) / b.sum()
                sa, sb = col[id(a)], col[id(b)]
                if count is None:
                    mean += sign * sa / sb
                else:  # as _means takes them: sums over the resampled rows, then their ratio
                    size = col[id(count)]
                    mean += sign * (sa / size if b is count else _ratio(sa / size, sb / size))
                mb += sign * sa / sb
                coef[id(a)] += sign / sb
                coef[id(b)] -= sign * (sa / sb) / sb
            s = np.sqrt(np.sum(u * u) * scale)
            quad = sum((1.0 if i == k else 2.0) * coef[i] * coef[k] * prod[(i, k)] for i, k in within[j])
            sd = np.sqrt(np.maximum(quad, 0.0) * scale)
            t = np.where(sd > 0, (mb - m) / np.where(sd > 0, sd, 1.0), np.where(mb == m, 0.0, np.nan))
            means[:, j], out[:, j] = mean, m - s * t
    return means, out


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


# ----------------------------------------------------------------------------- marginal estimators
GROUPINGS: tuple[str, ...] = ("channel", "channel_content", "action")
DEFAULT_GROUPING = "channel"


def action_groups(space: ActionSpace | int, by: str = DEFAULT_GROUPING) -> np.ndarray:
    """(A,) the group (embedding) code of every action, no contact alone in group 0.

    ``by``: ``"channel"`` (content and send slot collapse), ``"channel_content"`` (the send slot
    collapses) or ``"action"`` (every action its own group: the marginal estimators are then IPS
    and DR). A number of actions (no structure) allows ``"action"`` only.
    """
    if by not in GROUPINGS:
        raise ValueError(f"groups: unknown grouping {by!r}; valid: {', '.join(GROUPINGS)}")
    if isinstance(space, ActionSpace):
        if by == "action":
            return np.arange(space.n_actions)
        channel, content = space.channel_of.astype(np.int64), space.content_of.astype(np.int64)
        code = channel + 1 if by == "channel" else 1 + channel * space.n_contents + content
        return np.where(channel < 0, 0, code)
    if isinstance(space, (int, np.integer)) and space >= 1:
        if by != "action":
            raise ValueError(f"groups: {by!r} needs an ActionSpace; a number of actions has no structure")
        return np.arange(int(space))
    raise ValueError(f"space: expected an ActionSpace or a number of actions >= 1, got {space!r}")


def _check_groups(groups: Any, n_actions: int) -> tuple[np.ndarray, int]:
    """(A,) codes 0..G-1 of the actions' groups (renumbered in order of value) and G."""
    groups = np.asarray(groups)
    if groups.shape != (n_actions,) or groups.dtype.kind not in "iu":
        raise ValueError(
            f"groups: expected integer group codes of shape ({n_actions},), got {groups.dtype} {groups.shape}"
        )
    _, codes = np.unique(groups, return_inverse=True)
    codes = codes.reshape(n_actions).astype(np.int64)
    return codes, int(codes.max()) + 1


def group_probabilities(probs: np.ndarray, groups: np.ndarray, n_groups: int | None = None) -> np.ndarray:
    """(n, G) each group's probability, the sum of its actions' in ``probs`` (n, A)."""
    g = int(groups.max()) + 1 if n_groups is None else n_groups
    onehot = np.zeros((len(groups), g))
    onehot[np.arange(len(groups)), groups] = 1.0
    return np.asarray(probs, dtype=np.float64) @ onehot


def _marginal(
    a: np.ndarray, p: np.ndarray, t: np.ndarray, groups: Any, logging: np.ndarray | None, logging_groups: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Marginal weights ``pi(e_i|x_i) / mu(e_i|x_i)`` and the support check's inputs.

    Returns (weights (n,), the rows' group codes (n,), the target's group probabilities (n, G),
    the logger's (n, G) or None when only the logged propensities are known and the groups are the
    actions themselves).
    """
    n, n_actions = t.shape
    codes, g = _check_groups(groups, n_actions)
    e = codes[a]
    t_g = group_probabilities(t, codes, g)
    if logging is not None:
        l_g = group_probabilities(logging, codes, g)
    elif logging_groups is not None:
        l_g = np.asarray(logging_groups, dtype=np.float64)
        if l_g.shape != (n, g):
            raise ValueError(f"logging_groups: expected shape ({n}, {g}), got {l_g.shape}")
        if not np.isfinite(l_g).all() or (l_g < 0).any():
            raise ValueError("logging_groups: probabilities must be finite and >= 0")
    elif g == n_actions:  # every action its own group: the logged propensity is the group's
        return t_g[np.arange(n), e] / p, e, t_g, None
    else:
        raise ValueError(
            "logging: the marginal estimators need the logging distribution (n, A) or its group "
            "probabilities logging_groups (n, G) (estimate them with fit_group_propensities)"
        )
    # the logged action's group is at least as likely as the action itself
    mu = np.maximum(l_g[np.arange(n), e], p)
    return t_g[np.arange(n), e] / mu, e, t_g, l_g


# ----------------------------------------------------------------------------- one estimator shape
# An estimator is its per-row terms, a function of the validated log, and how they become an
# estimate (_Estimator). Everything else is shared: the checks, the resampling (every estimator
# resamples the same units for a seed), the diagnostics and the Estimate (_estimate), so
# evaluate and the single estimators are the same code.
@dataclass(frozen=True, eq=False)
class _Log:
    """A validated log and the parts of the estimators' terms, each computed once, when first used."""

    r: np.ndarray  # (n,) rewards
    a: np.ndarray  # (n,) logged actions
    p: np.ndarray  # (n,) their logged propensities
    t: np.ndarray  # (n, A) the target's distribution
    q: np.ndarray | None  # (n, A) the reward model's predictions (None: no estimator here reads one)
    logging: np.ndarray | None  # (n, A) the logging distribution, when known
    tau: float  # switch-DR's weight threshold
    groups: Any  # (A,) the marginal estimators' action groups
    logging_groups: Any  # (n, G) the logger's group probabilities, when ``logging`` is unknown
    support_weight: float  # the support check's weight

    @cached_property
    def w(self) -> np.ndarray:  # (n,) importance weights pi(a_i|x_i) / p_i
        return self.t[np.arange(len(self.a)), self.a] / self.p

    @cached_property
    def wr(self) -> np.ndarray:  # (n,) w_i r_i (one array for IPS and SNIPS: resampled once)
        return self.w * self.r

    @property
    def model(self) -> np.ndarray:  # (n, A) q_hat, for the estimators that read it (they come with one)
        if self.q is None:
            raise ValueError("q_hat: this estimator needs the reward model's predictions")
        return self.q

    @cached_property
    def direct(self) -> np.ndarray:  # (n,) sum_a pi(a|x_i) q_hat(x_i, a), without an (n, A) temporary
        return np.einsum("ij,ij->i", self.t, self.model)

    @cached_property
    def residual(self) -> np.ndarray:  # (n,) r_i - q_hat(x_i, a_i)
        return self.r - self.model[np.arange(len(self.a)), self.a]

    @cached_property
    def marginal(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:  # _marginal's
        return _marginal(self.a, self.p, self.t, self.groups, self.logging, self.logging_groups)

    @property
    def wg(self) -> np.ndarray:  # (n,) group weights pi(e_i|x_i) / mu(e_i|x_i)
        return self.marginal[0]

    @cached_property
    def unsupported_mass(self) -> float:
        return _unsupported_mass(self.a, self.t, self.logging)

    @cached_property
    def action_gap(self) -> float:  # the support check on actions
        return _unit_gap(self.a, self.t, self.logging, self.support_weight)

    @cached_property
    def group_gap(self) -> float:  # the support check on groups
        _, e, t_g, l_g = self.marginal
        return _unit_gap(e, t_g, l_g, self.support_weight)


@dataclass(frozen=True)
class _Terms:
    """An estimator's per-row terms on one log."""

    values: np.ndarray  # (n,) the terms: the estimate is their mean
    weights: np.ndarray  # (n,) its importance weights (ess, max_weight)
    residual_weights: np.ndarray | None = None  # (n,) each row's weight on the model's residual (None: DM's 0)


@dataclass(frozen=True)
class _Estimator:
    """One estimator: its per-row terms, and how they become an estimate."""

    terms: Callable[[_Log], _Terms]
    model: bool = False  # its terms read the reward model: a RewardModel's refit spread widens its interval
    normalised: bool = False  # values w_i r_i: the estimate is sum_i w_i r_i / sum_i w_i, a replicate a ratio of sums
    marginal: bool = False  # its weights and support check are on action groups, not actions


def _switch_dr(x: _Log) -> _Terms:
    if x.tau == np.inf:
        return _Terms(x.direct + x.w * x.residual, x.w, x.w)
    switch = x.w <= x.tau
    return _Terms(x.direct + np.where(switch, x.w * x.residual, 0.0), x.w, np.where(switch, x.w, 0.0))


_ESTIMATORS: dict[str, _Estimator] = {
    "ips": _Estimator(lambda x: _Terms(x.wr, x.w)),
    "snips": _Estimator(lambda x: _Terms(x.wr, x.w), normalised=True),
    "dm": _Estimator(lambda x: _Terms(x.direct, x.w), model=True),
    "dr": _Estimator(lambda x: _Terms(x.direct + x.w * x.residual, x.w, x.w), model=True),
    "switch_dr": _Estimator(_switch_dr, model=True),
    "mips": _Estimator(lambda x: _Terms(x.wg * x.r, x.wg), marginal=True),
    "mdr": _Estimator(lambda x: _Terms(x.direct + x.wg * x.residual, x.wg, x.wg), model=True, marginal=True),
}
ESTIMATORS: tuple[str, ...] = tuple(_ESTIMATORS)


def _estimate(
    names: Sequence[str],
    x: _Log,
    level: float,
    n_bootstrap: int,
    seed: int | None,
    codes: np.ndarray | None,
    share: float,
    model: RewardModel | None,
    interval: str = "percentile",
) -> dict[str, Estimate]:
    """The estimators ``names`` on the log ``x``: their terms resampled together, diagnostics, Estimates."""
    terms = {name: _ESTIMATORS[name].terms(x) for name in names}
    for name, tm in terms.items():
        if _ESTIMATORS[name].normalised and tm.weights.sum() <= 0:
            raise ValueError(f"target: puts no probability on any logged action; {name.upper()} is undefined")
    # each estimate a ratio of sums: its terms over the rows' count, or (normalised) w r over w
    ratios = {name: (tm.values, tm.weights if _ESTIMATORS[name].normalised else None) for name, tm in terms.items()}
    pivots: dict[str, np.ndarray] = {}
    units: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if interval == "studentized" and n_bootstrap:
        sums, count = _unit_sums(list(ratios.values()), codes)
        units = dict(zip(terms, sums, strict=True))
        means, studentized = _pivots([[(1.0, u)] for u in sums], count, n_bootstrap, seed)
        reps = dict(zip(terms, means.T, strict=True))
        pivots = dict(zip(terms, studentized.T, strict=True))
    else:
        columns: dict[int, np.ndarray] = {}  # the distinct arrays to resample, by identity
        for num, den in ratios.values():
            columns.setdefault(id(num), num)
            if den is not None:
                columns.setdefault(id(den), den)
        mean = dict(zip(columns, _means(np.vstack(list(columns.values())), n_bootstrap, seed, codes).T, strict=True))
        reps = {
            name: mean[id(num)] if den is None else _ratio(mean[id(num)], mean[id(den)])
            for name, (num, den) in ratios.items()
        }
    out = {}
    for name, tm in terms.items():
        spec, w = _ESTIMATORS[name], tm.weights
        replicates = reps[name]
        value = float(np.dot(w, x.r) / w.sum()) if spec.normalised else float(tm.values.mean())
        spread = (
            model.shifts(x.t, tm.residual_weights)
            if (spec.model and model is not None and len(model.logged_delta) > 1)
            else None
        )
        lo, hi, se, model_se, replicates = _interval(value, replicates, level, spread, pivots.get(name))
        sw, sw2 = float(w.sum()), float(np.dot(w, w))
        gap = x.group_gap if spec.marginal else x.action_gap
        out[name] = Estimate(
            name,
            value,
            lo,
            hi,
            float(level),
            len(x.r),
            se,
            sw * sw / sw2 if sw2 > 0 else 0.0,
            float(w.max()),
            x.unsupported_mass,
            None if codes is None else int(codes.max()) + 1,
            float(gap),
            bool(gap > share),
            model_se,
            interval,
            replicates,
            seed,
            units.get(name),
        )
    return out


def _interval(
    value: float, replicates: np.ndarray, level: float, spread: np.ndarray | None, pivots: np.ndarray | None = None
) -> tuple[float, float, float, float, np.ndarray]:
    """(low, high, standard error, the reward model's share of it, the replicates with the refits' shifts)
    from the replicates and the refits' shifts.

    The interval is the replicates' percentiles, or with ``pivots`` (:func:`_pivots`) the
    studentized replicates'; the standard error is the replicates' spread either way.
    """
    model_se = 0.0
    if spread is not None and len(replicates):
        # the reward model's refit spread (centred, scaled to an unbiased variance) added to the
        # resamples' spread: replicate b moves by refit b mod K's shift (RewardModel)
        k = len(spread)
        shift = (spread - spread.mean()) * np.sqrt(k / (k - 1))
        model_se = float(np.std(shift))
        replicates = replicates + shift[np.arange(len(replicates)) % k]
        if pivots is not None:
            pivots = pivots + shift[np.arange(len(pivots)) % k]
    if not len(replicates):
        return float("nan"), float("nan"), float("nan"), model_se, replicates
    tail = (1.0 - level) / 2.0
    lo, hi = np.nanquantile(replicates if pivots is None else pivots, [tail, 1.0 - tail])
    return min(float(lo), value), max(float(hi), value), float(np.nanstd(replicates, ddof=1)), model_se, replicates


def _single(
    name: str,
    rewards,
    actions,
    propensities,
    target,
    q_hat=None,
    groups=None,
    tau: float = np.inf,
    *,
    level: float,
    n_bootstrap: int,
    seed: int | None,
    interval: str,
    logging,
    clusters,
    support_weight: float,
    support_share: float,
    logging_groups=None,
) -> Estimate:
    """One estimator on one log."""
    r, a, p, t = _check_logged(rewards, actions, propensities, target)
    model, q = _check_model(q_hat, t.shape) if _ESTIMATORS[name].model else (None, None)
    codes, weight, tau = _check_options(len(r), level, n_bootstrap, support_weight, support_share, clusters, tau)
    x = _Log(r, a, p, t, q, _check_logging(logging, t.shape), tau, groups, logging_groups, weight)
    return _estimate([name], x, level, n_bootstrap, seed, codes, support_share, model, _check_interval(interval))[name]


# ----------------------------------------------------------------------------- estimators
def ips(
    rewards,
    actions,
    propensities,
    target,
    *,
    level: float = 0.95,
    n_bootstrap: int = 200,
    seed: int | None = 0,
    interval: str = INTERVAL,
    logging=None,
    clusters=None,
    support_weight: float = SUPPORT_WEIGHT,
    support_share: float = SUPPORT_SHARE,
) -> Estimate:
    """Inverse propensity scoring: the mean of ``w_i r_i``.

    Unbiased when the propensities are the logger's exact probabilities and the logger gives every
    action the target may take a positive probability (support); its variance grows with the
    weights (see ``ess`` and ``max_weight``).

    Args:
        rewards: (n,) observed rewards.
        actions: (n,) logged action indices.
        propensities: (n,) the logging policy's probability of each logged action, in (0, 1].
        target: (n, A) the target policy's distribution over actions on each logged context.
        level: the interval's coverage.
        n_bootstrap: bootstrap resamples (0: no interval).
        seed: seed of the resampling.
        logging: optional (n, A) logging distribution, for the ``unsupported_mass`` diagnostic
            and the support check (row by row; else from the log's counts).
        clusters: optional (n,) ids of the units to resample (customer ids, say): a cluster
            bootstrap (module docstring). None: the rows are the units.
        support_weight, support_share: the support check's thresholds (module docstring):
            ``unsupported`` when more than ``support_share`` of the target's mass is on actions
            where its probability exceeds ``support_weight`` times the logger's.
    """
    return _single(
        "ips",
        rewards,
        actions,
        propensities,
        target,
        level=level,
        n_bootstrap=n_bootstrap,
        seed=seed,
        interval=interval,
        logging=logging,
        clusters=clusters,
        support_weight=support_weight,
        support_share=support_share,
    )


def snips(
    rewards,
    actions,
    propensities,
    target,
    *,
    level: float = 0.95,
    n_bootstrap: int = 200,
    seed: int | None = 0,
    interval: str = INTERVAL,
    logging=None,
    clusters=None,
    support_weight: float = SUPPORT_WEIGHT,
    support_share: float = SUPPORT_SHARE,
) -> Estimate:
    """Self-normalised IPS: ``sum_i w_i r_i / sum_i w_i``.

    Same assumptions as :func:`ips`; slightly biased (O(1/n)) but consistent, with lower variance,
    and always within the range of the observed rewards. Each bootstrap replicate is the ratio of
    the resampled sums. Raises when the target puts no mass on any logged action (``sum w = 0``).
    Arguments as :func:`ips`.
    """
    return _single(
        "snips",
        rewards,
        actions,
        propensities,
        target,
        level=level,
        n_bootstrap=n_bootstrap,
        seed=seed,
        interval=interval,
        logging=logging,
        clusters=clusters,
        support_weight=support_weight,
        support_share=support_share,
    )


def dm(
    rewards,
    actions,
    propensities,
    target,
    q_hat,
    *,
    level: float = 0.95,
    n_bootstrap: int = 200,
    seed: int | None = 0,
    interval: str = INTERVAL,
    logging=None,
    clusters=None,
    support_weight: float = SUPPORT_WEIGHT,
    support_share: float = SUPPORT_SHARE,
) -> Estimate:
    """Direct method: the mean over rows of ``sum_a pi(a|x_i) q_hat(x_i, a)``.

    Needs no support and no propensities, but is only as good as the reward model: unbiased when
    ``q_hat`` is the exact expected reward, biased as much as the model is otherwise. The bootstrap
    resamples contexts with the model held fixed, so the interval does **not** include the model's
    error. ``q_hat`` (n, A): the reward model's prediction for every action on every logged context
    (out of fold, see :func:`fit_reward_model`), or a :class:`RewardModel`, whose refit spread
    widens the interval by the model's uncertainty (as in :func:`evaluate`). Other arguments as
    :func:`ips` (rewards, actions and propensities are checked and used for the diagnostics only).
    """
    return _single(
        "dm",
        rewards,
        actions,
        propensities,
        target,
        q_hat,
        level=level,
        n_bootstrap=n_bootstrap,
        seed=seed,
        interval=interval,
        logging=logging,
        clusters=clusters,
        support_weight=support_weight,
        support_share=support_share,
    )


def dr(
    rewards,
    actions,
    propensities,
    target,
    q_hat,
    *,
    level: float = 0.95,
    n_bootstrap: int = 200,
    seed: int | None = 0,
    interval: str = INTERVAL,
    logging=None,
    clusters=None,
    support_weight: float = SUPPORT_WEIGHT,
    support_share: float = SUPPORT_SHARE,
) -> Estimate:
    """Doubly robust: the direct method plus the importance-weighted residual of the logged action.

    ``dm_i + w_i (r_i - q_hat(x_i, a_i))``: unbiased when either the propensities are exact with
    support, or the reward model is exact; with both, its variance is lowest. Arguments as
    :func:`dm`.
    """
    return _single(
        "dr",
        rewards,
        actions,
        propensities,
        target,
        q_hat,
        level=level,
        n_bootstrap=n_bootstrap,
        seed=seed,
        interval=interval,
        logging=logging,
        clusters=clusters,
        support_weight=support_weight,
        support_share=support_share,
    )


def switch_dr(
    rewards,
    actions,
    propensities,
    target,
    q_hat,
    tau: float,
    *,
    level: float = 0.95,
    n_bootstrap: int = 200,
    seed: int | None = 0,
    interval: str = INTERVAL,
    logging=None,
    clusters=None,
    support_weight: float = SUPPORT_WEIGHT,
    support_share: float = SUPPORT_SHARE,
) -> Estimate:
    """Switch doubly robust: DR whose importance-weighted correction is dropped where ``w_i > tau``.

    ``dm_i + 1{w_i <= tau} w_i (r_i - q_hat(x_i, a_i))``. Unbiased when the propensities are exact
    with support and the reward model is exact on the rows whose weight exceeds ``tau`` (there it
    is the direct method); ``tau = inf`` is exactly :func:`dr`, ``tau = 0`` the direct method.
    ``tau`` >= 0; other arguments as :func:`dm`.
    """
    return _single(
        "switch_dr",
        rewards,
        actions,
        propensities,
        target,
        q_hat,
        tau=tau,
        level=level,
        n_bootstrap=n_bootstrap,
        seed=seed,
        interval=interval,
        logging=logging,
        clusters=clusters,
        support_weight=support_weight,
        support_share=support_share,
    )


def mips(
    rewards,
    actions,
    propensities,
    target,
    groups,
    *,
    logging=None,
    logging_groups=None,
    level: float = 0.95,
    n_bootstrap: int = 200,
    seed: int | None = 0,
    interval: str = INTERVAL,
    clusters=None,
    support_weight: float = SUPPORT_WEIGHT,
    support_share: float = SUPPORT_SHARE,
) -> Estimate:
    """Marginalised IPS (Saito & Joachims 2022): IPS whose weights are on the action's group.

    ``w_i = pi(e_i | x_i) / mu(e_i | x_i)`` with ``e_i`` the logged action's group (``groups``
    (A,), from :func:`action_groups`) and a group's probability the sum of its actions'. Unbiased
    when every action of a group has the same expected reward in a context (no effect of what the
    group collapses, e.g. content and send slot for ``"channel"``), or the target chooses within a
    group as the logger does; it needs support on groups only, so its weights are far smaller than
    IPS's on a large action space. The logger's group probabilities come from ``logging`` (n, A)
    (exact) or ``logging_groups`` (n, G) (e.g. :func:`fit_group_propensities`); with neither, the
    groups must be the actions (then it is IPS). ``ess``, ``max_weight`` and the support check are
    on the group weights. Other arguments as :func:`ips`.
    """
    return _single(
        "mips",
        rewards,
        actions,
        propensities,
        target,
        groups=groups,
        level=level,
        n_bootstrap=n_bootstrap,
        seed=seed,
        interval=interval,
        logging=logging,
        logging_groups=logging_groups,
        clusters=clusters,
        support_weight=support_weight,
        support_share=support_share,
    )


def mdr(
    rewards,
    actions,
    propensities,
    target,
    q_hat,
    groups,
    *,
    logging=None,
    logging_groups=None,
    level: float = 0.95,
    n_bootstrap: int = 200,
    seed: int | None = 0,
    interval: str = INTERVAL,
    clusters=None,
    support_weight: float = SUPPORT_WEIGHT,
    support_share: float = SUPPORT_SHARE,
) -> Estimate:
    """Marginalised doubly robust: the direct method plus the group-weighted residual of the logged action.

    ``dm_i + w_i (r_i - q_hat(x_i, a_i))`` with the group weights of :func:`mips` (the form of
    OffCEM, Saito et al. 2023: the model carries the effects within a group, the weights the
    group's). Unbiased when the propensities of the groups are exact with support and the model's
    error is the same for every action of a group (in particular when the model is exact), or when
    the target chooses within each group as the logger does. Arguments as :func:`mips`, plus
    ``q_hat`` (n, A) as in :func:`dm`.
    """
    return _single(
        "mdr",
        rewards,
        actions,
        propensities,
        target,
        q_hat,
        groups,
        level=level,
        n_bootstrap=n_bootstrap,
        seed=seed,
        interval=interval,
        logging=logging,
        logging_groups=logging_groups,
        clusters=clusters,
        support_weight=support_weight,
        support_share=support_share,
    )


# ----------------------------------------------------------------------------- reward model
def _reward_setup(X, actions, rewards, space, mask, seed, learning_rate, num_leaves, min_data_in_leaf, threads):
    """Validated inputs of the reward model: (X, psi (A, k), rewards, actions, mask, LightGBM params)."""
    from nba.policies.lgbm import regression_params
    from nba.policies.linear import action_design

    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X: expected a 2-D array (n, d), got shape {X.shape}")
    n = X.shape[0]
    if not np.isfinite(X).all():
        raise ValueError("X: contains NaN or infinite values")
    if isinstance(space, ActionSpace):
        psi = action_design(space).astype(np.float32)
    elif isinstance(space, (int, np.integer)) and space >= 1:
        psi = np.eye(int(space), dtype=np.float32)
    else:
        raise ValueError(f"space: expected an ActionSpace or a number of actions >= 1, got {space!r}")
    n_actions = psi.shape[0]
    rewards, actions = _check_xy(rewards, actions, n, n_actions)
    if mask is None:
        mask = np.ones((n, n_actions), bool)
    mask = np.asarray(mask, bool)
    if mask.shape != (n, n_actions):
        raise ValueError(f"mask: expected shape ({n}, {n_actions}), got {mask.shape}")
    params = regression_params(
        {
            "learning_rate": learning_rate,
            "num_leaves": num_leaves,
            "min_data_in_leaf": min_data_in_leaf,
            "seed": seed,
            "threads": threads,
        }
    )
    return X, psi, rewards, actions, mask, params


def _train(params, X, psi, actions, rewards, rows, num_boost_round: int):
    import lightgbm as lgb

    from nba.policies.lgbm import joint_rows

    design = joint_rows(X[rows], psi, actions[rows])
    return lgb.train(params, lgb.Dataset(design, rewards[rows]), num_boost_round=num_boost_round)


def _predict(booster, X, psi, mask, rows, threads: int) -> np.ndarray:
    """(len(rows), A) predictions of every action on ``rows``; an ineligible action earns what no contact earns."""
    from nba.policies.lgbm import predict_eligible

    m = mask[rows]
    pred = predict_eligible(booster, X[rows], psi, m | _first_column(m), np.nan, threads)
    return np.where(m, pred, pred[:, :1])


def fit_reward_model(
    X,
    actions,
    rewards,
    space: int | ActionSpace,
    *,
    mask=None,
    folds: int = 2,
    seed: int = 0,
    num_boost_round: int = 100,
    learning_rate: float = 0.1,
    num_leaves: int = 31,
    min_data_in_leaf: int = 50,
    threads: int = 2,
) -> np.ndarray:
    """Cross-fitted LightGBM reward model: (n, A) out-of-fold predictions of every action's reward.

    Rows are split at random (``seed``) into ``folds`` parts; the model fitted on the other parts
    predicts every action for the rows of each part, so no row's prediction saw its own reward (the
    DR estimate stays free of the model's overfitting). The model regresses the reward on
    ``[x, psi(a)]`` as :mod:`nba.policies.lgbm` does: ``psi`` is the action features of an
    :class:`~nba.actions.ActionSpace` (channel, content, slot), or a one-hot action code when
    ``space`` is a number of actions. Where ``mask`` (n, A) is False the prediction is that of no
    contact (action 0): an ineligible action is not sent. :func:`fit_reward_models` adds the
    spread of refitted models, for intervals that carry the model's uncertainty.
    """
    X, psi, rewards, actions, mask, params = _reward_setup(
        X, actions, rewards, space, mask, seed, learning_rate, num_leaves, min_data_in_leaf, threads
    )
    n = X.shape[0]
    if not (isinstance(folds, (int, np.integer)) and 2 <= folds <= n):
        raise ValueError(f"folds: must be an integer in [2, n], got {folds!r}")
    fold = np.random.default_rng(seed).permutation(n) % folds
    out = np.empty((n, psi.shape[0]))
    for k in range(folds):
        booster = _train(params, X, psi, actions, rewards, fold != k, num_boost_round)
        test = np.flatnonzero(fold == k)
        out[test] = _predict(booster, X, psi, mask, test, threads)
    return out


# boosting rounds of fit_reward_models: on a 20,000-row log of the quickstart's exploring logger, 30
# rounds predicted the exact expected rewards better than 100 (mean absolute error 1.19 against
# 1.69: the rewards are mostly noise, more rounds fit it) at a quarter of the cost
EVAL_ROUNDS = 30
REFITS = 8  # refitted reward models behind the model's share of an interval (RewardModel)
PROBE_ROWS = 2000  # rows on which the refits predict every action


@dataclass(frozen=True)
class RewardModel:
    """A cross-fitted reward model and the spread of refits of it: how much DM and DR move with the model.

    ``q_hat`` is :func:`fit_reward_model`'s. Each of K refits is the same model trained on a
    bootstrap resample (of the customers when clusters are given) of a training fold's size; it
    predicts every action on ``probe`` rows and the logged action on its out-of-bag rows. For an
    estimator whose terms use the model, refit k's shift is what the estimate would move by with
    refit k in place of ``q_hat``: ``mean_probe sum_a pi(a|x) delta_k(x, a) - mean_oob c_i delta_k(x_i, a_i)``
    (``delta_k = q_k - q_hat``; ``c_i`` the row's weight on its residual: 0 for DM, ``w_i`` for DR).
    The shifts' spread is added to the bootstrap's (each replicate moves by one refit's centred
    shift), so DM and DR intervals widen where the model is unsure; ``Estimate.model_se`` is that
    share. The refits' spread is the model's variance, not its bias. It also carries the logger's
    group probabilities estimated from the same log (:func:`fit_group_propensities`, on
    ``groups``), which :func:`evaluate` uses for the marginal estimators when it is given neither
    ``logging`` nor ``logging_groups`` (fitted once per log, not once per target).
    """

    q_hat: np.ndarray  # (n, A) out-of-fold predictions
    probe: np.ndarray  # (m,) rows where the refits predict every action
    probe_delta: np.ndarray  # (K, m, A) float32: refit minus q_hat on the probe rows
    logged_delta: np.ndarray  # (K, n) refit minus q_hat on each row's logged action, NaN on in-bag rows
    groups: np.ndarray | None = None  # (A,) the action groups of logging_groups
    logging_groups: np.ndarray | None = None  # (n, G) the logger's group probabilities estimated from the log

    def shifts(self, target: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
        """(K,) each refit's shift of an estimate with residual weights ``weights`` (n,) (None: DM)."""
        t = np.asarray(target, dtype=np.float32)[self.probe]
        move = np.einsum("kma,ma->k", self.probe_delta, t, dtype=np.float64) / len(self.probe)
        if weights is not None:
            with np.errstate(invalid="ignore"):
                move = move - np.nanmean(self.logged_delta * weights, axis=1)
        return move


def fit_reward_models(
    X,
    actions,
    rewards,
    space: int | ActionSpace,
    *,
    mask=None,
    folds: int = 2,
    seed: int = 0,
    refits: int = REFITS,
    probe_rows: int = PROBE_ROWS,
    clusters=None,
    groups: str | Any | None = None,
    num_boost_round: int = EVAL_ROUNDS,
    learning_rate: float = 0.1,
    num_leaves: int = 31,
    min_data_in_leaf: int = 50,
    threads: int = 2,
) -> RewardModel:
    """:func:`fit_reward_model` plus ``refits`` refits on bootstrap resamples (:class:`RewardModel`).

    ``clusters`` (n,) ids: the refits resample customers, as the cluster bootstrap does. ``groups``:
    the marginal estimators' groups (a name of :func:`action_groups` or (A,) codes; default
    :data:`DEFAULT_GROUPING` on an ActionSpace), whose logger probabilities are estimated from the
    log (:func:`fit_group_propensities`; none when every action is its own group). The refits
    cost ``refits`` trainings on a fold's size and predictions on ``probe_rows`` rows; ``refits=0``
    gives no spread (the intervals then leave the model's uncertainty out). The model's other
    parameters as :func:`fit_reward_model` (but :data:`EVAL_ROUNDS` boosting rounds by default).
    """
    q = fit_reward_model(
        X,
        actions,
        rewards,
        space,
        mask=mask,
        folds=folds,
        seed=seed,
        num_boost_round=num_boost_round,
        learning_rate=learning_rate,
        num_leaves=num_leaves,
        min_data_in_leaf=min_data_in_leaf,
        threads=threads,
    )
    if not (isinstance(refits, (int, np.integer)) and refits >= 0 and refits != 1):
        raise ValueError(f"refits: must be 0 or an integer >= 2, got {refits!r}")
    if not (isinstance(probe_rows, (int, np.integer)) and probe_rows >= 1):
        raise ValueError(f"probe_rows: must be an integer >= 1, got {probe_rows!r}")
    from nba.policies.lgbm import joint_rows

    X, psi, rewards, actions, mask, params = _reward_setup(
        X, actions, rewards, space, mask, seed, learning_rate, num_leaves, min_data_in_leaf, threads
    )
    n, n_actions = q.shape
    rng = np.random.default_rng([seed, 0x5EED])
    probe = np.sort(rng.choice(n, size=min(probe_rows, n), replace=False))
    codes = np.arange(n) if clusters is None else cluster_codes(clusters, n)
    g = int(codes.max()) + 1
    members = np.argsort(codes, kind="stable")
    starts = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=g))])
    probe_delta = np.empty((refits, len(probe), n_actions), np.float32)
    logged_delta = np.full((refits, n), np.nan)
    for k in range(refits):
        drawn = rng.integers(0, g, size=max(1, (g * (folds - 1)) // folds))
        rows = np.concatenate([members[starts[c] : starts[c + 1]] for c in drawn])
        booster = _train(params, X, psi, actions, rewards, rows, num_boost_round)
        probe_delta[k] = _predict(booster, X, psi, mask, probe, threads) - q[probe]
        oob = np.ones(n, bool)
        oob[rows] = False
        oob = np.flatnonzero(oob)
        design = joint_rows(X[oob], psi, actions[oob])
        logged_delta[k, oob] = booster.predict(design, num_threads=threads) - q[oob, actions[oob]]
    if groups is None or isinstance(groups, str):
        groups = action_groups(space, groups or (DEFAULT_GROUPING if isinstance(space, ActionSpace) else "action"))
    codes, g = _check_groups(groups, n_actions)
    logging_groups = None
    if g < n_actions:
        logging_groups = fit_group_propensities(X, actions, codes, mask=mask, seed=seed, threads=threads)
    return RewardModel(q, probe, probe_delta, logged_delta, codes, logging_groups)


def fit_group_propensities(
    X,
    actions,
    groups,
    *,
    mask=None,
    seed: int = 0,
    num_boost_round: int = 20,
    learning_rate: float = 0.2,
    num_leaves: int = 7,
    min_data_in_leaf: int = 200,
    threads: int = 2,
) -> np.ndarray:
    """(n, G) the logger's probability of each action group, estimated from the log (no logging distribution).

    A multiclass LightGBM classifier of the logged action's group on the context; a group with no
    eligible action in a row (``mask`` (n, A)) gets 0 there and the rest is renormalised. For the
    marginal estimators when only the logged propensities are known (:func:`mips` lifts each row's
    group probability to at least its logged propensity). ``groups`` (A,) as :func:`action_groups`.
    """
    import lightgbm as lgb

    X = np.asarray(X)
    if X.ndim != 2 or not np.isfinite(X).all():
        raise ValueError(f"X: expected a finite 2-D array (n, d), got shape {X.shape}")
    n = X.shape[0]
    codes, g = _check_groups(groups, len(np.asarray(groups)))
    _, actions = _check_xy(np.zeros(n), actions, n, len(codes))
    y = codes[actions]
    if mask is None:
        mask = np.ones((n, len(codes)), bool)
    mask = np.asarray(mask, bool)
    if mask.shape != (n, len(codes)):
        raise ValueError(f"mask: expected shape ({n}, {len(codes)}), got {mask.shape}")
    params = {
        "objective": "multiclass",
        "num_class": g,
        "learning_rate": learning_rate,
        "num_leaves": num_leaves,
        "min_data_in_leaf": min_data_in_leaf,
        "seed": seed,
        "deterministic": True,
        "num_threads": threads,
        "verbose": -1,
    }
    booster = lgb.train(params, lgb.Dataset(X.astype(np.float32), y), num_boost_round=num_boost_round)
    prob = np.asarray(booster.predict(X.astype(np.float32), num_threads=threads)).reshape(n, g)
    prob = np.where(group_probabilities(mask, codes, g) > 0, prob, 0.0)
    total = prob.sum(axis=1, keepdims=True)
    return prob / np.where(total > 0, total, 1.0)


def _first_column(mask: np.ndarray) -> np.ndarray:
    m = np.zeros_like(mask)
    m[:, 0] = True
    return m


def _check_xy(rewards, actions, n: int, n_actions: int) -> tuple[np.ndarray, np.ndarray]:
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.shape != (n,):
        raise ValueError(f"rewards: expected shape ({n},), got {rewards.shape}")
    if not np.isfinite(rewards).all():
        raise ValueError(f"rewards: row {_first_bad(~np.isfinite(rewards))} is not finite")
    actions = np.asarray(actions)
    if actions.shape != (n,) or actions.dtype.kind not in "iu":
        raise ValueError(f"actions: expected integer indices of shape ({n},), got {actions.dtype} {actions.shape}")
    if n and (actions.min() < 0 or actions.max() >= n_actions):
        i = _first_bad((actions < 0) | (actions >= n_actions))
        raise ValueError(f"actions: row {i} is {actions[i]}, outside [0, {n_actions})")
    return rewards, actions.astype(np.int64)


# ----------------------------------------------------------------------------- all at once
def evaluate(
    target,
    data,
    *,
    q_hat=None,
    space: ActionSpace | int | None = None,
    tau: float = 20.0,
    logging=None,
    level: float = 0.95,
    n_bootstrap: int = 200,
    seed: int | None = 0,
    interval: str = INTERVAL,
    model_params: Mapping[str, Any] | None = None,
    clusters=None,
    cluster_by_customer: bool = True,
    groups: str | Any | None = None,
    logging_groups=None,
    support_weight: float = SUPPORT_WEIGHT,
    support_share: float = SUPPORT_SHARE,
) -> dict[str, Estimate]:
    """Every estimator on one log: ``{"ips", "snips", "dm", "dr", "switch_dr", "mips", "mdr"}`` -> :class:`Estimate`.

    Args:
        target: a policy (anything with ``probabilities(X, mask)``, e.g. an :mod:`nba.policies`
            policy), evaluated on the log's contexts and eligibility masks, or its (n, A)
            distribution on the logged rows.
        data: an :class:`nba.log.LoggedBatch`, or a mapping with the same fields ``context``,
            ``eligible``, ``action``, ``propensity``, ``reward`` (``context`` and ``eligible`` may
            be left out when ``target`` and ``q_hat`` are arrays).
        q_hat: the reward model: a :class:`RewardModel` (its refit spread widens the intervals of
            DM, DR, switch-DR and MDR by the model's uncertainty), or (n, A) predictions (no
            spread: the intervals leave the model's error out); by default
            :func:`fit_reward_models` with ``model_params`` on the log itself (the customers
            resampled as ``clusters``). Fit it once per log when evaluating several targets.
        space: the action space for the reward model's action features and the groups (default:
            the policy's ``space`` if it has one, else one-hot actions).
        tau: switch-DR's weight threshold.
        logging: optional (n, A) logging distribution: the marginal estimators' group
            probabilities (exact), and the support check row by row.
        level, n_bootstrap, seed: as in :func:`ips`. All estimators share the same resamples, and
            the results equal those of the single estimators called with the same seed and clusters
            (and, for DM, DR, switch-DR and MDR, the same reward model).
        clusters: (n,) ids of the units the bootstrap resamples (a cluster bootstrap, see the
            module docstring); by default the data's ``customer_id`` field when it has one and
            ``cluster_by_customer`` is true, else the rows.
        cluster_by_customer: resample the data's customers (its ``customer_id``) rather than its
            rows when ``clusters`` is not given. A customer's decisions are alike, so on a log
            where customers recur the row bootstrap's intervals are too narrow; False restores it.
        groups: the marginal estimators' action groups: a grouping name of :func:`action_groups`
            (default :data:`DEFAULT_GROUPING` on an ActionSpace, ``"action"`` without one) or (A,)
            codes.
        logging_groups: (n, G) the logger's group probabilities when ``logging`` is unknown; by
            default estimated from the log (:func:`fit_group_propensities`, needs ``context``).
        support_weight, support_share: the support check (module docstring).
    """
    get = (lambda k: data.get(k)) if isinstance(data, Mapping) else (lambda k: getattr(data, k, None))
    context, eligible = get("context"), get("eligible")
    actions, propensities, rewards = get("action"), get("propensity"), get("reward")
    for name, v in (("action", actions), ("propensity", propensities), ("reward", rewards)):
        if v is None:
            raise ValueError(f"data: missing field {name!r}")
    if hasattr(target, "probabilities"):
        if context is None or eligible is None:
            raise ValueError("data: a policy target needs the fields 'context' and 'eligible'")
        if space is None:
            space = getattr(target, "space", None)
        target = target.probabilities(np.asarray(context), np.asarray(eligible, bool))
    r, a, p, t = _check_logged(rewards, actions, propensities, target)
    if clusters is None and cluster_by_customer:
        clusters = get("customer_id")
    codes, weight, tau = _check_options(len(r), level, n_bootstrap, support_weight, support_share, clusters, tau)
    model_space = space if space is not None else t.shape[1]
    if groups is None or isinstance(groups, str):
        by = groups or (DEFAULT_GROUPING if isinstance(space, ActionSpace) else "action")
        groups = action_groups(model_space, by)
    if q_hat is None:
        if context is None:
            raise ValueError("data: the default reward model needs the field 'context' (or pass q_hat)")
        q_hat = fit_reward_models(
            context,
            a,
            r,
            model_space,
            mask=eligible,
            seed=0 if seed is None else seed,
            clusters=clusters,
            **dict(model_params or {}),
        )
    model, q = _check_model(q_hat, t.shape)
    lg = _check_logging(logging, t.shape)
    if (
        lg is None
        and logging_groups is None
        and model is not None
        and model.logging_groups is not None
        and model.groups is not None
        and np.array_equal(model.groups, _check_groups(groups, t.shape[1])[0])
    ):
        logging_groups = model.logging_groups  # estimated once with the model
    if lg is None and logging_groups is None and len(np.unique(groups)) < t.shape[1]:
        if context is None:
            raise ValueError(
                "data: the marginal estimators need the field 'context' to estimate the logger's "
                "group probabilities (or pass logging or logging_groups)"
            )
        logging_groups = fit_group_propensities(context, a, groups, mask=eligible, seed=0 if seed is None else seed)
    x = _Log(r, a, p, t, q, lg, tau, groups, logging_groups, weight)
    return _estimate(ESTIMATORS, x, level, n_bootstrap, seed, codes, support_share, model, _check_interval(interval))


# ----------------------------------------------------------------------------- paired lift
@dataclass(frozen=True)
class Lift:
    """The paired estimate of ``V(target) - V(base)`` from two estimates of one log (:func:`lift`)."""

    estimator: str
    value: float  # the target's estimate minus the base's
    ci_low: float  # the paired bootstrap interval: of the replicates' differences (the estimates' method)
    ci_high: float
    level: float
    std_error: float  # standard deviation of the replicates' differences
    unsupported: bool  # either estimate is unsupported: never promote on it

    def covers(self, truth: float) -> bool:
        """Whether the interval contains ``truth``."""
        return bool(self.ci_low <= truth <= self.ci_high)


def lift(target: Estimate, base: Estimate, level: float | None = None) -> Lift:
    """The lift of ``target`` over ``base``, two estimates by one estimator on one log, with their seed.

    Both were resampled on the same units (:func:`evaluate` with one seed and the same clusters), so
    replicate ``b`` of each is the estimate on the same resample and their difference is the lift on it:
    the rows where the two policies agree cancel, and the interval is that of the difference, far
    narrower than the two intervals side by side when the policies agree on most rows. Its method is the
    estimates' (:data:`INTERVALS`): the percentiles of the differences, or the bootstrap-t interval of the
    difference (each resample's difference over its own standard error, from the units' sums the
    studentized estimates keep; the reward model's refit shifts carried as in the estimates). ``level``:
    the interval's coverage (default: the estimates'). ValueError names the field when the two were not
    estimated together (another estimator, interval method, seed, log size or bootstrap) or kept no
    replicates.
    """
    rt, rb = target.replicates, base.replicates
    if rt is None or rb is None:
        name = "target" if rt is None else "base"
        raise ValueError(f"{name}: the estimate kept no bootstrap replicates (estimate it with nba.ope)")
    if target.estimator != base.estimator:
        raise ValueError(f"base: estimator {base.estimator!r}, the target's is {target.estimator!r}")
    shape_t = (target.n, target.n_clusters, len(rt))
    shape_b = (base.n, base.n_clusters, len(rb))
    if shape_t != shape_b:
        raise ValueError(
            f"base: not estimated on the target's resamples (rows, clusters, replicates: {shape_b} against {shape_t})"
        )
    if base.seed != target.seed:
        raise ValueError(
            f"base: resampled with seed {base.seed}, the target with {target.seed}: not the same resamples"
        )
    if target.seed is None and target is not base:
        raise ValueError("target: resampled with seed None (fresh entropy), so no other estimate shares its resamples")
    if base.interval != target.interval:
        raise ValueError(f"base: its interval is {base.interval!r}, the target's {target.interval!r}")
    level = target.level if level is None else float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level: must be in (0, 1), got {level}")
    value = target.value - base.value
    pivots = None
    if target.interval == "studentized" and len(rt):
        pivots = _lift_pivots(target, base)
    lo, hi, se, _, _ = _interval(value, rt - rb, level, None, pivots)
    return Lift(target.estimator, value, lo, hi, level, se, bool(target.unsupported or base.unsupported))


def _lift_pivots(target: Estimate, base: Estimate) -> np.ndarray:
    """The studentized replicates of ``target``'s value minus ``base``'s (:func:`_pivots` on the two
    estimates' unit sums, resampled as they were), shifted by the difference of their refit shifts."""
    for name, e in (("target", target), ("base", base)):
        if e.units is None:
            raise ValueError(f"{name}: a studentized estimate that kept no unit sums (estimate it with nba.ope)")
    assert target.units is not None and base.units is not None and target.replicates is not None
    (a_t, b_t), (a_b, b_b) = target.units, base.units
    count = None
    if not _ESTIMATORS[target.estimator].normalised:  # both denominators are the units' rows
        if not np.array_equal(b_t, b_b):
            raise ValueError("base: not estimated on the target's resamples (its units hold other rows)")
        count, b_b = b_t, b_t
    raw, pivots = _pivots([[(1.0, (a_t, b_t)), (-1.0, (a_b, b_b))]], count, len(target.replicates), target.seed)
    # the replicates kept carry each estimate's refit shift (_interval): their difference minus the resampled
    # difference is the difference of the shifts, which the studentized replicates take too
    assert base.replicates is not None
    return pivots[:, 0] + (target.replicates - base.replicates) - raw[:, 0]


# ----------------------------------------------------------------------------- ranking
# The estimator and statistic to rank policies by. bench/ope_coverage.py ran the quickstart's twelve
# policies (its bandits in their conservative mode) over 50 evaluation logs. Marginal DR (by channel)
# was the one estimator supported on every policy. Its 95% intervals covered the exact value 0.80-1.00
# of the time; the misses were all below the truth (rare large rewards, and a bias of -0.06 to -0.08 on
# the safe bandits, whose change of content and send time within a channel the weights cannot see).
# Its lower bound had a regret of 0.047, against 0.073 for its point estimate (which picks the noisiest
# of twelve policies too often) and 0.060 for DR's lower bound. MIPS's lower bound had less regret
# (0.039) but covered less (0.74-1.00). See bench/RESULTS.md.
RANK_ESTIMATOR = "mdr"
RANK_STATISTIC = "ci_low"  # the point estimate ("value") or the lower bound ("ci_low")


def rank(
    estimates: Mapping[str, Mapping[str, Estimate]], estimator: str = RANK_ESTIMATOR, statistic: str = RANK_STATISTIC
) -> list[str]:
    """Policy labels best first by ``estimator``'s ``statistic``, leaving out unsupported estimates.

    ``estimates``: label -> :func:`evaluate`'s output. A policy whose estimate is ``unsupported``
    (or not finite) is not ranked: it must not become champion on an estimate its log cannot back.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator: unknown estimator {estimator!r}; valid: {', '.join(ESTIMATORS)}")
    if statistic not in ("value", "ci_low"):
        raise ValueError(f"statistic: must be 'value' or 'ci_low', got {statistic!r}")
    scores = {
        label: getattr(est[estimator], statistic)
        for label, est in estimates.items()
        if not est[estimator].unsupported and np.isfinite(getattr(est[estimator], statistic))
    }
    return sorted(scores, key=lambda label: scores[label], reverse=True)
