"""Online A/B tests: assignment by hashing, fixed-horizon and always-valid analysis, power planning.

Four layers, each usable alone:

* **Assignment** (:func:`assign`, :func:`assign_one`, :func:`hash_unit`): a customer's arm is a pure
  function of ``(experiment, customer_id, splits)``. The key ``experiment + "\\x00" + customer_id`` is
  hashed with BLAKE2b (never Python's per-process randomised ``hash``) to a uniform number in [0, 1),
  which falls into one arm's slice of [0, 1). The same customer gets the same arm in every process,
  on every machine, after every restart; different experiments are independent.
* **Per-customer data** (:func:`customer_totals`, :func:`daily_looks`, :func:`looks_from_daily`): the
  unit of randomisation is the customer, so decisions from the decision log
  (:class:`nba.log.LoggedBatch`, or an iterator of them as the store exports) are summed per
  customer; the daily looks hold, for every day, the per-arm moments of the customers' cumulative
  totals up to that day.
* **Analysis** (:func:`compare`, :func:`cuped`, :func:`msprt`, :func:`sequential_test`,
  :func:`analyse`): difference in means with Welch's t-test and interval, relative lift with a
  delta-method interval, CUPED variance reduction with a pre-period covariate, and the mixture
  sequential probability ratio test (mSPRT) whose p-values and confidence sequences stay valid
  however often the job peeks. Results are frozen dataclasses.
* **Guardrails** (:class:`Guardrail`, :func:`noninferiority`, :func:`noninferiority_sequential`,
  :func:`decide`): metrics a treatment must not worsen by a declared margin (opt-outs, churn, sends),
  each tested for non-inferiority, always-valid over the looks like the primary metric; the verdict
  promotes only a treatment significantly better on the primary metric whose guardrails all hold.
* **Planning** (:func:`power`, :func:`sample_size`) for a difference in means.

No MLflow or BentoML here: the reports live in ``training/ab_report.py``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import optimize, stats

from nba.log.records import LoggedBatch

Alternative = Literal["two-sided", "larger", "smaller"]


# ====================================================================================== assignment
def _check_experiment(experiment: str) -> str:
    if not isinstance(experiment, str) or not experiment:
        raise ValueError(f"experiment: expected a non-empty string, got {experiment!r}")
    if "\x00" in experiment:
        raise ValueError("experiment: must not contain the NUL character (it separates the hash key)")
    return experiment


def check_splits(splits: Mapping[str, float]) -> tuple[tuple[str, ...], np.ndarray]:
    """Validate ``splits`` (arm name → weight) and return the arms in name order and their shares.

    Weights are positive finite numbers, normalised to sum to 1; arm names are non-empty strings.
    Arms are laid out on [0, 1) in sorted name order, so the order a mapping is written in does not
    change anyone's arm, and ramping one arm's weight up or down moves only the customers on the
    boundary between slices.
    """
    if not isinstance(splits, Mapping) or not splits:
        raise ValueError(f"splits: expected a non-empty mapping arm -> weight, got {splits!r}")
    for arm, w in splits.items():
        if not isinstance(arm, str) or not arm:
            raise ValueError(f"splits: arm names must be non-empty strings, got {arm!r}")
        if (
            isinstance(w, bool)
            or not isinstance(w, int | float | np.floating | np.integer)
            or not np.isfinite(w)
            or w <= 0
        ):
            raise ValueError(f"splits: weight of arm {arm!r} must be a positive finite number, got {w!r}")
    arms = tuple(sorted(splits))
    weights = np.array([float(splits[a]) for a in arms])
    return arms, weights / weights.sum()


def _ids(customer_ids: Iterable[object] | np.ndarray) -> list[str]:
    ids = [str(c) for c in np.asarray(customer_ids, dtype=object).ravel()]
    if any(not c for c in ids):
        raise ValueError("customer_ids: empty customer id")
    return ids


def hash_unit(experiment: str, customer_ids: Iterable[object] | np.ndarray) -> np.ndarray:
    """(N,) float64 in [0, 1): ``blake2b(experiment + "\\x00" + str(customer_id))`` as a uniform number.

    The first 8 bytes of the 16-byte digest, big-endian, keep their top 53 bits: every value is an
    exact multiple of 2**-53.
    """
    prefix = _check_experiment(experiment).encode("utf-8") + b"\x00"
    digests = b"".join(
        hashlib.blake2b(prefix + c.encode("utf-8"), digest_size=16).digest()[:8] for c in _ids(customer_ids)
    )
    words = np.frombuffer(digests, dtype=">u8")
    return (words >> np.uint64(11)).astype(np.float64) * 2.0**-53


def assign(experiment: str, customer_ids: Iterable[object] | np.ndarray, splits: Mapping[str, float]) -> np.ndarray:
    """(N,) object array of arm names, one per customer, by hashing (see the module docstring)."""
    arms, shares = check_splits(splits)
    u = hash_unit(experiment, customer_ids)
    edges = np.cumsum(shares)[:-1]
    return np.asarray(arms, dtype=object)[np.searchsorted(edges, u, side="right")]


def assign_one(experiment: str, customer_id: object, splits: Mapping[str, float]) -> str:
    """The arm of one customer (what the service calls per request)."""
    return str(assign(experiment, [customer_id], splits)[0])


# ====================================================================================== per-customer data
@dataclass(frozen=True)
class CustomerTotals:
    """Decision-log rewards summed per customer (the unit of randomisation)."""

    customer_id: np.ndarray  # (M,) object str, sorted
    arm: np.ndarray  # (M,) object str: the customer's one arm ("" outside any experiment)
    total: np.ndarray  # (M,) float64: sum of the rewards of the customer's decisions
    n_decisions: np.ndarray  # (M,) int64
    first_time: np.ndarray  # (M,) float64 hours: the customer's first decision (enrolment)

    def __len__(self) -> int:
        return len(self.customer_id)

    def values(self, arm: str) -> np.ndarray:
        """Totals of the customers of ``arm``."""
        sel = self.arm == arm
        if not sel.any():
            raise ValueError(f"arm: no customer in arm {arm!r}; arms present: {sorted(set(self.arm))}")
        return self.total[sel]

    def lookup(self, customer_ids: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Totals of ``customer_ids`` in this table, ``fill`` for customers it does not hold.

        Used to join a pre-period (the CUPED covariate) onto the experiment's customers.
        """
        ids = np.asarray(customer_ids, dtype=object)
        if len(self) == 0:
            return np.full(ids.shape, fill, np.float64)
        pos = np.clip(np.searchsorted(self.customer_id, ids), 0, len(self) - 1)
        found = self.customer_id[pos] == ids
        return np.where(found, self.total[pos], fill)


_COLUMNS = ("customer_id", "arm", "experiment", "time", "reward")


def _rows(
    batches: LoggedBatch | Iterable[LoggedBatch], experiment: str | None, start: float | None, end: float | None
) -> dict[str, np.ndarray]:
    """The columns the A/B analysis needs, filtered, from one batch or an iterator of batches."""
    if isinstance(batches, LoggedBatch):
        batches = [batches]
    parts: dict[str, list[np.ndarray]] = {c: [] for c in _COLUMNS}
    for b in batches:
        if not isinstance(b, LoggedBatch):
            raise ValueError(f"batches: expected LoggedBatch objects, got {type(b).__name__}")
        keep = np.ones(len(b), bool)
        if experiment is not None:
            keep &= b.experiment == experiment
        if start is not None:
            keep &= b.time >= start
        if end is not None:
            keep &= b.time < end
        for c in _COLUMNS:
            parts[c].append(np.asarray(getattr(b, c))[keep])
    if not parts["time"]:
        return {c: np.empty(0, object if c in ("customer_id", "arm", "experiment") else np.float64) for c in _COLUMNS}
    out = {c: np.concatenate(v) for c, v in parts.items()}
    for c in ("customer_id", "arm", "experiment"):
        out[c] = out[c].astype(str).astype(object)
    out["time"] = out["time"].astype(np.float64)
    out["reward"] = out["reward"].astype(np.float64)
    if not np.all(np.isfinite(out["reward"])):
        raise ValueError("reward: contains NaN or infinite values")
    return out


def _per_customer(rows: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sorted unique ids, index of each row's customer, each customer's single arm)."""
    ids, inv = np.unique(rows["customer_id"], return_inverse=True)
    arm = np.empty(len(ids), object)
    if len(ids):
        order = np.lexsort((rows["arm"], inv))
        first = np.r_[True, inv[order][1:] != inv[order][:-1]]
        arm[inv[order][first]] = rows["arm"][order][first]
        mixed = rows["arm"] != arm[inv]
        if mixed.any():
            bad = np.unique(rows["customer_id"][mixed])
            raise ValueError(
                f"arm: {len(bad)} customer(s) logged in more than one arm (e.g. {bad[0]!r}); "
                "the unit of randomisation is the customer: select one experiment"
            )
    return ids, inv, arm


def customer_totals(
    batches: LoggedBatch | Iterable[LoggedBatch],
    *,
    experiment: str | None = None,
    start: float | None = None,
    end: float | None = None,
) -> CustomerTotals:
    """Sum the rewards of each customer's decisions in ``[start, end)`` (hours), in ``experiment``.

    ``batches`` is one :class:`~nba.log.LoggedBatch` or an iterator of them (what a decision-log store
    exports chunk by chunk; only five columns of each are kept). ``experiment=None`` keeps every row
    (a pre-period before the experiment, say). A customer logged in two arms is an error.
    """
    rows = _rows(batches, experiment, start, end)
    ids, inv, arm = _per_customer(rows)
    m = len(ids)
    total = np.bincount(inv, weights=rows["reward"], minlength=m)
    count = np.bincount(inv, minlength=m).astype(np.int64)
    first = np.full(m, np.inf)
    np.minimum.at(first, inv, rows["time"])
    return CustomerTotals(ids, arm, total, count, first)


@dataclass(frozen=True)
class Looks:
    """Per-arm moments of the customers' cumulative totals at successive looks (e.g. end of each day).

    At look ``k`` the customers enrolled by then each contribute their total up to the look.
    """

    arms: tuple[str, ...]
    n: np.ndarray  # (A, K) int64: customers enrolled by each look
    mean: np.ndarray  # (A, K) float64
    var: np.ndarray  # (A, K) float64, ddof=1 (NaN below two customers)

    @property
    def n_looks(self) -> int:
        """The number of looks ``K``."""
        return self.n.shape[1]

    def arm_index(self, arm: str) -> int:
        """Row of ``arm`` in the (A, K) arrays; ``ValueError`` when the looks have no such arm."""
        if arm not in self.arms:
            raise ValueError(f"arm: {arm!r} not among the looks' arms {list(self.arms)}")
        return self.arms.index(arm)


class _Moments:
    """Per-arm count, sum and centred sum of squares over blocks of rows (Chan et al. pairwise merge)."""

    def __init__(self, a: int, k: int) -> None:
        self.n = np.zeros((a, k))
        self.mean = np.zeros((a, k))
        self.m2 = np.zeros((a, k))

    def add(self, i: int, values: np.ndarray, active: np.ndarray) -> None:
        nb = active.sum(axis=0).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mb = np.where(nb > 0, (values * active).sum(axis=0) / nb, 0.0)
        m2b = (((values - mb) ** 2) * active).sum(axis=0)
        n = self.n[i] + nb
        delta = mb - self.mean[i]
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(n > 0, nb / n, 0.0)
        self.m2[i] += m2b + delta**2 * self.n[i] * frac
        self.mean[i] += delta * frac
        self.n[i] = n

    def looks(self, arms: tuple[str, ...]) -> Looks:
        with np.errstate(invalid="ignore", divide="ignore"):
            var = np.where(self.n > 1, self.m2 / (self.n - 1), np.nan)
        return Looks(arms, self.n.astype(np.int64), np.where(self.n > 0, self.mean, np.nan), var)


BLOCK = 65_536  # customers accumulated at a time (bounds memory at BLOCK x looks floats)


def looks_from_daily(
    daily: np.ndarray, arm: np.ndarray, enrol_day: np.ndarray | None = None, arms: Sequence[str] | None = None
) -> Looks:
    """Looks at the end of each day from a (N, K) matrix of per-customer daily rewards.

    Customer ``i`` enters the looks from day ``enrol_day[i]`` (default 0: everyone from the start)
    with the cumulative sum of its row up to the look.
    """
    daily = np.asarray(daily, np.float64)
    arm = np.asarray(arm, dtype=object)
    if daily.ndim != 2:
        raise ValueError(f"daily: expected a 2-D array (customers, days), got shape {daily.shape}")
    if arm.shape != (daily.shape[0],):
        raise ValueError(f"arm: expected shape ({daily.shape[0]},), got {arm.shape}")
    enrol = np.zeros(daily.shape[0], np.int64) if enrol_day is None else np.asarray(enrol_day, np.int64)
    if enrol.shape != arm.shape:
        raise ValueError(f"enrol_day: expected shape {arm.shape}, got {enrol.shape}")
    arms = tuple(sorted(set(arm.tolist()))) if arms is None else tuple(arms)
    k = daily.shape[1]
    acc = _Moments(len(arms), k)
    days = np.arange(k)
    for i, a in enumerate(arms):
        rows = np.flatnonzero(arm == a)
        for s in range(0, rows.size, BLOCK):
            r = rows[s : s + BLOCK]
            acc.add(i, np.cumsum(daily[r], axis=1), enrol[r, None] <= days[None, :])
    return acc.looks(arms)


def daily_looks(
    batches: LoggedBatch | Iterable[LoggedBatch],
    *,
    experiment: str,
    start: float,
    days: int,
    day_h: float = 24.0,
    arms: Sequence[str] | None = None,
) -> Looks:
    """Looks at ``start + day_h * (k + 1)`` for ``k < days`` from the decision log.

    A customer enrols at its first decision in the experiment; a decision's reward counts on the
    day of the decision. Rows before ``start`` or after the last look are ignored.
    """
    if not isinstance(days, int | np.integer) or days <= 0:
        raise ValueError(f"days: expected a positive integer, got {days!r}")
    if not day_h > 0:
        raise ValueError(f"day_h: expected a positive number of hours, got {day_h!r}")
    rows = _rows(batches, _check_experiment(experiment), start, start + day_h * days)
    ids, inv, arm = _per_customer(rows)
    day = np.minimum(((rows["time"] - start) // day_h).astype(np.int64), days - 1)
    enrol = np.full(len(ids), days, np.int64)
    np.minimum.at(enrol, inv, day)
    arms = tuple(sorted(set(arm.tolist()))) if arms is None else tuple(arms)
    acc = _Moments(len(arms), days)
    steps = np.arange(days)
    for i, a in enumerate(arms):
        cust = np.flatnonzero(arm == a)
        for s in range(0, cust.size, BLOCK):
            c = cust[s : s + BLOCK]
            local = np.full(len(ids), -1, np.int64)
            local[c] = np.arange(c.size)
            li = local[inv]
            r = li >= 0
            mat = np.bincount(li[r] * days + day[r], weights=rows["reward"][r], minlength=c.size * days).reshape(
                c.size, days
            )
            acc.add(i, np.cumsum(mat, axis=1), enrol[c, None] <= steps[None, :])
    return acc.looks(arms)


# ====================================================================================== fixed-horizon analysis
def _values(name: str, y: np.ndarray, minimum: int = 2) -> np.ndarray:
    y = np.asarray(y, np.float64)
    if y.ndim != 1:
        raise ValueError(f"{name}: expected one value per customer (a 1-D array), got shape {y.shape}")
    if y.size < minimum:
        raise ValueError(f"{name}: needs at least {minimum} customers, got {y.size}")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return y


def _check_level(level: float, name: str = "level") -> float:
    if not 0 < level < 1:
        raise ValueError(f"{name}: expected a probability in (0, 1), got {level!r}")
    return float(level)


@dataclass(frozen=True)
class Comparison:
    """Treatment minus control: difference in means (Welch) and relative lift (delta method).

    ``ci_*`` is the Welch t-interval (Welch–Satterthwaite degrees of freedom) of the difference,
    ``p_value`` Welch's two-sided test of no difference, ``lift = mean_t / mean_c - 1`` with a normal
    interval from the delta method (NaN if the control mean is 0).
    """

    n_treatment: int
    n_control: int
    mean_treatment: float
    mean_control: float
    sd_treatment: float
    sd_control: float
    diff: float
    se: float
    ci_low: float
    ci_high: float
    statistic: float
    df: float
    p_value: float
    lift: float
    lift_se: float
    lift_ci_low: float
    lift_ci_high: float
    level: float

    def significant(self, alpha: float | None = None) -> bool:
        """Welch's test rejects no difference at ``alpha`` (default ``1 - level``)."""
        return bool(self.p_value < (1 - self.level if alpha is None else alpha))


def lift_delta(mean_t: float, var_mean_t: float, mean_c: float, var_mean_c: float) -> tuple[float, float]:
    """Relative lift ``mean_t / mean_c - 1`` and its delta-method standard error.

    With independent arms, ``Var(m_t / m_c) ≈ Var(m_t) / m_c² + m_t² Var(m_c) / m_c⁴`` where
    ``var_mean_*`` are the variances of the two means (``s² / n``).
    """
    if mean_c == 0:
        return float("nan"), float("nan")
    lift = mean_t / mean_c - 1
    se = np.sqrt(var_mean_t / mean_c**2 + mean_t**2 * var_mean_c / mean_c**4)
    return float(lift), float(se)


def compare(treatment: np.ndarray, control: np.ndarray, level: float = 0.95) -> Comparison:
    """Welch comparison of per-customer values of a treatment arm against a control arm."""
    level = _check_level(level)
    yt, yc = _values("treatment", treatment), _values("control", control)
    res = stats.ttest_ind(yt, yc, equal_var=False)
    ci = res.confidence_interval(confidence_level=level)
    vt, vc = yt.var(ddof=1), yc.var(ddof=1)
    mt, mc = float(yt.mean()), float(yc.mean())
    se = float(np.sqrt(vt / yt.size + vc / yc.size))
    lift, lift_se = lift_delta(mt, vt / yt.size, mc, vc / yc.size)
    z = stats.norm.ppf(0.5 + level / 2)
    return Comparison(
        n_treatment=int(yt.size),
        n_control=int(yc.size),
        mean_treatment=mt,
        mean_control=mc,
        sd_treatment=float(np.sqrt(vt)),
        sd_control=float(np.sqrt(vc)),
        diff=mt - mc,
        se=se,
        ci_low=float(ci.low),
        ci_high=float(ci.high),
        statistic=float(res.statistic),
        df=float(res.df),
        p_value=float(res.pvalue),
        lift=lift,
        lift_se=lift_se,
        lift_ci_low=float(lift - z * lift_se),
        lift_ci_high=float(lift + z * lift_se),
        level=level,
    )


@dataclass(frozen=True)
class Cuped:
    """CUPED (Deng et al. 2013): the comparison of ``y - theta (x - mean(x))`` beside the raw one.

    ``theta = Cov(y, x) / Var(x)`` is estimated on both arms pooled; since the covariate is measured
    before the experiment its mean does not depend on the arm, so the adjusted difference estimates
    the same effect with variance about ``(1 - corr(y, x)²)`` times the raw one.
    ``variance_reduction = 1 - se_adjusted² / se_raw²``.
    """

    theta: float
    correlation: float
    raw: Comparison
    adjusted: Comparison
    variance_reduction: float


def cuped(
    treatment: np.ndarray,
    control: np.ndarray,
    covariate_treatment: np.ndarray,
    covariate_control: np.ndarray,
    level: float = 0.95,
) -> Cuped:
    """CUPED-adjusted comparison with a pre-period covariate per customer (same order as the values)."""
    yt, yc = _values("treatment", treatment), _values("control", control)
    xt = _values("covariate_treatment", covariate_treatment)
    xc = _values("covariate_control", covariate_control)
    if xt.shape != yt.shape:
        raise ValueError(f"covariate_treatment: expected {yt.size} values, got {xt.size}")
    if xc.shape != yc.shape:
        raise ValueError(f"covariate_control: expected {yc.size} values, got {xc.size}")
    y, x = np.concatenate([yt, yc]), np.concatenate([xt, xc])
    xm = x.mean()
    vx = float(((x - xm) ** 2).sum() / (x.size - 1))
    cov = float(((x - xm) * (y - y.mean())).sum() / (x.size - 1))
    vy = float(y.var(ddof=1))
    theta = cov / vx if vx > 0 else 0.0
    corr = cov / np.sqrt(vx * vy) if vx > 0 and vy > 0 else 0.0
    raw = compare(yt, yc, level)
    adj = compare(yt - theta * (xt - xm), yc - theta * (xc - xm), level)
    reduction = 1 - adj.se**2 / raw.se**2 if raw.se > 0 else 0.0
    return Cuped(float(theta), float(corr), raw, adj, float(reduction))


# ====================================================================================== sequential (mSPRT)
@dataclass(frozen=True)
class Sequential:
    """An always-valid sequential test over K looks (see :func:`msprt`)."""

    diff: np.ndarray  # (K,) estimate at each look
    se: np.ndarray  # (K,) its standard error
    likelihood_ratio: np.ndarray  # (K,) mixture likelihood ratio against ``theta0``
    p_value: np.ndarray  # (K,) always-valid p-value (non-increasing)
    cs_low: np.ndarray  # (K,) confidence sequence at level 1 - alpha
    cs_high: np.ndarray
    naive_p: np.ndarray  # (K,) fixed-horizon two-sided p-value at each look (invalid when peeking)
    alpha: float
    tau: float
    theta0: float

    @property
    def n_looks(self) -> int:
        """The number of looks ``K``."""
        return len(self.diff)

    @property
    def first_rejection(self) -> int | None:
        """Index of the first look whose always-valid p-value is at most ``alpha`` (None: never)."""
        hit = np.flatnonzero(self.p_value <= self.alpha)
        return int(hit[0]) if hit.size else None

    @property
    def rejected(self) -> bool:
        """Whether some look's always-valid p-value reached ``alpha``."""
        return self.first_rejection is not None


def msprt_boundary(se: np.ndarray, tau: float, alpha: float) -> np.ndarray:
    """Half-width of the mSPRT confidence sequence at standard errors ``se``.

    ``Λ(θ) < 1/α``  ⇔  ``|Δ - θ| < sqrt( V (V + τ²) / τ² · (log((V + τ²) / V) + 2 log(1/α)) )``.
    """
    v = np.asarray(se, np.float64) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(v * (v + tau**2) / tau**2 * (np.log((v + tau**2) / v) + 2 * np.log(1 / alpha)))


def msprt(
    diff: np.ndarray,
    se: np.ndarray,
    *,
    tau: float,
    alpha: float = 0.05,
    theta0: float = 0.0,
    intersect: bool = False,
    df: np.ndarray | None = None,
) -> Sequential:
    """Mixture SPRT for a difference of means with a normal mixture (Johari, Pekelis & Walsh).

    At look ``n`` the estimate ``Δ_n`` (treatment minus control mean) has variance ``V_n = se_n²``
    (``s_t²/n_t + s_c²/n_c``). Mixing the Gaussian likelihood ratio of effect ``θ`` against
    ``θ0`` over ``θ ~ N(θ0, τ²)`` gives

        ``Λ_n = sqrt(V_n / (V_n + τ²)) · exp( τ² (Δ_n - θ0)² / (2 V_n (V_n + τ²)) )``,

    which for equal arms of ``n`` customers with variance ``σ²`` (``V_n = 2σ²/n``) is their
    ``sqrt(2σ² / (2σ² + nτ²)) exp(n² τ² (Δ_n - θ0)² / (4σ² (2σ² + nτ²)))``. ``Λ_n`` is a martingale under
    ``θ0``, so by Ville's inequality ``P(∃n: Λ_n ≥ 1/α) ≤ α``: the always-valid p-value
    ``p_n = min(p_{n-1}, 1/Λ_n)`` (``p_0 = 1``) may be read at every look, and the confidence
    sequence ``{θ: Λ_n(θ) < 1/α}`` (:func:`msprt_boundary`) covers the effect at all looks at once
    with probability ``≥ 1 - α``.

    The guarantee is asymptotic (normal estimates, plug-in variances). It holds both when customers
    keep arriving (``V_n`` shrinks) and when a fixed set of customers accumulates reward (``V_n``
    grows): the standardised estimates then have the same correlation structure up to a time
    inversion, under which the test's boundary is invariant; persistent per-customer effects only
    make looks more correlated, which makes the test conservative.

    ``tau`` is the scale of effects the test is tuned to (the minimum detectable effect, say), in
    the units of the difference; it must be fixed before looking at the data. ``intersect`` takes
    the running intersection of the confidence sequence, valid (and tighter) when the estimand is
    the same at every look — customers arriving, not a cumulative total that grows. ``df`` gives
    Welch degrees of freedom for the naive per-look p-values (normal when None).
    """
    diff = np.asarray(diff, np.float64)
    se = np.asarray(se, np.float64)
    if diff.ndim != 1 or diff.shape != se.shape:
        raise ValueError(f"se: expected the shape of diff {diff.shape}, got {se.shape}")
    if not np.all(np.isfinite(diff)):
        raise ValueError("diff: contains NaN or infinite values")
    if not np.all(np.isfinite(se) & (se > 0)):
        raise ValueError("se: expected positive finite standard errors")
    if not (np.isfinite(tau) and tau > 0):
        raise ValueError(f"tau: expected a positive mixture scale, got {tau!r}")
    _check_level(alpha, "alpha")
    v = se**2
    log_lr = 0.5 * np.log(v / (v + tau**2)) + tau**2 * (diff - theta0) ** 2 / (2 * v * (v + tau**2))
    lr = np.exp(np.minimum(log_lr, 700.0))
    p = np.minimum.accumulate(np.minimum(1.0, np.exp(-log_lr)))
    half = msprt_boundary(se, tau, alpha)
    low, high = diff - half, diff + half
    if intersect:
        low, high = np.maximum.accumulate(low), np.minimum.accumulate(high)
    z = np.abs(diff - theta0) / se
    naive = 2 * (stats.norm.sf(z) if df is None else stats.t.sf(z, np.asarray(df, np.float64)))
    return Sequential(diff, se, lr, p, low, high, naive, float(alpha), float(tau), float(theta0))


def welch_df(var_t: np.ndarray, n_t: np.ndarray, var_c: np.ndarray, n_c: np.ndarray) -> np.ndarray:
    """Welch–Satterthwaite degrees of freedom from per-arm variances and counts."""
    a, b = np.asarray(var_t) / n_t, np.asarray(var_c) / n_c
    return (a + b) ** 2 / (a**2 / (np.asarray(n_t) - 1) + b**2 / (np.asarray(n_c) - 1))


def sequential_test(
    looks: Looks,
    treatment: str,
    control: str,
    *,
    tau: float,
    alpha: float = 0.05,
    theta0: float = 0.0,
    intersect: bool = False,
) -> Sequential:
    """:func:`msprt` on the treatment-minus-control difference at every look of ``looks``.

    Looks where an arm has fewer than two customers are not testable: the first look must have two.
    """
    i, j = looks.arm_index(treatment), looks.arm_index(control)
    nt, nc = looks.n[i].astype(np.float64), looks.n[j].astype(np.float64)
    if np.any(nt < 2) or np.any(nc < 2):
        raise ValueError("looks: every look needs at least two customers in each arm; start later")
    se = np.sqrt(looks.var[i] / nt + looks.var[j] / nc)
    df = welch_df(looks.var[i], nt, looks.var[j], nc)
    return msprt(looks.mean[i] - looks.mean[j], se, tau=tau, alpha=alpha, theta0=theta0, intersect=intersect, df=df)


# ====================================================================================== one call
@dataclass(frozen=True)
class Analysis:
    """Everything a report shows for one treatment arm against the control arm."""

    treatment: str
    control: str
    comparison: Comparison
    cuped: Cuped | None
    sequential: Sequential | None


def analyse(
    values: np.ndarray,
    arm: np.ndarray,
    treatment: str,
    control: str,
    *,
    covariate: np.ndarray | None = None,
    looks: Looks | None = None,
    tau: float | None = None,
    alpha: float = 0.05,
    level: float = 0.95,
    intersect: bool = False,
) -> Analysis:
    """Compare ``treatment`` with ``control`` from per-customer ``values`` and ``arm`` labels.

    ``covariate`` (per customer, same order) adds CUPED; ``looks`` with ``tau`` adds the mSPRT.
    """
    values = np.asarray(values, np.float64)
    arm = np.asarray(arm, dtype=object)
    if arm.shape != values.shape:
        raise ValueError(f"arm: expected shape {values.shape}, got {arm.shape}")
    t, c = arm == treatment, arm == control
    comparison = compare(values[t], values[c], level)
    cup = None
    if covariate is not None:
        covariate = np.asarray(covariate, np.float64)
        if covariate.shape != values.shape:
            raise ValueError(f"covariate: expected shape {values.shape}, got {covariate.shape}")
        cup = cuped(values[t], values[c], covariate[t], covariate[c], level)
    seq = None
    if looks is not None:
        if tau is None:
            raise ValueError("tau: the sequential test needs a mixture scale (e.g. the minimum detectable effect)")
        seq = sequential_test(looks, treatment, control, tau=tau, alpha=alpha, intersect=intersect)
    return Analysis(treatment, control, comparison, cup, seq)


# ====================================================================================== guardrails (non-inferiority)
Better = Literal["lower", "higher"]
_GUARDRAIL_FIELDS = ("name", "metric", "margin", "better", "relative")


@dataclass(frozen=True)
class Guardrail:
    """A metric the treatment must not make worse than the control by ``margin`` or more.

    ``metric`` names a per-customer value of the data (e.g. ``"opted_out"``, ``"churned"``, ``"sent"``:
    each customer's total over the experiment, so the arm's mean is a rate per customer). ``better``
    says which way is good. The *worsening* is ``mean_t - mean_c`` when lower is better (``mean_c -
    mean_t`` when higher is); with ``relative=True`` it is a fraction of the control's mean,
    ``±(mean_t / mean_c - 1)`` with a delta-method standard error, and ``margin`` is such a fraction
    (``1.0``: the treatment may double it). The guardrail holds when the data reject
    ``H0: worsening ≥ margin`` at the experiment's alpha (a non-inferiority test).
    """

    name: str
    metric: str
    margin: float
    better: Better = "lower"
    relative: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"guardrail.name: expected a non-empty string, got {self.name!r}")
        where = f"guardrail {self.name!r}"
        if not isinstance(self.metric, str) or not self.metric.strip():
            raise ValueError(f"{where}: metric: expected a non-empty metric name, got {self.metric!r}")
        if (
            isinstance(self.margin, bool)
            or not isinstance(self.margin, int | float | np.integer | np.floating)
            or not np.isfinite(self.margin)
            or self.margin <= 0
        ):
            raise ValueError(f"{where}: margin: expected a positive finite number, got {self.margin!r}")
        if self.better not in ("lower", "higher"):
            raise ValueError(f"{where}: better: expected 'lower' or 'higher', got {self.better!r}")
        if not isinstance(self.relative, bool | np.bool_):
            raise ValueError(f"{where}: relative: expected true or false, got {self.relative!r}")
        object.__setattr__(self, "margin", float(self.margin))
        object.__setattr__(self, "relative", bool(self.relative))

    def to_dict(self) -> dict[str, object]:
        """The five fields by name, as :meth:`from_dict` reads them back."""
        return {
            "name": self.name,
            "metric": self.metric,
            "margin": self.margin,
            "better": self.better,
            "relative": self.relative,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> Guardrail:
        """From a mapping with the fields' names (``name`` defaults to the metric); unknown keys are errors."""
        if not isinstance(d, Mapping):
            raise ValueError(f"guardrail: expected a mapping of {', '.join(_GUARDRAIL_FIELDS)}, got {d!r}")
        unknown = sorted(set(d) - set(_GUARDRAIL_FIELDS))
        if unknown:
            raise ValueError(f"guardrail: unknown field(s) {unknown}; valid: {', '.join(_GUARDRAIL_FIELDS)}")
        for key in ("metric", "margin"):
            if key not in d:
                raise ValueError(f"guardrail: {key}: required")
        return cls(**{"name": d.get("name", d["metric"]), **d})  # type: ignore[arg-type]

    @classmethod
    def parse(cls, text: str) -> Guardrail:
        """``"[name=]metric:margin[%][:higher]"``, e.g. ``"sends per customer=sent:100%"`` (relative),
        ``"opted_out:0.005"`` (absolute), ``"revenue:5%:higher"``; or the same as a JSON object."""
        import json

        text = text.strip()
        if text.startswith("{"):
            try:
                return cls.from_dict(json.loads(text))
            except json.JSONDecodeError as e:
                raise ValueError(f"guardrail: not valid JSON: {e}") from e
        name, _, spec = text.rpartition("=")
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not parts[0].strip():
            raise ValueError(f"guardrail: expected '[name=]metric:margin[%][:lower|higher]', got {text!r}")
        metric, margin = parts[0].strip(), parts[1].strip()
        relative = margin.endswith("%")
        try:
            value = float(margin.removesuffix("%")) / (100 if relative else 1)
        except ValueError:
            raise ValueError(f"guardrail {name or metric!r}: margin: expected a number, got {margin!r}") from None
        better = parts[2].strip() if len(parts) == 3 else "lower"
        return cls(name.strip() or metric, metric, value, better, relative)  # type: ignore[arg-type]


# Defaults for a messaging policy: a challenger may not raise the share of customers who opt out
# (of any channel) by half a percentage point, churn by one point, nor double the messages sent.
DEFAULT_GUARDRAILS: tuple[Guardrail, ...] = (
    Guardrail("opt-out rate", "opted_out", 0.005),
    Guardrail("churn rate", "churned", 0.01),
    Guardrail("sends per customer", "sent", 1.0, relative=True),
)


def check_guardrails(
    guardrails: Iterable[Guardrail | Mapping[str, object] | str], metrics: Iterable[str] | None = None
) -> tuple[Guardrail, ...]:
    """Guardrails from objects, mappings or :meth:`Guardrail.parse` strings; names unique; every metric
    among ``metrics`` when given. Errors name the guardrail and its field."""
    out: list[Guardrail] = []
    for i, g in enumerate(guardrails):
        if isinstance(g, str):
            g = Guardrail.parse(g)
        elif isinstance(g, Mapping):
            g = Guardrail.from_dict(g)
        elif not isinstance(g, Guardrail):
            raise ValueError(f"guardrails[{i}]: expected a Guardrail, a mapping or a string, got {type(g).__name__}")
        if any(g.name == o.name for o in out):
            raise ValueError(f"guardrails[{i}]: name: {g.name!r} is declared twice")
        out.append(g)
    if metrics is not None:
        known = sorted(metrics)
        for g in out:
            if g.metric not in known:
                raise ValueError(
                    f"guardrail {g.name!r}: metric: {g.metric!r} is not measured; valid: {', '.join(known)}"
                )
    return tuple(out)


def worsening(
    guardrail: Guardrail,
    mean_t: np.ndarray | float,
    var_mean_t: np.ndarray | float,
    mean_c: np.ndarray | float,
    var_mean_c: np.ndarray | float,
) -> tuple[np.ndarray, np.ndarray]:
    """The guardrail's worsening (treatment against control, in its margin's units) and standard error.

    Absolute: ``±(m_t - m_c)`` with ``sqrt(V_t + V_c)``; relative: ``±(m_t / m_c - 1)`` with the delta
    method of :func:`lift_delta` (NaN where the control's mean is 0). ``var_mean_*`` are the variances
    of the two means; the sign makes a worse treatment positive.
    """
    sign = 1.0 if guardrail.better == "lower" else -1.0
    mt, mc = np.asarray(mean_t, np.float64), np.asarray(mean_c, np.float64)
    vt, vc = np.asarray(var_mean_t, np.float64), np.asarray(var_mean_c, np.float64)
    if not guardrail.relative:
        return sign * (mt - mc), np.sqrt(vt + vc)
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = mc != 0
        lift = np.where(ok, mt / mc - 1, np.nan)
        se = np.where(ok, np.sqrt(vt / mc**2 + mt**2 * vc / mc**4), np.nan)
    return sign * lift, se


def _one_sided_log_lr(s: np.ndarray, v: np.ndarray, tau: float) -> np.ndarray:
    """log of the one-sided mixture likelihood ratio for ``s = estimate - theta0`` below ``theta0``.

    Mixing the Gaussian likelihood ratio of ``theta0 + u`` against ``theta0`` over ``u`` half-normal on
    ``u < 0`` (density ``2 φ(u / τ) / τ``) gives ``Λ⁻ = 2 sqrt(V / (V + τ²)) exp(τ² s² / (2 V (V + τ²)))
    Φ(-τ s / sqrt(V (V + τ²)))``: a non-negative martingale under ``theta0`` (a supermartingale above
    it), decreasing in ``s``.
    """
    return (
        np.log(2.0)
        + 0.5 * np.log(v / (v + tau**2))
        + tau**2 * s**2 / (2 * v * (v + tau**2))
        + stats.norm.logcdf(-tau * s / np.sqrt(v * (v + tau**2)))
    )


def _one_sided_threshold(v: float, tau: float, alpha: float) -> float:
    """The ``s* < 0`` where the one-sided mixture reaches ``1 / alpha``: reject when ``s ≤ s*``."""
    target = np.log(1 / alpha)
    sd = np.sqrt(v)

    def gap(z: float) -> float:
        return float(_one_sided_log_lr(np.array(z * sd), np.array(v), tau)) - target

    lo = -1.0
    while gap(lo) < 0:
        lo *= 2
    return float(optimize.brentq(gap, lo, 0.0, xtol=1e-10)) * sd


@dataclass(frozen=True)
class GuardrailTest:
    """A guardrail's non-inferiority test: ``H0: worsening ≥ margin`` against ``worsening < margin``.

    ``bound`` is the upper confidence bound of the worsening (one-sided, level ``1 - alpha``): the
    guardrail holds when ``bound < margin``, equivalently ``p_value ≤ alpha``. ``lower`` is the lower
    bound at the same level: above the margin, the data show the treatment worse than the margin
    allows (``status`` ``"breached"``); between them they cannot tell (``"inconclusive"``: more
    customers would). Always-valid tests (:func:`noninferiority_sequential`) also hold ``p_values`` and
    ``bounds`` at every look; their verdict is read at the last look, where the job stops.
    """

    guardrail: Guardrail
    n_treatment: int
    n_control: int
    mean_treatment: float
    mean_control: float
    worsening: float
    se: float
    bound: float
    p_value: float
    alpha: float
    always_valid: bool
    tau: float | None = None
    p_values: np.ndarray | None = None  # (K,) per look (always-valid tests)
    bounds: np.ndarray | None = None  # (K,)
    lower: float = float("nan")  # lower confidence bound of the worsening, same level as ``bound``

    @property
    def passed(self) -> bool:
        """Whether the guardrail holds: a finite p-value at most ``alpha`` (``bound < margin``)."""
        return bool(np.isfinite(self.p_value) and self.p_value <= self.alpha)

    @property
    def status(self) -> Literal["holds", "breached", "inconclusive"]:
        """``"holds"`` when :attr:`passed`; ``"breached"`` when ``lower`` passes the margin; else ``"inconclusive"``."""
        if self.passed:
            return "holds"
        return "breached" if self.lower > self.margin else "inconclusive"

    @property
    def margin(self) -> float:
        """The guardrail's margin (a fraction of the control's mean when it is relative)."""
        return self.guardrail.margin

    def power(self, worsening: float = 0.0) -> float:
        """Chance this test holds at this size for a true ``worsening`` (0: a harmless treatment), at the
        standard error it had (:func:`noninferiority_power`); NaN where it had none."""
        if not (np.isfinite(self.se) and self.se > 0):
            return float("nan")
        return noninferiority_power(
            self.se, self.margin, alpha=self.alpha, worsening=worsening, tau=self.tau, always_valid=self.always_valid
        )


def _ni_fixed(w: float, se: float, margin: float, alpha: float) -> tuple[float, float, float]:
    """(p-value, upper bound, lower bound) of the fixed-horizon one-sided tests."""
    if not (np.isfinite(w) and np.isfinite(se)):
        return float("nan"), float("nan"), float("nan")
    if se == 0:  # both arms constant: the difference is known
        return (0.0 if w < margin else 1.0), w, w
    z = stats.norm.isf(alpha)
    return float(stats.norm.cdf((w - margin) / se)), float(w + z * se), float(w - z * se)


def noninferiority(
    treatment: np.ndarray, control: np.ndarray, guardrail: Guardrail, alpha: float = 0.05
) -> GuardrailTest:
    """Fixed-horizon non-inferiority of per-customer values (normal test, valid at one planned look).

    ``p = Φ((w - margin) / se)``, ``bound = w + z_{1-α} se`` for the worsening ``w`` (:func:`worsening`).
    """
    _check_level(alpha, "alpha")
    yt, yc = _values("treatment", treatment), _values("control", control)
    mt, mc = float(yt.mean()), float(yc.mean())
    w, se = worsening(guardrail, mt, yt.var(ddof=1) / yt.size, mc, yc.var(ddof=1) / yc.size)
    p, bound, lower = _ni_fixed(float(w), float(se), guardrail.margin, alpha)
    return GuardrailTest(
        guardrail, yt.size, yc.size, mt, mc, float(w), float(se), bound, p, float(alpha), False, lower=lower
    )


def noninferiority_sequential(
    looks: Looks, treatment: str, control: str, guardrail: Guardrail, *, alpha: float = 0.05, tau: float | None = None
) -> GuardrailTest:
    """Always-valid non-inferiority over the looks of the guardrail's metric (one-sided mixture SPRT).

    At each look the worsening ``w`` (:func:`worsening`, variance ``V``) is tested against
    ``theta0 = margin`` with the one-sided mixture ``Λ⁻`` of :func:`_one_sided_log_lr` over
    worsenings below the margin (``tau`` defaults to the margin: the mixture is tuned to a treatment
    that does no harm at all). ``p = min(1, 1/Λ⁻)``; by Ville's inequality, reading it at any look,
    however chosen, keeps the chance of declaring a treatment that worsens by the margin or more
    non-inferior below ``alpha`` (with :func:`msprt`'s asymptotic caveats). Guardrail metrics here
    are cumulative totals whose harm grows with time, so the verdict is the last look's, not the
    earliest passing one. ``bound`` is where ``Λ⁻`` crosses ``1/α``: the always-valid upper bound;
    ``lower``, the mirror image (the same mixture over worsenings above), the always-valid lower one.
    """
    _check_level(alpha, "alpha")
    tau = guardrail.margin if tau is None else _check_positive("tau", tau)
    i, j = looks.arm_index(treatment), looks.arm_index(control)
    nt, nc = looks.n[i].astype(np.float64), looks.n[j].astype(np.float64)
    if np.any(nt < 2) or np.any(nc < 2):
        raise ValueError("looks: every look needs at least two customers in each arm; start later")
    w, se = worsening(guardrail, looks.mean[i], looks.var[i] / nt, looks.mean[j], looks.var[j] / nc)
    k = looks.n_looks
    p, bounds, lowers = np.full(k, np.nan), np.full(k, np.nan), np.full(k, np.nan)
    for t in range(k):
        if not (np.isfinite(w[t]) and np.isfinite(se[t])):
            continue
        if se[t] == 0:
            p[t], bounds[t], lowers[t] = _ni_fixed(float(w[t]), 0.0, guardrail.margin, alpha)
            continue
        v = float(se[t]) ** 2
        p[t] = min(1.0, float(np.exp(-_one_sided_log_lr(np.array(w[t] - guardrail.margin), np.array(v), tau))))
        threshold = _one_sided_threshold(v, tau, alpha)  # < 0; the mixture over harms above mirrors it
        bounds[t], lowers[t] = float(w[t]) - threshold, float(w[t]) + threshold
    return GuardrailTest(
        guardrail,
        int(nt[-1]),
        int(nc[-1]),
        float(looks.mean[i, -1]),
        float(looks.mean[j, -1]),
        float(w[-1]),
        float(se[-1]),
        float(bounds[-1]),
        float(p[-1]),
        float(alpha),
        True,
        float(tau),
        p,
        bounds,
        float(lowers[-1]),
    )


REQUIRE = ("better", "not_worse")  # what the primary metric must show for a promotion (decide)


@dataclass(frozen=True)
class Verdict:
    """Promote the treatment only when the primary metric shows what is required (by default: significantly
    better) and every guardrail holds."""

    promote: bool
    primary: Literal["better", "worse", "inconclusive"]
    failed: tuple[str, ...]  # names of the guardrails that did not hold
    reason: str


def decide(
    primary: Sequential | Comparison, guardrails: Sequence[GuardrailTest], alpha: float = 0.05, require: str = "better"
) -> Verdict:
    """The verdict on a treatment: the primary's always-valid test (Welch's without looks) and the guardrails.

    ``require``: ``"better"`` promotes only on a primary significantly better; ``"not_worse"`` on a
    primary not significantly worse (no harm shown), for an experiment too small to resolve the lift
    that other evidence (an off-policy estimate) predicts: the guardrails decide the rest."""
    if require not in REQUIRE:
        raise ValueError(f"require: expected one of {REQUIRE}, got {require!r}")
    if isinstance(primary, Sequential):
        significant, diff, p = primary.rejected, float(primary.diff[-1]), float(primary.p_value[-1])
        test = "always-valid p"
    else:
        significant, diff, p, test = primary.significant(alpha), primary.diff, primary.p_value, "Welch p"
    side: Literal["better", "worse", "inconclusive"] = (
        "inconclusive" if not significant else ("better" if diff > 0 else "worse")
    )
    failed = tuple(g.guardrail.name for g in guardrails if not g.passed)
    why = [f"primary metric {side} ({diff:+.4g} per customer, {test} = {p:.3g})"]
    if failed:
        why.append("guardrail(s) failed: " + "; ".join(_failure(g) for g in guardrails if not g.passed))
    elif guardrails:
        why.append("every guardrail holds (" + ", ".join(g.guardrail.name for g in guardrails) + ")")
    promote = (side == "better" or (require == "not_worse" and side == "inconclusive")) and not failed
    if require == "not_worse":
        why[0] += "; required: not significantly worse"
    return Verdict(promote, side, failed, ("promote: " if promote else "do not promote: ") + "; ".join(why))


def _failure(g: GuardrailTest) -> str:
    """Why a guardrail did not hold: a harm beyond the margin shown, or too little data to rule one out."""
    gd, f = g.guardrail, _fmt_margin
    if not np.isfinite(g.worsening):
        return f"{gd.name} cannot be measured (a relative margin on a control mean of {g.mean_control:g})"
    if g.status == "breached":
        return (
            f"{gd.name} breached: worsens by {f(g.worsening, gd)}, at least {f(g.lower, gd)} > margin {f(g.margin, gd)}"
        )
    return (
        f"{gd.name} not shown within its margin: worsens by {f(g.worsening, gd)}, up to {f(g.bound, gd)} ≥ "
        f"margin {f(g.margin, gd)} (more customers would tell)"
    )


def _fmt_margin(x: float, g: Guardrail) -> str:
    if not np.isfinite(x):
        return "n/a"
    return f"{100 * x:+.3g}%" if g.relative else f"{x:+.4g}"


# ====================================================================================== planning
def _z_alpha(alpha: float, alternative: Alternative) -> float:
    _check_level(alpha, "alpha")
    if alternative not in ("two-sided", "larger", "smaller"):
        raise ValueError(f"alternative: expected 'two-sided', 'larger' or 'smaller', got {alternative!r}")
    return float(stats.norm.isf(alpha / 2 if alternative == "two-sided" else alpha))


def _check_positive(name: str, x: float) -> float:
    if not (np.isfinite(x) and x > 0):
        raise ValueError(f"{name}: expected a positive finite number, got {x!r}")
    return float(x)


def power(
    n: float, mde: float, sd: float, alpha: float = 0.05, ratio: float = 1.0, alternative: Alternative = "two-sided"
) -> float:
    """Power of the normal (large-sample Welch) test of a difference in means.

    ``n`` customers in control, ``ratio * n`` in treatment, common per-customer ``sd``, true
    difference ``mde``. With ``se = sd sqrt(1/n + 1/(ratio n))`` and ``d = mde / se``, the power is
    ``Φ(d - z_{1-α/2}) + Φ(-d - z_{1-α/2})`` two-sided (as statsmodels' ``NormalIndPower``),
    ``Φ(d - z_{1-α})`` for ``larger`` and ``Φ(-d - z_{1-α})`` for ``smaller``.
    """
    n, sd, ratio = _check_positive("n", n), _check_positive("sd", sd), _check_positive("ratio", ratio)
    if not np.isfinite(mde):
        raise ValueError(f"mde: expected a finite number, got {mde!r}")
    z = _z_alpha(alpha, alternative)
    d = mde / (sd * np.sqrt(1 / n + 1 / (ratio * n)))
    if alternative == "larger":
        return float(stats.norm.cdf(d - z))
    if alternative == "smaller":
        return float(stats.norm.cdf(-d - z))
    return float(stats.norm.cdf(d - z) + stats.norm.cdf(-d - z))


@dataclass(frozen=True)
class SampleSize:
    """Customers needed per arm (rounded up) and the power they reach."""

    n_control: int
    n_treatment: int
    power: float

    @property
    def total(self) -> int:
        """Customers needed over both arms."""
        return self.n_control + self.n_treatment


def sample_size(
    mde: float,
    sd: float,
    alpha: float = 0.05,
    power: float = 0.8,
    ratio: float = 1.0,
    alternative: Alternative = "two-sided",
) -> SampleSize:
    """Smallest control size ``n`` (treatment ``ceil(ratio n)``) whose :func:`power` reaches ``power``.

    Starts from the closed form ``n = (z_{1-α/2} + z_{power})² sd² (1 + 1/ratio) / mde²`` (two-sided;
    ``z_{1-α}`` one-sided) and solves the exact power equation, which also counts the far tail.
    """
    target = _check_level(power, "power")
    sd, ratio = _check_positive("sd", sd), _check_positive("ratio", ratio)
    if not np.isfinite(mde) or mde == 0:
        raise ValueError(f"mde: expected a non-zero finite effect, got {mde!r}")
    if alternative == "larger" and mde < 0 or alternative == "smaller" and mde > 0:
        raise ValueError(f"mde: an effect of sign {np.sign(mde):+.0f} cannot be detected by a '{alternative}' test")
    z = _z_alpha(alpha, alternative)
    if target <= alpha / (2 if alternative == "two-sided" else 1):
        raise ValueError(f"power: expected more than the test's size, got {power!r}")
    closed = (z + stats.norm.ppf(target)) ** 2 * sd**2 * (1 + 1 / ratio) / mde**2

    def gap(n: float) -> float:
        return _power_at(n, mde, sd, alpha, ratio, alternative) - target

    lo = max(closed * 0.5, 1e-9)
    n = optimize.brentq(gap, lo, max(closed, lo) * 1.5 + 1) if gap(lo) < 0 else lo
    n_c = max(2, int(np.ceil(n - 1e-9)))
    while _power_at(n_c, mde, sd, alpha, ratio, alternative) < target:  # guard the rounding of ratio
        n_c += 1
    return SampleSize(n_c, max(2, int(np.ceil(ratio * n_c - 1e-9))), _power_at(n_c, mde, sd, alpha, ratio, alternative))


_power_at = power  # ``sample_size`` has a parameter named ``power``


def noninferiority_power(
    se: float,
    margin: float,
    *,
    alpha: float = 0.05,
    worsening: float = 0.0,
    tau: float | None = None,
    always_valid: bool = True,
) -> float:
    """Chance that a guardrail holds when the treatment's true worsening is ``worsening`` (0: no harm).

    ``se`` is the standard error the worsening's estimate will have at the last look. The test holds
    when the estimate falls below ``margin + s*``, where ``s* < 0`` is the always-valid threshold of
    :func:`noninferiority_sequential` (``-z_{1-α} se`` for the fixed-horizon test), so the power is
    ``Φ((margin + s* - worsening) / se)`` (normal approximation).
    """
    se, margin = _check_positive("se", se), _check_positive("margin", margin)
    _check_level(alpha, "alpha")
    if not np.isfinite(worsening):
        raise ValueError(f"worsening: expected a finite number, got {worsening!r}")
    if always_valid:
        tau = margin if tau is None else _check_positive("tau", tau)
        threshold = _one_sided_threshold(se**2, tau, alpha)
    else:
        threshold = -float(stats.norm.isf(alpha)) * se
    return float(stats.norm.cdf((margin + threshold - worsening) / se))


def noninferiority_sample_size(
    sd: float,
    margin: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    worsening: float = 0.0,
    tau: float | None = None,
    always_valid: bool = True,
) -> SampleSize:
    """Customers per arm (equal arms, per-customer ``sd`` in each) for an absolute guardrail to hold
    with ``power`` when the true worsening is ``worsening``: the smallest ``n`` whose
    :func:`noninferiority_power` at ``se = sd sqrt(2 / n)`` reaches it."""
    sd, margin = _check_positive("sd", sd), _check_positive("margin", margin)
    target = _check_level(power, "power")
    if not worsening < margin:
        raise ValueError(f"worsening: a treatment worse by the margin or more ({worsening!r}) should not pass")

    def at(n: float) -> float:
        return noninferiority_power(
            sd * np.sqrt(2 / n), margin, alpha=alpha, worsening=worsening, tau=tau, always_valid=always_valid
        )

    hi = 2.0
    while at(hi) < target:
        hi *= 2
    n = optimize.brentq(lambda x: at(x) - target, 1.0, hi) if at(1.0) < target else 1.0
    n_arm = max(2, int(np.ceil(n - 1e-9)))
    while at(n_arm) < target:
        n_arm += 1
    return SampleSize(n_arm, n_arm, at(n_arm))
