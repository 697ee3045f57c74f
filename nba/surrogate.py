"""A change of send slot seen through the opens: surrogate evidence for send-time optimisation.

A policy that keeps another's customers, channels and contents and moves only the send slot (the quickstart's
``send_time`` over business as usual) changes the reward through whether its messages are seen. The
estimators of :mod:`nba.ope` read realised rewards, whose noise (rare, large purchases, organic ones above
all) swamps such a change: marginal DR by channel gives every row the base's weight and reads only its reward
model's difference between two slots, and the action-level weights are unsupported under an exploring logger
(``bench/RESULTS.md``). Opens are thousands in a log where conversions are tens.

:func:`slot_lift` estimates ``V(target) - V(base)`` for two such distributions as

    mean_i  sum_(c,k,s) (pi_t - pi_b)(c, k, s | x_i) * P(open | x_i, c, h_i(s)) * v

where ``P(open | x, c, h)`` is a logistic model of opening fitted on the log's contacts (:func:`design`: the
context, the channel, the first two harmonics of the local send hour per channel, and the hour's alignment
with the customer's own hour preference on that channel: the ``hour_pref_cos/sin`` features of
:class:`nba.features.FeatureSpec`), ``h_i(s)`` the local hour of slot ``s`` (the decision's own hour for
"now": :meth:`nba.policies.sto.SendTimeModel.slot_angles`) and ``v`` the conversions' value per opened
message (no organic purchase). Its interval: the percentiles of refits on bootstrap resamples of the
customers.

**It errs towards 0, by construction.** It takes an opened message's value as the same whatever its slot,
it leaves out the opt-outs a better slot avoids, and a model of the context's features flattens each
customer's own hour curve. On the quickstart's setting it read 23-62 % of the exact lift (41 % on average)
and its interval did not cover it, but its sign was right on all 20 logs, for a policy better in truth and
for one worse (``bench/timing_surrogate.py``). So it is evidence of a direction for a shortlist whose A/B
test decides, not an estimate of the size.

**Support.** The model extrapolates to hours the log never sent at on a channel: the lift is ``unsupported``
when more than :data:`nba.ope.SUPPORT_SHARE` of the mass the target moves lands on a channel's hour of the
day with fewer than ``min_sends`` (:data:`MIN_SENDS`) logged sends.

Bad input raises ``ValueError`` naming the field; two distributions that differ in more than the send slot
(:func:`slot_only`) are refused, ``target``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nba.actions import ActionSpace
from nba.features import TWO_PI_24, FeatureSpec
from nba.log.records import FunnelEvents
from nba.ope import SUPPORT_SHARE, Lift, check_distribution, cluster_codes
from nba.policies.sto import SendTimeModel

ESTIMATOR = "opens"  # the Lift's estimator: a change of slot read through the opens
MIN_SENDS = 20  # logged sends of a channel in an hour of the day below which that hour is thinly supported
RIDGE = 1.0  # L2 penalty of the opening model on the standardised features


def messages(probs: np.ndarray, space: ActionSpace) -> np.ndarray:
    """(n, 1 + C x K) probability of no contact, then of each channel x content, summed over the send slots."""
    probs = np.asarray(probs, np.float64)
    k = space.n_contents
    onehot = np.zeros((space.n_actions, 1 + space.n_channels * k))
    onehot[0, 0] = 1.0
    onehot[np.arange(1, space.n_actions), 1 + space.channel_of[1:] * k + space.content_of[1:]] = 1.0
    return probs @ onehot


def slot_only(target: np.ndarray, base: np.ndarray, space: ActionSpace, atol: float = 1e-9) -> bool:
    """Whether two (n, A) distributions give every decision the same probability of no contact and of each
    channel x content, so that they differ at most in the send slot (what :func:`slot_lift` can read)."""
    return bool(np.allclose(messages(target, space), messages(base, space), rtol=0.0, atol=atol))


def design(spec: FeatureSpec, space: ActionSpace, X: np.ndarray, channel: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """The opening model's features of a message on ``channel`` (n,) sent at the local hour of ``angle`` (n,,
    radians) in contexts ``X`` (n, d): the context, the channel one-hot, the hour's first two harmonics, the
    first harmonic per channel, and the alignment of the hour with the customer's preference on that channel."""
    n, c = len(X), space.n_channels
    onehot = np.zeros((n, c))
    onehot[np.arange(n), channel] = 1.0
    harmonics = np.stack([np.cos(angle), np.sin(angle), np.cos(2 * angle), np.sin(2 * angle)], axis=1)
    pref_cos = np.array([spec.index(f"hour_pref_cos={ch}") for ch in space.channels])[channel]
    pref_sin = np.array([spec.index(f"hour_pref_sin={ch}") for ch in space.channels])[channel]
    rows = np.arange(n)
    align = X[rows, pref_cos] * np.cos(angle) + X[rows, pref_sin] * np.sin(angle)
    per_channel = (onehot[:, :, None] * harmonics[:, None, :]).reshape(n, 4 * c)
    return np.hstack([np.asarray(X, np.float64), onehot, harmonics, per_channel, align[:, None]])


def standardise(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The features' means and standard deviations (1 where a feature is constant), which
    :func:`fit_logistic` penalises the coefficients on the scale of."""
    sd = features.std(axis=0)
    return features.mean(axis=0), np.where(sd > 1e-12, sd, 1.0)


def fit_logistic(
    features: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray,
    ridge: float = RIDGE,
    *,
    scale: tuple[np.ndarray, np.ndarray] | None = None,
    start: np.ndarray | None = None,
) -> np.ndarray:
    """Coefficients (intercept first, on the raw features) of a weighted logistic regression with an L2
    penalty ``ridge`` on the standardised features (``scale``: :func:`standardise`'s, by default the
    features' own), by Newton's method from ``start`` (coefficients of a fit on the same features, say on
    the whole log for a refit on a resample; default 0); :func:`predict` applies them."""
    mu, sd = standardise(features) if scale is None else scale
    Z = np.hstack([np.ones((len(features), 1)), (features - mu) / sd])
    beta = np.zeros(Z.shape[1])
    if start is not None:  # back to the standardised scale
        beta[1:] = start[1:] * sd
        beta[0] = start[0] + np.sum(start[1:] * mu)
    penalty = np.full(Z.shape[1], float(ridge))
    penalty[0] = 0.0
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-np.clip(Z @ beta, -50.0, 50.0)))
        grad = Z.T @ (weight * (y - p)) - penalty * beta
        hess = (Z * (weight * p * (1.0 - p))[:, None]).T @ Z + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        beta += step
        if np.max(np.abs(step)) < 1e-5:
            break
    return np.concatenate([[beta[0] - np.sum(beta[1:] * mu / sd)], beta[1:] / sd])


def predict(beta: np.ndarray, features: np.ndarray) -> np.ndarray:
    """The probability of opening under :func:`fit_logistic`'s coefficients."""
    return 1.0 / (1.0 + np.exp(-np.clip(beta[0] + features @ beta[1:], -50.0, 50.0)))


def _hour(angle: np.ndarray) -> np.ndarray:
    """The hour of the day (0-23) of local send hours given as angles."""
    return np.floor(np.mod(angle, 2 * np.pi) / TWO_PI_24 + 1e-9).astype(np.int64) % 24


def _check(
    target: Any, base: Any, context: Any, actions: Any, events: Any, space: ActionSpace, spec: FeatureSpec
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, FunnelEvents]:
    if not isinstance(space, ActionSpace) or space.is_plain:
        raise ValueError("space: the send slot needs a structured ActionSpace (channels, contents and send slots)")
    X = np.asarray(context, np.float64)
    n, A = len(X), space.n_actions
    if X.ndim != 2 or X.shape[1] != spec.dim:
        raise ValueError(f"context: expected shape (n, {spec.dim}) for the feature spec, got {X.shape}")
    for ch in space.channels:
        for stat in ("hour_pref_cos", "hour_pref_sin"):
            if f"{stat}={ch}" not in spec.names:
                raise ValueError(
                    f"spec: no feature {stat}={ch}: the opening model reads each channel's hour preference"
                )
    out = [check_distribution(p, name, (n, A)) for name, p in (("target", target), ("base", base))]
    a = space.check(np.asarray(actions), "actions")
    if a.shape != (n,):
        raise ValueError(f"actions: expected shape ({n},), got {a.shape}")
    ev = FunnelEvents.check(events, a)
    if not slot_only(out[0], out[1], space):
        raise ValueError(
            "target: gives some decision another probability of no contact or of a channel x content than base; "
            "the opens read a change of send slot only (nba.surrogate.slot_only)"
        )
    return out[0], out[1], X, a, ev


def slot_lift(
    target: np.ndarray,
    base: np.ndarray,
    context: np.ndarray,
    actions: np.ndarray,
    events: FunnelEvents,
    space: ActionSpace,
    spec: FeatureSpec,
    *,
    clusters: Any = None,
    n_bootstrap: int = 100,
    seed: int = 0,
    level: float = 0.95,
    ridge: float = RIDGE,
    min_sends: int = MIN_SENDS,
) -> Lift:
    """The surrogate estimate of ``V(target) - V(base)`` (module docstring) for two (n, A) distributions on a
    log's ``context`` (n, d) that differ only in the send slot, from the logged ``actions`` (n,) and their
    funnel ``events`` (:class:`nba.log.FunnelEvents`: what was opened, and the conversions' value).

    ``clusters`` (n,): the units the bootstrap resamples (customer ids; None: the rows); ``n_bootstrap``
    refits of the opening model and of the value per open on those resamples give the percentile interval
    at ``level`` (widened to contain the estimate; ``n_bootstrap=0``: NaN). The :class:`nba.ope.Lift` has
    estimator :data:`ESTIMATOR` and is ``unsupported`` when the target moves mass to hours the log did not
    send at (module docstring). ValueError names the field."""
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int | np.integer) or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap: expected an integer >= 0, got {n_bootstrap!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level: must be in (0, 1), got {level!r}")
    if not (np.isfinite(ridge) and ridge >= 0):
        raise ValueError(f"ridge: must be a finite number >= 0, got {ridge!r}")
    if isinstance(min_sends, bool) or not isinstance(min_sends, int | np.integer) or min_sends < 0:
        raise ValueError(f"min_sends: expected an integer >= 0, got {min_sends!r}")
    target, base, X, a, ev = _check(target, base, context, actions, events, space, spec)
    n = len(X)
    codes = np.arange(n) if clusters is None else cluster_codes(clusters, n)
    sent = np.flatnonzero(a > 0)
    if not ev.opened[sent].any():
        raise ValueError("events.opened: no logged message was opened, so the log says nothing of the slots")
    angles = SendTimeModel(spec, space).slot_angles(X)  # (n, S) each slot's local send hour
    channel, angle = space.channel_of[a[sent]], angles[sent, space.slot_of[a[sent]]]
    features = design(spec, space, X[sent], channel, angle)
    diff = target[:, 1:] - base[:, 1:]
    rows, col = np.nonzero(np.abs(diff) > 1e-12)
    moved = diff[rows, col]
    cand_channel, cand_angle = space.channel_of[col + 1], angles[rows, space.slot_of[col + 1]]
    candidates = design(spec, space, X[rows], cand_channel, cand_angle)
    # support: the sends the log holds per channel and hour of the day, against where the target moves mass
    sends = np.zeros((space.n_channels, 24))
    np.add.at(sends, (channel, _hour(angle)), 1.0)
    thin = sends[cand_channel, _hour(cand_angle)] < min_sends
    gap = float(np.sum(np.where(thin & (moved > 0), moved, 0.0)) / n)

    opened, value = ev.opened[sent].astype(np.float64), ev.value[sent]
    g = int(codes.max()) + 1 if n else 0
    rng = np.random.default_rng(seed)
    scale, full = standardise(features), None
    estimates = []
    for b in range(n_bootstrap + 1):  # b = 0: the log itself; then the units resampled
        w = np.ones(g) if b == 0 else np.bincount(rng.integers(0, g, g), minlength=g).astype(np.float64)
        ws = w[codes[sent]]
        opens = np.sum(ws * opened)
        if opens == 0:  # a resample without an open: no information on the slots
            estimates.append(np.nan)
            continue
        beta = fit_logistic(features, opened, ws, ridge, scale=scale, start=full)
        full = beta if b == 0 else full
        per_open = np.sum(ws * opened * value) / opens
        per_row = np.bincount(rows, weights=moved * predict(beta, candidates) * per_open, minlength=n)
        estimates.append(float(np.sum(w[codes] * per_row) / np.sum(w[codes])))
    value_0, reps = estimates[0], np.asarray(estimates[1:], np.float64)
    if len(reps) and np.isfinite(reps).any():
        tail = (1.0 - level) / 2.0
        lo, hi = np.nanquantile(reps, [tail, 1.0 - tail])
        lo, hi, se = min(float(lo), value_0), max(float(hi), value_0), float(np.nanstd(reps, ddof=1))
    else:
        lo = hi = se = float("nan")
    return Lift(ESTIMATOR, value_0, lo, hi, float(level), se, gap > SUPPORT_SHARE)
