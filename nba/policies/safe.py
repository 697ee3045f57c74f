"""Safe policy improvement from a decision log: baseline bootstrapping (Π_b-SPIBB) for contextual bandits.

A policy learnt offline from a log knows little about the actions the log rarely took, and a model that
extrapolates there can come out worse than the policy that wrote the log. :class:`SPIBB` wraps any learner
and stays with the **baseline** (the logging policy, or an estimate of it) wherever the log's support is
thin, after Laroche, Trichelair and Tachet des Combes (2019), "Safe Policy Improvement with Baseline
Bootstrapping", ICML, in its contextual-bandit form:

* a context falls in a coarse **bucket** (by default its segment x lifecycle stage x open cart, read from the
  observation's one-hot features), and an action in a **group** (by default its channel x content, the
  send slots pooled);
* ``n(bucket, group)`` counts the log's decisions that took an action of that group in that bucket; an
  eligible action is *bootstrapped* where ``n < n_min``;
* the safe policy gives every bootstrapped action the baseline's probability, and moves the rest of the
  baseline's mass (its probability of the supported actions) to the learner's preferred supported action:
  ``pi(a|x) = pi_b(a|x)`` on bootstrapped ``a``, ``(1 - sum_{a' bootstrapped} pi_b(a'|x)) * [a = a*]``
  otherwise, with ``a*`` the supported eligible action the learner scores best (``improve="greedy"``: the
  learner's ``scores`` when it has them, else its probabilities), or that mass spread as the learner's own
  distribution over the supported actions (``improve="learner"``).

Rows sum to one and stay on the mask, and the propensity is exact, whatever the learner. With ``n_min = 0``
nothing is bootstrapped (the learner's greedy choice); with ``n_min`` above the log's size, the policy is
the baseline.

The baseline is a policy that needs no training (``business_as_usual``, say), optionally mixed as
:class:`nba.policies.Explore` mixes it (``baseline_epsilon`` uniform exploration, ``baseline_holdout`` no
contact): the logging policy itself when the log's writer is known. ``baseline="estimate"`` estimates an
unknown logger from the log: ``pi_b(a|x)`` proportional to ``n(bucket(x), a)`` on the row's mask (no contact
where the log never took an eligible action in that bucket).

Which baseline, for a log whose writer is known: the wrapper guarantees (in measure, see ``bench/safe.py``)
a value at least the logging policy's, and the default baseline is the logger's *base* policy (business as
usual), with no exploration or holdout. Its deliberate choices are what the log supports best (three
quarters of the logger's mass), and the safe policy keeps them where the log cannot back a change; the
logger's uniform exploration and no-contact holdout are what it paid to learn, not choices worth keeping:
copying them onto the bootstrapped actions (``baseline_epsilon``, ``baseline_holdout``: the exploring logger
itself as the baseline, Π_b-SPIBB to the letter) gave up 0.05 to 0.09 per decision of every bandit's gain on
the quickstart's log, and left send_time below the logger in 6 seeds of 10 (the default: none).

The defaults (bucket segment x stage x open cart, 32 buckets; group channel x content; ``n_min`` 40) did best
on the quickstart's 30,000-decision log of the choices tried: buckets of segment, segment x stage, and with
the open cart, the welcome window and the post-purchase window; groups by action, channel x content and
channel; ``n_min`` from 10 to 160. The open cart separates the contexts where business as usual sends a cart
reminder; pooling the send slots gives a message four times the support, trusting the learner's slot; by
channel alone, messages whose values differ widely share one count and the wrapper gained little.

Fitting is ``update`` on the log's batches, as for any learner: the learner learns from them, and the
wrapper counts their support (the contexts and the logged actions; rewards and propensities go to the
learner). Saved as the learner's state (prefixed ``learner.``), the counts, and JSON parameters that name
the baseline, ``n_min``, the bucket and the group.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import numpy as np

from nba.actions import ActionSpace
from nba.features import FeatureSpec
from nba.policies.base import Explore, check_update, checked, masked_argmax, require_structured

BUCKET = ("segment", "stage", "cart_active")  # one-hot families of nba.features.FeatureSpec (or binary feature names)
GROUPS = ("action", "channel_content", "channel")
IMPROVE = ("greedy", "learner")
CONTACTS = ("free", "keep", "channel")  # may the freed mass change how often, or where, a customer is contacted
ESTIMATE = "estimate"  # the baseline estimated from the log's counts
N_MIN = 40  # log decisions per (bucket, group) below which an action is bootstrapped


def action_groups(space: ActionSpace, group: str) -> np.ndarray:
    """(A,) group of every action: no contact is group 0; contacts by ``group``."""
    if group == "action":
        return np.arange(space.n_actions)
    if group == "channel_content":
        out = 1 + space.channel_of * space.n_contents + space.content_of
    elif group == "channel":
        out = 1 + space.channel_of
    else:
        raise ValueError(f"group: unknown action group {group!r}; valid: {list(GROUPS)}")
    out[0] = 0
    return out.astype(np.int64)


class Buckets:
    """Coarse context keys: the mixed-radix index of each ``families`` entry's value in an observation.

    An entry is a one-hot family of the feature layout (``"segment"`` reads ``segment=*``, the argmax) or
    a single feature read as binary (``"cart_active"``: above 0.5)."""

    def __init__(self, spec: FeatureSpec, families: tuple[str, ...]) -> None:
        if not families:
            raise ValueError("bucket: give at least one feature family or feature name")
        self.families = tuple(families)
        self.columns: list[list[int]] = []
        for fam in self.families:
            cols = [i for i, n in enumerate(spec.names) if n.startswith(f"{fam}=")]
            if not cols:
                if fam not in spec.names:
                    raise ValueError(f"bucket: {fam!r} is neither a one-hot family nor a feature of the layout")
                cols = [spec.index(fam)]
            self.columns.append(cols)
        self.sizes = [max(len(c), 2) for c in self.columns]
        self.n = int(np.prod(self.sizes))

    def of(self, X: np.ndarray) -> np.ndarray:
        """(N,) bucket of every row of ``X``."""
        out = np.zeros(X.shape[0], np.int64)
        for cols, size in zip(self.columns, self.sizes, strict=True):
            v = np.argmax(X[:, cols], axis=1) if len(cols) > 1 else (X[:, cols[0]] > 0.5).astype(np.int64)
            out = out * size + v
        return out


def _rebuild(
    space: ActionSpace, name: str, params: dict[str, Any], arrays: dict[str, np.ndarray], models: dict[str, str]
):
    from nba.policies import POLICIES

    return POLICIES[name].from_state(space, params, arrays, models)


class SPIBB:
    """A learner made safe: the baseline's probabilities where the log's support is thin (Π_b-SPIBB).

    Parameters
    ----------
    space, segments, dim
        The action space, the scenario's segments (the feature layout the buckets are read from) and the
        context size (checked against the layout).
    learner
        A learner's name (built with ``learner_params``) or the learner itself (a :class:`Policy`).
    baseline
        A policy that needs no training, by name (``business_as_usual``, ``no_contact``, ...), built with
        ``baseline_params`` and mixed with ``baseline_epsilon`` uniform exploration and a
        ``baseline_holdout`` no-contact share, as the logging policy was (:class:`nba.policies.Explore`);
        or ``"estimate"``: the log's own action frequencies per bucket.
    n_min
        Log decisions of an action's group in a context's bucket below which the action is bootstrapped.
    bucket
        Feature families (one-hot, e.g. ``"segment"``, ``"stage"``) or binary features keying the buckets.
    group
        ``"channel_content"`` (send slots pooled), ``"action"`` or ``"channel"``.
    improve
        ``"greedy"``: the freed mass goes to the supported action the learner scores best;
        ``"learner"``: it follows the learner's distribution over the supported actions.
    contacts
        ``"free"``: the freed mass goes wherever the learner prefers, no contact included; ``"keep"``:
        the baseline's no-contact probability stays where the log supports it, and only its contact
        mass moves to the learner's preferred supported *contact*: the policy contacts customers as
        often as the baseline, and improves the channel, content and send time of those contacts
        (for a brand whose experiments guard the number of messages sent); ``"channel"``: as ``"keep"``,
        and the baseline's supported mass on each channel moves to the learner's preferred supported
        contact *on that channel*: the channel plan is the baseline's (so are the sends and the
        channels' opt-outs, which follow whom a channel reaches), and the learner chooses content and
        send time (``improve="greedy"`` only).
    """

    name: ClassVar[str] = "spibb"

    def __init__(
        self,
        space: ActionSpace,
        segments: list[str] | tuple[str, ...],
        learner: Any = "lgbm_funnel",
        learner_params: dict[str, Any] | None = None,
        baseline: str = "business_as_usual",
        baseline_params: dict[str, Any] | None = None,
        baseline_epsilon: float = 0.0,
        baseline_holdout: float = 0.0,
        n_min: float = N_MIN,
        bucket: list[str] | tuple[str, ...] = BUCKET,
        group: str = "channel_content",
        improve: str = "greedy",
        contacts: str = "free",
        dim: int | None = None,
    ) -> None:
        from nba.policies import LEARNERS, POLICIES, create

        require_structured(space, self.name)
        self.space, self.segments = space, tuple(segments)
        self.spec = FeatureSpec(self.segments, space.channels)
        self.dim = self.spec.dim
        if dim is not None and dim != self.dim:
            raise ValueError(f"dim: the buckets read {self.dim} named features, got dim={dim}")
        if not n_min >= 0:
            raise ValueError(f"n_min: must be >= 0, got {n_min!r}")
        if improve not in IMPROVE:
            raise ValueError(f"improve: unknown improvement {improve!r}; valid: {list(IMPROVE)}")
        if contacts not in CONTACTS:
            raise ValueError(f"contacts: expected one of {list(CONTACTS)}, got {contacts!r}")
        if contacts == "channel" and improve != "greedy":
            raise ValueError("contacts: 'channel' moves each channel's mass to one message (improve='greedy' only)")
        self.n_min, self.improve, self.group, self.contacts = float(n_min), improve, group, contacts
        self.groups = action_groups(space, group)
        self._channels = [space.channel_of == c for c in range(space.n_channels)]  # contacts="channel"'s pools
        self.buckets = Buckets(self.spec, tuple(bucket))
        self.counts = np.zeros((self.buckets.n, space.n_actions), np.int64)

        if isinstance(learner, str):
            if learner == self.name or learner not in LEARNERS:
                raise ValueError(f"learner: unknown learner {learner!r}; valid: {sorted(set(LEARNERS) - {self.name})}")
            params = dict(learner_params or {})
            params.setdefault("dim", self.dim)
            learner = create(learner, space, self.segments, **params)
        elif learner_params:
            raise ValueError("learner_params: give them only with a learner's name")
        if getattr(learner, "dim", self.dim) != self.dim:
            raise ValueError(f"learner: reads {learner.dim} features, the layout has {self.dim}")
        self.learner = learner

        self.baseline_name = baseline
        self.baseline_params = dict(baseline_params or {})
        self.baseline_epsilon, self.baseline_holdout = float(baseline_epsilon), float(baseline_holdout)
        if baseline == ESTIMATE:
            if self.baseline_params or baseline_epsilon or baseline_holdout:
                raise ValueError("baseline_params: an estimated baseline takes no parameters, epsilon or holdout")
            self.baseline = None
        else:
            if baseline not in POLICIES or baseline in LEARNERS:
                raise ValueError(
                    f"baseline: {baseline!r} is not a policy that needs no training; valid: "
                    f"{sorted(set(POLICIES) - set(LEARNERS)) + [ESTIMATE]}"
                )
            base = create(baseline, space, self.segments, **self.baseline_params)
            eps, hold = self.baseline_epsilon, self.baseline_holdout
            self.baseline = Explore(base, eps, hold) if eps or hold else base  # Explore checks eps and hold
        self._scores = self._scorer(learner)

    # ------------------------------------------------------------------ deciding
    @staticmethod
    def _scorer(learner: Any):
        """The learner's ``scores(X, mask)`` (or ``scores(X)``), or None if it has none."""
        fn = getattr(learner, "scores", None)
        if fn is None:
            return None
        if "mask" in inspect.signature(fn).parameters:
            return fn
        return lambda X, mask: fn(X)

    def baseline_probabilities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(N, A) the baseline's distribution."""
        if self.baseline is not None:
            return self.baseline.probabilities(X, mask)
        n = np.where(mask, self.counts[self.buckets.of(X)], 0).astype(np.float64)
        total = n.sum(axis=1, keepdims=True)
        out = np.divide(n, total, out=np.zeros_like(n), where=total > 0)
        out[total[:, 0] == 0, 0] = 1.0
        return out

    def support(self, X: np.ndarray) -> np.ndarray:
        """(N, A) log decisions of each action's group in each row's bucket."""
        b = self.buckets.of(X)
        if self.group == "action":
            return self.counts[b]
        per_group = np.zeros((self.buckets.n, int(self.groups.max()) + 1), np.int64)
        np.add.at(per_group.T, self.groups, self.counts.T)
        return per_group[b][:, self.groups]

    def bootstrapped(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(N, A) eligible actions whose support is under ``n_min``: the baseline keeps them."""
        return mask & (self.support(X) < self.n_min)

    @checked
    def probabilities(self, X: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(N, A) the baseline's probability on bootstrapped actions, the rest of its mass on the learner's
        preferred supported action (``improve="learner"``: spread as the learner's distribution over them)."""
        X = np.asarray(X)
        pb = self.baseline_probabilities(X, mask)
        boot = self.bootstrapped(X, mask)
        free = mask & ~boot
        kept = np.where(boot, pb, 0.0)
        mass = 1.0 - kept.sum(axis=1)  # the baseline's probability of the supported actions
        if self.contacts != "free":  # the supported no-contact mass stays; only contacts move, among contacts
            kept[:, 0] += np.where(free[:, 0], pb[:, 0], 0.0)
            mass = 1.0 - kept.sum(axis=1)
            free = free.copy()
            free[:, 0] = False
        out = kept
        # the rows the learner is asked about: a supported action and baseline mass to move (with contacts kept,
        # a row the baseline never contacts has none): a function of the support and the baseline alone
        rows = np.flatnonzero(free.any(axis=1) & (mass > 0.0))
        if rows.size == 0:
            return out
        Xr, fr = X[rows], free[rows]
        if self.improve == "learner":
            q = np.where(fr, self.learner.probabilities(Xr, mask[rows]), 0.0)
            s = q.sum(axis=1, keepdims=True)
            spread = np.divide(q, s, out=np.zeros_like(q), where=s > 0)
            done = s[:, 0] > 0
            out[rows[done]] += mass[rows[done], None] * spread[done]
            rows, Xr, fr = rows[~done], Xr[~done], fr[~done]
            if rows.size == 0:
                return out
        pref = self._scores(Xr, mask[rows]) if self._scores is not None else self.learner.probabilities(Xr, mask[rows])
        pref = np.where(fr, np.nan_to_num(np.asarray(pref, np.float64), nan=-np.inf, posinf=np.inf), -np.inf)
        pref = np.where(fr & ~np.isfinite(pref), -1e300, pref)  # an unscored supported action still beats none
        # the pools of supported actions the mass moves within, each with the mass it moves: one pool, or with
        # the channel plan kept, each channel's supported mass to its best supported message
        if self.contacts == "channel":
            pbr = pb[rows]
            pools = [(pool, np.where(pool, pbr, 0.0).sum(axis=1)) for pool in (fr & on for on in self._channels)]
        else:
            pools = [(fr, mass[rows])]
        for pool, moved in pools:
            has = np.flatnonzero(moved > 0.0)
            if has.size:
                out[rows[has], masked_argmax(pref[has], pool[has])] += moved[has]
        return out

    # ------------------------------------------------------------------ learning
    @property
    def learns_from_events(self) -> bool:
        """The learner's: ``lgbm_funnel`` takes the funnel's events."""
        return getattr(self.learner, "learns_from_events", False)

    def update(self, X, actions, rewards, propensities=None, **extra) -> SPIBB:
        """The learner learns from the batch, then the batch's support is counted (a batch the learner
        refuses leaves no count)."""
        Xc, a, _ = check_update(self.space, self.dim, X, actions, rewards, propensities)
        self.learner.update(X, actions, rewards, propensities, **extra)
        np.add.at(self.counts, (self.buckets.of(Xc), a), 1)
        return self

    # ------------------------------------------------------------------ state
    def get_state(self):
        """(the wrapper's parameters with the learner's name and parameters; the support counts and the
        learner's arrays; the learner's models), the learner's keys prefixed ``learner.``."""
        lp, la, lm = self.learner.get_state()
        params = {
            "segments": list(self.segments),
            "learner": self.learner.name,
            "learner_params": lp,
            "baseline": self.baseline_name,
            "baseline_params": self.baseline_params,
            "baseline_epsilon": self.baseline_epsilon,
            "baseline_holdout": self.baseline_holdout,
            "n_min": self.n_min,
            "bucket": list(self.buckets.families),
            "group": self.group,
            "improve": self.improve,
            "contacts": self.contacts,
        }
        arrays = {"counts": self.counts, **{f"learner.{k}": v for k, v in la.items()}}
        return params, arrays, {f"learner.{k}": v for k, v in lm.items()}

    @classmethod
    def from_state(cls, space, params, arrays, models):
        """The wrapper :meth:`get_state` described: its learner rebuilt from its state, its support counts."""
        params = dict(params)
        name, lp = params.pop("learner"), params.pop("learner_params")
        learner = _rebuild(
            space,
            name,
            lp,
            {k[8:]: v for k, v in arrays.items() if k.startswith("learner.")},
            {k[8:]: v for k, v in models.items() if k.startswith("learner.")},
        )
        policy = cls(space, learner=learner, **params)
        counts = np.asarray(arrays["counts"], np.int64)
        if counts.shape != policy.counts.shape:
            raise ValueError(f"counts: expected shape {policy.counts.shape}, got {counts.shape}")
        policy.counts = counts.copy()
        return policy
